import DeltaStore
import Foundation
import TestSupport
import Testing

/// Long chains of factor-only commits (`commit-factors`: factors, no residual) replay a bounded
/// number of states at any depth (a keyframe every `maxReplayStates` = 32 states at most, residual
/// while it spans ≤ 128 units of rank, else or with no start within reach standalone), and the derived-matrix cache
/// (`.mvc/mvc-cache`) stays under `mvc.derivedCacheBytes` and is trimmed by `mvc gc`.
@Suite("long histories and local caches")
struct LongHistoryTests {
  /// 512×512: big enough that a rank-1 commit's objects (~4.5 KB) would need ~50 states to pay
  /// for a residual keyframe in bytes, so only the count rule makes one within 33 commits.
  static let tensor = "model.layers.0.mlp.up_proj.weight"

  /// Commits `rank`-`rank` factors of `tensor` with `commit-factors`; records the working state.
  static func commitFactors(_ s: inout Scenario, rank: Int, rows: Int, cols: Int, _ message: String) throws {
    let file = s.dir.appendingPathComponent("factors.safetensors")
    try writeSafetensors(
      [
        FixtureTensor(
          name: "\(tensor).u", shape: [rows, rank], floats: s.rng.gaussianArray(count: rows * rank, scale: 0.02)),
        FixtureTensor(
          name: "\(tensor).v", shape: [cols, rank], floats: s.rng.gaussianArray(count: cols * rank, scale: 0.02)),
      ], to: file)
    let result = runMVC(["commit-factors", "factors.safetensors", "-q", "-m", message], in: s.dir)
    expectSuccess(result, "commit-factors '\(message)'")
    try #require(result.status == 0)
    s.states.append(try snapshot(s.model))
  }

  /// The states each tensor replayed one by one after its start, from `MVC_TRACE_PERFORMANCE`.
  static func replayedStates(_ trace: URL) throws -> [String: Int] {
    let text = (try? String(contentsOf: trace, encoding: .utf8)) ?? ""
    var out: [String: Int] = [:]
    for line in text.split(separator: "\n") {
      if let m = line.firstMatch(of: /replay of '([^']+)': ([0-9]+) states after its start/) {
        out[String(m.1), default: 0] = max(out[String(m.1)] ?? 0, Int(m.2) ?? 0)
      }
    }
    return out
  }

  @Test func factorOnlyChainsReplayABoundedNumberOfStatesAtAnyDepth() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 31)
      try s.writeModel(blocks: 1, hidden: 512, intermediate: 512)
      try s.initialize()
      let shape = try #require(readSafetensorsFixture(s.model).tensors.first { $0.name == Self.tensor }?.shape)
      // 33 rank-1 commits: their objects would pay for a keyframe only after ~50; the count rule
      // makes a residual one at the 32nd.
      for i in 1...33 { try Self.commitFactors(&s, rank: 1, rows: shape[0], cols: shape[1], "edit \(i)") }
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).map(\.kind) == [2], "one residual keyframe")
      var ids = try s.commitIDs()  // newest first
      let trace = dir.appendingPathComponent("trace.txt")
      func checkout(back: Int, bound: Int?) throws {
        try? FileManager.default.removeItem(at: trace)
        let out = dir.appendingPathComponent("out.safetensors")
        expectSuccess(
          runMVC(["checkout", ids[back], "-o", out.path], in: dir, environment: ["MVC_TRACE_PERFORMANCE": trace.path]),
          "checkout -o HEAD~\(back)")
        try s.expectState(of: out, equals: s.states[s.states.count - 1 - back], "HEAD~\(back)")
        try FileManager.default.removeItem(at: out)
        guard let bound else { return }
        let steps = try #require(try Self.replayedStates(trace)[Self.tensor], "no replay traced at HEAD~\(back)")
        #expect(steps <= bound, "HEAD~\(back) replayed \(steps) states of '\(Self.tensor)'")
      }
      // From the keyframe (edit 32: none), from the base (edits 1–31: at most 31).
      for back in [1, 2, 12, 25, 32] { try checkout(back: back, bound: back == 1 ? 0 : 31) }
      // No keyframe within 32 states (a clone, a deleted cache): the next commit makes a standalone one.
      try FileManager.default.removeItem(at: s.repository.appendingPathComponent("mvc-snapshots"))
      try Self.commitFactors(&s, rank: 1, rows: shape[0], cols: shape[1], "edit 34")
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).map(\.kind) == [1], "one standalone keyframe")
      ids = try s.commitIDs()
      try checkout(back: 0, bound: nil)  // the working model's own bytes
      try checkout(back: 1, bound: nil)  // edit 33: 33 states from the base now
    }
  }

  /// Keys of one tensor recorded by `commit-factors --keys`, then an accumulator at every commit:
  /// the folder never holds more than its cap, gc trims it to a lower one, 0 empties it, and
  /// every accumulator read from the cache or recomputed is the same matrix.
  @Test func derivedMatrixCacheStaysUnderItsCap() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 12)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let name = "model.layers.0.mlp.down_proj.weight"
      let shape = try #require(readSafetensorsFixture(s.model).tensors.first { $0.name == name }?.shape)
      let dIn = shape[1]
      let fileBytes = 32 + dIn * dIn * 8  // one accumulator file
      let cap = 2 * fileBytes + 100
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "\(cap)"], in: dir), "config")
      for i in 1...5 {
        try writeSafetensors(
          [
            FixtureTensor(
              name: "\(name).u", shape: [shape[0], 1], floats: s.rng.gaussianArray(count: shape[0], scale: 0.02)),
            FixtureTensor(name: "\(name).v", shape: [dIn, 1], floats: s.rng.gaussianArray(count: dIn, scale: 0.02)),
          ], to: dir.appendingPathComponent("f.safetensors"))
        try NpyFile.write(
          s.rng.gaussianArray(count: 2 * dIn, scale: 1).map(Double.init), shape: [2, dIn],
          to: dir.appendingPathComponent("keys.npy").path)
        expectSuccess(
          runMVC(["commit-factors", "f.safetensors", "--keys", "keys.npy", "-q", "-m", "keys \(i)"], in: dir),
          "commit-factors --keys \(i)")
      }
      let cacheDir = s.repository.appendingPathComponent("mvc-cache")
      var first: [Int: Data] = [:]
      for back in 0..<5 {
        let out = dir.appendingPathComponent("acc.npy")
        expectSuccess(
          runMVC(["accumulator", name, "HEAD~\(back)", "-o", out.path], in: dir), "accumulator HEAD~\(back)")
        first[back] = try Data(contentsOf: out)
        let held = SnapshotCacheTests.fileBytes(cacheDir)
        #expect(held > 0 && held <= cap, "mvc-cache holds \(held) B after accumulator HEAD~\(back), cap \(cap) B")
      }
      // The oldest were trimmed; recomputed (and the newest read back), each is the same matrix.
      for back in [4, 0] {
        let out = dir.appendingPathComponent("acc.npy")
        expectSuccess(runMVC(["accumulator", name, "HEAD~\(back)", "-o", out.path], in: dir), "again HEAD~\(back)")
        #expect(try Data(contentsOf: out) == first[back], "accumulator HEAD~\(back) changed")
      }
      // A stray temporary file and a lower cap: gc trims to it.
      try Data(repeating: 1, count: 10).write(to: cacheDir.appendingPathComponent("accumulator-x.bin.tmp-1"))
      let lower = fileBytes + 10
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "\(lower)"], in: dir), "config")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      let trimmed = SnapshotCacheTests.fileBytes(cacheDir)
      #expect(trimmed > 0 && trimmed <= lower, "after gc mvc-cache holds \(trimmed) B, cap \(lower) B")
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "0"], in: dir), "config")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      #expect(SnapshotCacheTests.fileBytes(cacheDir) == 0, "cap 0 kept files")
    }
  }
}
