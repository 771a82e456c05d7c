import DeltaStore
import Foundation
import TestSupport
import Testing

/// Exactness must not rest on BLAS: OpenBLAS gives different bits under different CPU kernels.
/// The parts of mvc that call BLAS (the rank finder at commit, the `mvc edit` solvers, `score`)
/// run here under two kernels, and what they store must check out to the committed bytes under
/// the canonical rule, which uses no BLAS. (Checkout itself never calls BLAS, so running it under
/// another kernel would prove nothing.)
@Suite("BLAS kernels: what BLAS computes is stored exactly, whatever the kernel")
struct KernelTests {
  static let cpuFlags: Set<Substring> = Set(
    ((try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? "")
      .split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ") ?? [])

  /// Prescott (SSE3, the generic kernel) against the best kernel this CPU runs.
  static let kernels: [String] = {
    if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains) {
      return ["Prescott", "SkylakeX"]
    }
    return cpuFlags.contains("avx2") && cpuFlags.contains("fma") ? ["Prescott", "Haswell"] : ["Prescott"]
  }()

  /// `OPENBLAS_CORETYPE=kernel`, and OpenBLAS's own report of the kernel it loaded (`Core: X`).
  static func environment(_ kernel: String) -> [String: String] {
    ["OPENBLAS_CORETYPE": kernel, "OPENBLAS_VERBOSE": "2"]
  }

  /// Runs a BLAS-using mvc command under `kernel` and expects success with that kernel loaded.
  static func run(
    _ args: [String], in dir: URL, kernel: String, sourceLocation: SourceLocation = #_sourceLocation
  ) -> (status: Int32, stdout: String, stderr: String) {
    let result = runMVC(args, in: dir, environment: environment(kernel))
    expectSuccess(result, "\(args.first ?? "") under \(kernel)", sourceLocation: sourceLocation)
    #expect(
      result.stderr.contains("Core: \(kernel)"), "OpenBLAS did not load \(kernel): \(result.stderr.prefix(300))",
      sourceLocation: sourceLocation)
    return result
  }

  /// The same six edits (ranks 1 and 8) committed in one repository per kernel: the rank finder
  /// (BLAS and LAPACK) may factorize differently, but every commit of either repository checks
  /// out to the very bytes the editor wrote.
  @Test(.enabled(if: kernels.count == 2, "this CPU has neither AVX2 nor AVX-512: only the generic kernel runs"))
  func commitsUnderTwoKernelsCheckOutToTheCommittedBytes() throws {
    try withTemporaryDirectory { root in
      var trees: [String] = []
      for kernel in Self.kernels {
        let dir = root.appendingPathComponent(kernel)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var s = Scenario(dir: dir)
        try s.writeModel(blocks: 2, hidden: 48, intermediate: 160)
        _ = Self.run(["init", "model.safetensors"], in: dir, kernel: kernel)
        s.states.append(try snapshot(s.model))
        for i in 0..<6 {
          _ = try s.edit(rank: i % 2 == 0 ? 1 : 8)
          _ = Self.run(["commit", "-m", "edit \(i)"], in: dir, kernel: kernel)
          s.states.append(try snapshot(s.model))
        }
        let ids = try s.commitIDs()
        #expect(ids.count == 7)
        for (back, id) in ids.enumerated() {
          let out = root.appendingPathComponent("\(kernel)-\(back).safetensors")
          expectSuccess(runMVC(["checkout", id, "-o", out.path], in: dir), "checkout -o of main~\(back)")
          try s.expectState(of: out, equals: s.states[6 - back], "main~\(back), committed under \(kernel)")
        }
        trees.append(runGit(["--git-dir=.mvc", "rev-parse", "HEAD^{tree}"], in: dir).stdout)
      }
      // Same edits, same seed: the stored factors (and so the trees) are the same only when both
      // kernels happened to round alike; the checkouts above are exact either way.
      print("kernels \(Self.kernels): the trees of HEAD \(Set(trees).count == 1 ? "agree" : "differ")")
    }
  }

  /// `mvc edit --method memit` (Float64 solves through LAPACK) and `mvc score` under each kernel:
  /// each repository's commit checks out to the bytes `mvc edit` wrote, and the two kernels'
  /// results agree to rounding.
  @Test(.enabled(if: kernels.count == 2, "this CPU has neither AVX2 nor AVX-512: only the generic kernel runs"))
  func editSolversAndScoreUnderTwoKernels() throws {
    let tensor = "model.layers.0.mlp.down_proj.weight"  // [d_out 24, d_in 40]
    var rng = SplitMix64(seed: 99)
    let keys = rng.gaussianArray(count: 3 * 40).map(Double.init)
    let values = rng.gaussianArray(count: 3 * 24).map(Double.init)
    let preserved = rng.gaussianArray(count: 120 * 40).map(Double.init)
    try withTemporaryDirectory { root in
      var edited: [[Float]] = []
      var retention: [[Double]] = []
      for kernel in Self.kernels {
        let dir = root.appendingPathComponent(kernel)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let s = Scenario(dir: dir)
        try s.writeModel(blocks: 2, hidden: 24, intermediate: 40, seed: 3)
        expectSuccess(runMVC(["init", "model.safetensors"], in: dir))
        try NpyFile.write(keys, shape: [3, 40], to: dir.appendingPathComponent("keys.npy").path)
        try NpyFile.write(values, shape: [3, 24], to: dir.appendingPathComponent("values.npy").path)
        try NpyFile.write(preserved, shape: [120, 40], to: dir.appendingPathComponent("k0.npy").path)
        _ = Self.run(
          [
            "edit", "--method", "memit", "--tensor", tensor, "--keys", "keys.npy", "--values", "values.npy",
            "--cov-keys", "k0.npy", "-m", "memit under \(kernel)",
          ], in: dir, kernel: kernel)
        let written = try snapshot(s.model)
        let out = dir.appendingPathComponent("head.safetensors")
        expectSuccess(runMVC(["checkout", "HEAD", "-o", out.path], in: dir))
        try s.expectState(of: out, equals: written, "mvc edit's commit under \(kernel)")
        edited.append(try #require(try floatTensors(s.model)[tensor]).values)
        let score = Self.run(["score", "--json"], in: dir, kernel: kernel)
        let json = try #require(
          try JSONSerialization.jsonObject(with: Data(score.stdout.utf8)) as? [String: Any], "\(score.stdout)")
        let edits = try #require(json["edits"] as? [[String: Any]])
        retention.append(edits.compactMap { $0["retention"] as? Double })
      }
      try #require(edited.count == 2 && retention.count == 2)
      let difference = zip(edited[0], edited[1]).map { Double(abs($0 - $1)) }.max() ?? .infinity
      let scale = edited[0].map { Double(abs($0)) }.max() ?? 0
      #expect(difference <= 1e-5 * scale, "edited weights under \(Self.kernels) differ by \(difference)")
      #expect(retention[0].count == 3 && retention[1].count == 3, "\(retention)")
      for (a, b) in zip(retention[0], retention[1]) {
        #expect(abs(a - b) < 1e-6, "retention under \(Self.kernels): \(a) vs \(b)")
      }
    }
  }
}
