import DeltaStore
import Foundation
import TestSupport
import Testing

// `mvc edit --method alphaedit|encore` against an independent Float64 reference written here:
// P from a C₀ built with a known eigenbasis (a Householder reflection), the accumulator Σ KKᵀ
// from the test's own list of the edits present, Gauss-Jordan inverses. The committed update is
// read back as factors (`mvc export --delta`), so Float32 rounding of W does not enter.

private let down0 = "model.layers.0.mlp.down_proj.weight"  // nn.Linear [d_out 24, d_in 40]

private struct SequentialScenario {
  var s: Scenario
  var rng = SplitMix64(seed: 4321)
  var dir: URL { s.dir }
  let dIn = 40
  let dOut = 24
  /// C₀ = H·diag(σ)·H with H = I − 2hhᵀ/‖h‖²; 20 σ below 2e-2, so P = H·diag(σ < 2e-2)·H.
  var c0 = Matrix(rows: 40, cols: 40)
  var projector = Matrix(rows: 40, cols: 40)
  /// Keys (n×d_in) of every edit made, by tag.
  var keys: [String: Matrix] = [:]

  init(dir: URL) throws {
    s = Scenario(dir: dir, seed: 78)
    try s.writeModel(blocks: 2, hidden: 24, intermediate: 40, seed: 5)
    try s.initialize()
    let h = gaussians(dIn)
    let hh = h.reduce(0) { $0 + $1 * $1 }
    var householder = Matrix.identity(dIn)
    for i in 0..<dIn { for j in 0..<dIn { householder[i, j] -= 2 * h[i] * h[j] / hh } }
    var sigma = Matrix(rows: dIn, cols: dIn)
    var mask = Matrix(rows: dIn, cols: dIn)
    for i in 0..<dIn {
      sigma[i, i] = i % 2 == 0 ? 1e-3 * Double(1 + i % 7) : 0.5 + Double(i) / 10
      mask[i, i] = sigma[i, i] < 2e-2 ? 1 : 0
    }
    c0 = householder * sigma * householder
    projector = householder * mask * householder
    try NpyFile.write(c0.a, shape: [dIn, dIn], to: dir.appendingPathComponent("c0.npy").path)
  }

  mutating func gaussians(_ count: Int, scale: Double = 1) -> [Double] {
    rng.gaussianArray(count: count).map { Double($0) * scale }
  }

  func weight() throws -> Matrix {
    let t = try #require(try floatTensors(s.model)[down0])
    return Matrix(rows: t.shape[0], cols: t.shape[1], t.values.map(Double.init))
  }

  /// Runs one edit with fresh keys (n = 2) and checks ΔW against the reference with the
  /// accumulator of the edits `present` (tags); tags the new commit `tag`.
  mutating func edit(
    _ method: String, tag: String, present: [String], sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let n = 2
    let w0 = try weight()
    let k = Matrix(rows: n, cols: dIn, gaussians(n * dIn))
    let shift = Matrix(rows: dOut, cols: n, gaussians(dOut * n, scale: 0.5))
    let values = (w0 * k.transposed + shift).transposed
    try NpyFile.write(k.a, shape: [n, dIn], to: dir.appendingPathComponent("keys.npy").path)
    try NpyFile.write(values.a, shape: [n, dOut], to: dir.appendingPathComponent("values.npy").path)
    var args = [
      "edit", "--method", method, "--tensor", down0, "--keys", "keys.npy", "--values", "values.npy", "--cov",
      "c0.npy", "-m", "\(method) \(tag)",
    ]
    if method == "encore" { args += ["--lambda", "2", "--norm-lambda", "5"] }
    let result = runMVC(args, in: dir)
    expectSuccess(result, "edit \(tag)", sourceLocation: sourceLocation)
    try #require(result.status == 0, sourceLocation: sourceLocation)
    expectSuccess(runMVC(["tag", tag], in: dir), "tag \(tag)", sourceLocation: sourceLocation)
    keys[tag] = k

    var sigma = Matrix(rows: dIn, cols: dIn)
    for t in present { sigma = sigma + (try #require(keys[t])).transposed * (try #require(keys[t])) }
    let kk = k.transposed  // d_in × n
    let r = values.transposed - w0 * kk  // d_out × n
    let reference: Matrix
    if method == "alphaedit" {
      var ridge = Matrix.identity(dIn)
      ridge = 10 * ridge
      let a = projector * (kk * kk.transposed + sigma) + ridge
      reference = (a.inverse * projector * kk * r.transposed).transposed
    } else {
      var alpha = Matrix.identity(dIn)
      alpha = 5 * alpha
      let a = 2 * c0 + alpha + sigma + kk * kk.transposed
      reference = r * (a.inverse * kk).transposed
    }
    let delta = try committedDelta("\(tag)~1..\(tag)")
    let error = (delta - reference).frobenius / reference.frobenius
    print("sequential: \(method) \(tag) after \(present) relative error \(error)")
    #expect(error <= 1e-6, "\(method) \(tag): ‖ΔW − ΔW_ref‖/‖ΔW_ref‖ = \(error)", sourceLocation: sourceLocation)
    try expectAccumulator(at: "\(tag)~1", equals: present, sourceLocation: sourceLocation)
  }

  /// ΔW of a range from its exported factors, in Float64.
  func committedDelta(_ range: String) throws -> Matrix {
    let file = dir.appendingPathComponent("delta.safetensors")
    try? FileManager.default.removeItem(at: file)
    let result = runMVC(["export", "--delta", file.path, range], in: dir)
    expectSuccess(result, "export \(range)")
    let tensors = try floatTensors(file)
    let u = try #require(tensors[down0 + ".delta_u"])
    let v = try #require(tensors[down0 + ".delta_v"])
    let rank = u.shape[1]
    return Matrix(rows: dOut, cols: rank, u.values.map(Double.init))
      * Matrix(rows: dIn, cols: rank, v.values.map(Double.init)).transposed
  }

  /// `mvc accumulator --json -o` at `revision` lists exactly the edits `tags` and holds their Σ KKᵀ.
  func expectAccumulator(
    at revision: String, equals tags: [String], sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let file = dir.appendingPathComponent("acc.npy")
    let result = runMVC(["accumulator", down0, revision, "-o", file.path, "--json"], in: dir)
    expectSuccess(result, "accumulator \(revision)", sourceLocation: sourceLocation)
    let json = try #require(
      try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
      sourceLocation: sourceLocation)
    #expect(json["schema"] as? String == "mvc.accumulator/1", sourceLocation: sourceLocation)
    let edits = try #require(json["edits"] as? [[String: Any]], sourceLocation: sourceLocation)
    var expectedIDs: [String] = []
    for tag in tags {
      let parsed = runGit(["--git-dir=.mvc", "rev-parse", tag + "^{commit}"], in: dir)
      expectedIDs.append(parsed.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
    }
    #expect(
      Set(edits.compactMap { $0["commit"] as? String }) == Set(expectedIDs),
      "accumulator at \(revision): \(edits), expected \(tags)", sourceLocation: sourceLocation)
    #expect(json["key_count"] as? Int == 2 * tags.count, sourceLocation: sourceLocation)
    guard !tags.isEmpty else { return }
    var sigma = Matrix(rows: dIn, cols: dIn)
    for t in tags { sigma = sigma + (try #require(keys[t])).transposed * (try #require(keys[t])) }
    let stored = try NpyFile.read(from: file.path)
    let error = (Matrix(rows: dIn, cols: dIn, stored.values) - sigma).frobenius / sigma.frobenius
    #expect(error < 1e-12, "accumulator at \(revision): relative error \(error)", sourceLocation: sourceLocation)
  }
}

@Suite("sequential editors: AlphaEdit, ENCORE and their accumulators", .serialized)
struct SequentialEditTests {
  @Test func accumulatorsFollowTheHistory() throws {
    try withTemporaryDirectory { dir in
      var q = try SequentialScenario(dir: dir)
      // Five sequential edits, alternating the two methods: each sees the keys of all before it.
      let methods = ["alphaedit", "encore", "alphaedit", "encore", "alphaedit"]
      for (i, method) in methods.enumerated() {
        try q.edit(method, tag: "e\(i + 1)", present: (0..<i).map { "e\($0 + 1)" })
      }
      // The commit records P's provenance (edit.json's details; the covariance blob is in edit-data/).
      let record = runGit(["--git-dir=.mvc", "show", "e1:edit.json"], in: dir)
      let details = try #require(
        (try JSONSerialization.jsonObject(with: Data(record.stdout.utf8)) as? [String: Any])?["details"]
          as? [String: String])
      #expect(details["nullspace_threshold"] == "0.02" && details["projector_rank"] == "20")
      #expect(details["l2"] == "10.0" && details["accumulator_edits"] == "0")
      let covarianceBlob = runGit(["--git-dir=.mvc", "rev-parse", "e1:edit-data/covariance.npy.zst"], in: dir)
      #expect(details["covariance_blob"] == covarianceBlob.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
      let fifth = runGit(["--git-dir=.mvc", "show", "e5:edit.json"], in: dir).stdout
      #expect(fifth.contains("\"accumulator_edits\":\"4\"") && fifth.contains("\"accumulator_keys\":\"8\""))
      // P was computed once: every AlphaEdit edit after the first found it in the cache.
      let cached = try FileManager.default.contentsOfDirectory(
        atPath: dir.appendingPathComponent(".mvc/mvc-cache").path)
      #expect(cached.filter { $0.hasPrefix("projector-") }.count == 1)

      // A checkout of edit 2, then a new edit: the accumulator is edits 1–2 only.
      expectSuccess(runMVC(["checkout", "e2"], in: dir), "checkout e2")
      try q.edit("alphaedit", tag: "f1", present: ["e1", "e2"])
      expectSuccess(runMVC(["switch", "-c", "side"], in: dir), "switch -c side")

      // A revert removes its edit's keys.
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      expectSuccess(runMVC(["revert", "e3"], in: dir), "revert e3")
      try q.expectAccumulator(at: "HEAD", equals: ["e1", "e2", "e4", "e5"])
      try q.edit("encore", tag: "e6", present: ["e1", "e2", "e4", "e5"])

      // A merge takes both sides' keys.
      expectSuccess(runMVC(["merge", "side", "--strategy", "sum", "-m", "merge side"], in: dir), "merge")
      try q.edit("alphaedit", tag: "e7", present: ["e1", "e2", "e4", "e5", "e6", "f1"])
      try q.expectAccumulator(at: "side", equals: ["e1", "e2", "f1"])

      // A commit that changed the tensor without keys makes the sum unknown: refused by name.
      try q.s.edit(rank: 1, tensor: down0)
      let plain = runMVC(["commit", "-m", "outside editor"], in: dir)
      expectSuccess(plain, "commit")
      let before = treeHash(of: dir)
      let refused = runMVC(
        [
          "edit", "--method", "encore", "--tensor", down0, "--keys", "keys.npy", "--values", "values.npy", "--cov",
          "c0.npy", "-m", "refused",
        ], in: dir)
      expectFatal(refused, naming: [down0, "outside editor", "without recording keys"])
      #expect(refused.stderr.contains("hint: "))
      #expect(treeHash(of: dir) == before)
      // Other tensors are unaffected: their accumulator is empty.
      let other = runMVC(["accumulator", "model.layers.1.mlp.down_proj.weight", "--json"], in: dir)
      expectSuccess(other, "accumulator of another tensor")
      #expect(other.stdout.contains("\"key_count\":0") || other.stdout.contains("\"key_count\" : 0"))
    }
  }
}
