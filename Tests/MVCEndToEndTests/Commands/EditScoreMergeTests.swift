import DeltaStore
import Foundation
import TestSupport
import Testing

// `mvc edit` (ROME/EMMET/MEMIT) against an independent Float64 reference computed here with
// Gauss-Jordan inverses, `mvc score`, `mvc probe add`, `mvc merge --strategy sum|resolve`.

private let down0 = "model.layers.0.mlp.down_proj.weight"  // nn.Linear [d_out 24, d_in 40]
private let down1 = "model.layers.1.mlp.down_proj.weight"
/// [40, 24]: keys of length 40 make it a Conv1D weight stored [d_in, d_out].
private let up0 = "model.layers.0.mlp.up_proj.weight"

private struct EditData {
  var keys: Matrix  // n × d_in (rows are keys)
  var values: Matrix  // n × d_out
}

private struct KnowledgeScenario {
  var s: Scenario
  var rng: SplitMix64
  var dir: URL { s.dir }
  let dIn = 40
  let dOut = 24
  let m = 160

  init(dir: URL) throws {
    s = Scenario(dir: dir, seed: 77)
    rng = SplitMix64(seed: 1234)
    try s.writeModel(blocks: 2, hidden: 24, intermediate: 40, seed: 3)
    try s.initialize()
  }

  func write(_ name: String, _ values: [Double], _ shape: [Int]) throws {
    try NpyFile.write(values, shape: shape, to: dir.appendingPathComponent(name).path)
  }

  mutating func gaussians(_ count: Int, scale: Double = 1) -> [Double] {
    rng.gaussianArray(count: count).map { Double($0) * scale }
  }

  /// The weight W (d_out × d_in) of `tensor` in the working model, undoing Conv1D storage.
  func weight(_ tensor: String, transposed: Bool = false) throws -> Matrix {
    let t = try #require(try floatTensors(s.model)[tensor])
    let stored = Matrix(rows: t.shape[0], cols: t.shape[1], t.values.map(Double.init))
    return transposed ? stored.transposed : stored
  }

  /// n keys and values v = W₀k + a shift of entries N(0, 0.5²), written as keys.npy, values.npy.
  mutating func makeEdit(_ tensor: String, n: Int, transposed: Bool = false) throws -> EditData {
    let w0 = try weight(tensor, transposed: transposed)
    let keys = Matrix(rows: n, cols: dIn, gaussians(n * dIn))
    let shift = Matrix(rows: dOut, cols: n, gaussians(dOut * n, scale: 0.5))
    let values = (w0 * keys.transposed + shift).transposed
    try write("keys.npy", keys.a, [n, dIn])
    try write("values.npy", values.a, [n, dOut])
    return EditData(keys: keys, values: values)
  }
}

/// ‖a − b‖_F / ‖b‖_F.
private func relative(_ a: Matrix, _ b: Matrix) -> Double {
  (a - b).frobenius / max(b.frobenius, .leastNormalMagnitude)
}

@Suite("edit, score, merge: closed-form knowledge edits", .serialized)
struct EditScoreMergeTests {
  @Test func editsMatchAFloat64ReferenceAndScore() throws {
    try withTemporaryDirectory { dir in
      var k = try KnowledgeScenario(dir: dir)
      let k0 = Matrix(rows: k.m, cols: k.dIn, k.gaussians(k.m * k.dIn))
      try k.write("k0.npy", k0.a, [k.m, k.dIn])
      let c0 = (1 / Double(k.m)) * (k0.transposed * k0)
      try k.write("c0.npy", c0.a, [k.dIn, k.dIn])

      /// Runs `mvc edit`, checks it committed, and returns (ΔW committed, W after) in W orientation.
      func edit(_ args: [String], _ tensor: String, transposed: Bool = false) throws -> (
        Matrix, Matrix
      ) {
        let w0 = try k.weight(tensor, transposed: transposed)
        let result = runMVC(
          ["edit", "--tensor", tensor, "--keys", "keys.npy", "--values", "values.npy"] + args,
          in: dir)
        expectSuccess(result, "edit \(args)")
        try #require(result.status == 0)
        k.s.states.append(try snapshot(k.s.model))
        k.s.expectClean("edit \(args)")
        let w = try k.weight(tensor, transposed: transposed)
        return (w - w0, w)
      }

      // ROME, n = 1, C₀ from --cov-keys: ΔW = (v − W₀k)(C⁻¹k)ᵀ / (kᵀC⁻¹k).
      var w0 = try k.weight(down0)
      var e = try k.makeEdit(down0, n: 1)
      var (delta, w) = try edit(
        ["--method", "rome", "--cov-keys", "k0.npy", "-m", "rome 1"], down0)
      let cinv = c0.inverse
      var kk = e.keys.transposed  // d_in × n
      var r = e.values.transposed - w0 * kk  // d_out × n
      let cik = cinv * kk
      let denominator = (kk.transposed * cik)[0, 0]
      var reference = (1 / denominator) * (r * cik.transposed)
      var error = relative(delta, reference)
      print("edit: ROME relative error vs Float64 reference \(error)")
      #expect(error < 1e-5, "ROME ΔW relative error \(error)")
      var fit = relative(w * kk, e.values.transposed)
      #expect(fit < 1e-4, "ROME Ŵk vs v: \(fit)")

      // EMMET with μ = 0, n = 3, λ = 2: ΔW = R(KᵀC⁻¹K)⁻¹KᵀC⁻¹ with C = λC₀; exact on the keys.
      w0 = try k.weight(down0)
      e = try k.makeEdit(down0, n: 3)
      (delta, w) = try edit(
        ["--method", "emmet", "--mu", "0", "--lambda", "2", "--cov", "c0.npy", "-m", "emmet mu 0"],
        down0)
      kk = e.keys.transposed
      r = e.values.transposed - w0 * kk
      var ci = (2 * c0).inverse
      reference = r * (kk.transposed * ci * kk).inverse * kk.transposed * ci
      error = relative(delta, reference)
      print("edit: EMMET (μ=0) relative error \(error)")
      #expect(error < 1e-5, "EMMET μ=0 ΔW relative error \(error)")
      fit = relative(w * kk, e.values.transposed)
      #expect(fit < 1e-4, "EMMET μ=0 Ŵk vs v: \(fit)")

      // EMMET with the default μ = 0.1 on another tensor, λ = 1.5.
      w0 = try k.weight(down1)
      e = try k.makeEdit(down1, n: 3)
      (delta, w) = try edit(
        ["--method", "emmet", "--lambda", "1.5", "--cov", "c0.npy", "-m", "emmet mu 0.1"], down1)
      kk = e.keys.transposed
      r = e.values.transposed - w0 * kk
      ci = (1.5 * c0).inverse
      reference =
        r * (kk.transposed * ci * kk + 0.1 * Matrix.identity(3)).inverse * kk.transposed * ci
      error = relative(delta, reference)
      print("edit: EMMET (μ=0.1) relative error \(error)")
      #expect(error < 1e-5, "EMMET μ=0.1 ΔW relative error \(error)")

      // MEMIT, n = 4, λ = 3: ΔW = RKᵀ(λC₀ + KKᵀ)⁻¹.
      w0 = try k.weight(down1)
      e = try k.makeEdit(down1, n: 4)
      (delta, w) = try edit(
        ["--method", "memit", "--lambda", "3", "--cov", "c0.npy", "-m", "memit"], down1)
      kk = e.keys.transposed
      r = e.values.transposed - w0 * kk
      reference = r * kk.transposed * (3 * c0 + kk * kk.transposed).inverse
      error = relative(delta, reference)
      print("edit: MEMIT relative error \(error)")
      #expect(error < 1e-5, "MEMIT ΔW relative error \(error)")

      // GPT-2 Conv1D orientation: up_proj is stored [40, 24] = [d_in, d_out] for keys of length 40.
      w0 = try k.weight(up0, transposed: true)
      e = try k.makeEdit(up0, n: 1, transposed: true)
      (delta, w) = try edit(
        ["--method", "rome", "--cov-keys", "k0.npy", "-m", "rome conv1d"], up0, transposed: true)
      kk = e.keys.transposed
      r = e.values.transposed - w0 * kk
      let cikT = cinv * kk
      reference = (1 / (kk.transposed * cikT)[0, 0]) * (r * cikT.transposed)
      error = relative(delta, reference)
      print("edit: ROME Conv1D relative error \(error)")
      #expect(error < 1e-5, "ROME Conv1D ΔW relative error \(error)")
      fit = relative(w * kk, e.values.transposed)
      #expect(fit < 1e-4, "ROME Conv1D Ŵk vs v: \(fit)")
      let show = runMVC(["show", "--json"], in: dir)
      #expect(
        show.stdout.contains("conv1d"),
        "show does not record the Conv1D orientation: \(show.stdout.prefix(600))")

      // mvc score: the last edit holds; --json schema.
      let score = runMVC(["score"], in: dir)
      expectSuccess(score, "score")
      #expect(
        score.stdout.contains("5 recorded edits") || score.stdout.contains("recorded edits"),
        "score: \(score.stdout)")
      let headID = try k.s.commitIDs()[0]
      func scoreJSON(_ rev: String = "HEAD") throws -> [String: Any] {
        let result = runMVC(["score", rev, "--json"], in: dir)
        expectSuccess(result, "score --json")
        return try #require(
          try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
      }
      var json = try scoreJSON()
      #expect(json["schema"] as? String == "mvc.score/1")
      let edits = json["edits"] as? [[String: Any]] ?? []
      let editCount = edits.count
      #expect(editCount == 12, "recorded edits: \(editCount)")
      let last = edits.filter { $0["commit"] as? String == headID }
      #expect(last.count == 1)
      if let retention = last.first?["retention"] as? Double {
        #expect(abs(retention - 1) < 1e-4, "retention of the last edit \(retention)")
      } else {
        Issue.record("no retention for the last edit: \(last)")
      }
      #expect((json["unscored"] as? [Any])?.isEmpty == true)

      // A plain commit (no keys) is listed as unscored.
      try k.s.edit(rank: 2, tensor: "model.layers.1.mlp.up_proj.weight")
      _ = try k.s.commit("plain low-rank edit")
      let plainID = try k.s.commitIDs()[0]
      json = try scoreJSON()
      let unscored = (json["unscored"] as? [[String: Any]] ?? []).compactMap {
        $0["commit"] as? String
      }
      #expect(unscored == [plainID], "unscored: \(unscored)")
      #expect(runMVC(["score"], in: dir).stdout.contains("unscored"))

      // Probe keys: preservation error = ‖(W_HEAD − W_root)K₀ᵀ‖ / ‖W_root K₀ᵀ‖.
      let probe = runMVC(["probe", "add", "k0.npy", "--tensor", down0], in: dir)
      expectSuccess(probe, "probe add")
      json = try scoreJSON()
      let preservation = json["preservation"] as? [[String: Any]] ?? []
      #expect(preservation.count == 1)
      #expect(preservation.first?["tensor"] as? String == down0)
      #expect(preservation.first?["key_count"] as? Int == k.m)
      let rootModel = dir.appendingPathComponent("root.safetensors")
      let rootID = try #require(try k.s.commitIDs().last)
      expectSuccess(
        runMVC(["checkout", rootID, "-o", rootModel.path], in: dir), "checkout root -o")
      let wRoot = try #require(try floatTensors(rootModel)[down0])
      let wr = Matrix(rows: wRoot.shape[0], cols: wRoot.shape[1], wRoot.values.map(Double.init))
      let expected =
        ((try k.weight(down0)) * k0.transposed - wr * k0.transposed).frobenius
        / (wr * k0.transposed).frobenius
      if let reported = preservation.first?["error"] as? Double {
        #expect(
          abs(reported - expected) <= 1e-4 * expected,
          "preservation error \(reported), expected \(expected)")
      } else {
        Issue.record("no preservation error: \(preservation)")
      }
      #expect(runMVC(["score"], in: dir).stdout.contains("preservation \(down0)"))

      // Bad inputs: exit 128, `fatal:` with a reason, nothing committed.
      _ = try k.makeEdit(down0, n: 2)
      let good = ["--tensor", down0, "--method", "emmet", "--cov", "c0.npy", "-m", "bad"]
      try k.write("v-wide.npy", k.gaussians(2 * 25), [2, 25])
      k.s.expectRefused(
        ["edit", "--keys", "keys.npy", "--values", "v-wide.npy"] + good, naming: ["values", "25"])
      try k.write("v-three.npy", k.gaussians(3 * 24), [3, 24])
      k.s.expectRefused(
        ["edit", "--keys", "keys.npy", "--values", "v-three.npy"] + good, naming: ["same n"])
      try k.write("k-17.npy", k.gaussians(2 * 17), [2, 17])
      k.s.expectRefused(
        ["edit", "--keys", "k-17.npy", "--values", "values.npy"] + good, naming: ["17"])
      var nanKeys = k.gaussians(2 * 40)
      nanKeys[45] = .nan
      try k.write("k-nan.npy", nanKeys, [2, 40])
      let nan = k.s.expectRefused(
        ["edit", "--keys", "k-nan.npy", "--values", "values.npy"] + good, naming: [])
      #expect(
        nan.stderr.lowercased().contains("finite") || nan.stderr.contains("NaN"),
        "NaN keys: \(nan.stderr)")
      try k.write("k0-few.npy", k.gaussians(10 * 40), [10, 40])
      let singular = k.s.expectRefused(
        [
          "edit", "--tensor", down0, "--method", "emmet", "--keys", "keys.npy", "--values",
          "values.npy", "--cov-keys", "k0-few.npy", "-m", "bad",
        ],
        naming: [])
      #expect(
        singular.stderr.contains("positive definite") || singular.stderr.contains("singular"),
        "too few covariance keys: \(singular.stderr)")
      let many = 45
      try k.write("k-many.npy", k.gaussians(many * 40), [many, 40])
      try k.write("v-many.npy", k.gaussians(many * 24), [many, 24])
      let tooMany = k.s.expectRefused(
        [
          "edit", "--tensor", down0, "--method", "emmet", "--mu", "0", "--keys", "k-many.npy",
          "--values", "v-many.npy", "--cov", "c0.npy", "-m", "bad",
        ],
        naming: [])
      #expect(
        tooMany.stderr.contains("singular"), "more keys than d_in with μ = 0: \(tooMany.stderr)")
      print("edit: bad-input messages:\n  \(nan.stderr)  \(singular.stderr)  \(tooMany.stderr)")
      #expect(try k.s.commitIDs()[0] == plainID, "a refused edit committed something")
    }
  }

  @Test func mergeSumAndResolveThenBisect() throws {
    try withTemporaryDirectory { dir in
      var k = try KnowledgeScenario(dir: dir)
      let k0 = Matrix(rows: k.m, cols: k.dIn, k.gaussians(k.m * k.dIn))
      try k.write("k0.npy", k0.a, [k.m, k.dIn])
      func edit(_ method: String, n: Int, _ message: String) throws {
        _ = try k.makeEdit(down0, n: n)
        let result = runMVC(
          [
            "edit", "--tensor", down0, "--method", method, "--keys", "keys.npy", "--values",
            "values.npy", "--cov-keys", "k0.npy", "-m", message,
          ],
          in: dir)
        expectSuccess(result, "edit \(message)")
        try #require(result.status == 0)
      }
      try edit("rome", n: 1, "base edit")
      let forkID = try k.s.commitIDs()[0]
      expectSuccess(runMVC(["branch", "alt"], in: dir), "branch alt")
      expectSuccess(runMVC(["branch", "plain", forkID], in: dir), "branch plain")
      try edit("rome", n: 1, "ours: rome")
      try edit("emmet", n: 2, "ours: emmet")
      expectSuccess(runMVC(["branch", "m2"], in: dir), "branch m2")
      expectSuccess(runMVC(["switch", "alt"], in: dir), "switch alt")
      try edit("emmet", n: 2, "theirs: emmet")
      try edit("rome", n: 1, "theirs: rome")
      expectSuccess(runMVC(["switch", "plain"], in: dir), "switch plain")
      try k.s.edit(rank: 1, tensor: down0)
      let plainCommit = runMVC(["commit", "-m", "plain edit without keys"], in: dir)
      expectSuccess(plainCommit)
      let plainID = try k.s.commitIDs()[0]

      func parents(_ rev: String) -> Int {
        runGit(["--git-dir=.mvc", "cat-file", "-p", rev], in: dir).stdout.split(separator: "\n")
          .filter { $0.hasPrefix("parent ") }.count
      }
      func message(_ rev: String) -> String {
        runGit(["--git-dir=.mvc", "log", "-1", "--format=%B", rev], in: dir).stdout
      }

      // sum on main
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      let sum = runMVC(["merge", "alt", "--strategy", "sum"], in: dir)
      expectSuccess(sum, "merge --strategy sum")
      #expect(sum.stdout.contains("Merge made by the 'sum' strategy"), "merge sum: \(sum.stdout)")
      let sumID = try k.s.commitIDs()[0]
      let sumBytes = try Data(contentsOf: k.s.model)
      k.s.expectClean("merge sum")

      // resolve on m2
      expectSuccess(runMVC(["switch", "m2"], in: dir), "switch m2")
      k.s.expectRefused(
        ["merge", "plain", "--strategy", "resolve"], naming: [String(plainID.prefix(7))])
      let resolve = runMVC(["merge", "alt", "--strategy", "resolve"], in: dir)
      expectSuccess(resolve, "merge --strategy resolve")
      #expect(
        resolve.stdout.contains("Merge made by the 'resolve' strategy"),
        "merge resolve: \(resolve.stdout)")
      let resolveID = try k.s.commitIDs()[0]
      let resolveBytes = try Data(contentsOf: k.s.model)
      print("merge: sum output:\n\(sum.stdout)merge: resolve output:\n\(resolve.stdout)")

      if gitExecutable != nil {
        #expect(parents(sumID) == 2, "sum merge parents")
        #expect(parents(resolveID) == 2, "resolve merge parents")
        for id in [sumID, resolveID] {
          let text = message(id)
          #expect(
            text.contains("mean retention") && text.contains(" sum ") && text.contains(" resolve "),
            "merge message: \(text)")
        }
      }
      #expect(sumBytes != resolveBytes, "sum and resolve should differ on interfering edits")
      let resolveScore =
        try JSONSerialization.jsonObject(
          with: Data(runMVC(["score", "--json"], in: dir).stdout.utf8)) as? [String: Any]
      print(
        "merge: resolve score mean \(resolveScore?["mean_retention"] ?? "nil"), min \(resolveScore?["minimum_retention"] ?? "nil")"
      )

      // Switching away and back gives the merge commits' exact bytes.
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      expectSameBytes(try Data(contentsOf: k.s.model), sumBytes, "sum merge after switching back")
      expectSuccess(runMVC(["checkout", resolveID], in: dir), "checkout resolve merge")
      expectSameBytes(try Data(contentsOf: k.s.model), resolveBytes, "resolve merge checked out")
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      expectSameBytes(
        try Data(contentsOf: k.s.model), sumBytes, "sum merge after switching back again")

      // A destructive plain edit after the merge; bisect over the merge history finds it.
      var rng = SplitMix64(seed: 9)
      try LowRankEditor.edit(k.s.model, tensor: down0, rank: 1, rng: &rng, scale: 20)
      expectSuccess(runMVC(["commit", "-m", "destructive edit"], in: dir), "commit destructive")
      let destructiveID = try k.s.commitIDs()[0]
      try k.s.edit(rank: 1, tensor: down1)
      expectSuccess(runMVC(["commit", "-m", "after"], in: dir), "commit after")
      let finalBytes = try Data(contentsOf: k.s.model)
      let rootID = try #require(try k.s.commitIDs().last)
      expectSuccess(runMVC(["bisect", "start", "HEAD", rootID], in: dir), "bisect start")
      let run = runMVC(["bisect", "run", "--min-score", "0"], in: dir)
      expectSuccess(run, "bisect run --min-score")
      #expect(run.stdout.contains("min retention"), "bisect run --min-score: \(run.stdout)")
      #expect(
        firstBadID(run.stdout) == destructiveID,
        "bisect run --min-score over a merge: \(run.stdout)")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      expectSameBytes(try Data(contentsOf: k.s.model), finalBytes, "after reset")
    }
  }
}
