import Foundation
import TestSupport
import Testing

/// The plumbing the Python client drives: `ls-tensors`, `cat-tensors`, `commit-factors` and a
/// bisection that leaves HEAD and the working model alone (`bisect start --no-checkout`, `next`).
@Suite("Plumbing for the Python client")
struct PlumbingTests {
  static func object(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    try #require(
      try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], sourceLocation: sourceLocation)
  }

  /// The data section of a safetensors file (what follows the 8 + N header prefix).
  static func dataSection(_ url: URL) throws -> Data {
    let bytes = try Data(contentsOf: url)
    let n = bytes.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
    return bytes.dropFirst(8 + n)
  }

  @Test func lsTensorsAndCatTensors() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(2)
      let ids = try s.commitIDs()

      let listing = try Self.object(runMVC(["ls-tensors", "--json"], in: dir).stdout)
      #expect(listing["schema"] as? String == "mvc.ls-tensors/1")
      #expect(listing["commit"] as? String == ids[0])
      #expect(listing["working_model"] as? String == "model.safetensors")
      let tensors = try #require(listing["tensors"] as? [[String: Any]])
      #expect(Set(tensors.map { $0["name"] as? String ?? "" }) == Set(try s.tensorNames()))
      for t in tensors {
        #expect(Set(t.keys) == ["name", "dtype", "shape", "hash", "kind", "file"])
        #expect((t["hash"] as? String)?.hasPrefix("xxh3-128:") == true)
      }
      let older = try Self.object(runMVC(["ls-tensors", "HEAD~2", "--json"], in: dir).stdout)
      let changed = zip(tensors, try #require(older["tensors"] as? [[String: Any]])).filter {
        ($0.0["hash"] as? String) != ($0.1["hash"] as? String)
      }
      #expect((1...2).contains(changed.count))

      // Every tensor of HEAD~1, in layout order: the same data as 'checkout -o' writes.
      let all = dir.appendingPathComponent("all.safetensors")
      let cat = try Self.object(runMVC(["cat-tensors", "HEAD~1", "-o", all.path, "--json"], in: dir).stdout)
      #expect(cat["schema"] as? String == "mvc.cat-tensors/1")
      #expect(cat["commit"] as? String == ids[1])
      #expect(cat["path"] as? String == all.path)
      let full = dir.appendingPathComponent("full.safetensors")
      expectSuccess(runMVC(["checkout", "HEAD~1", "-o", full.path], in: dir), "checkout -o")
      #expect(try Self.dataSection(all) == (try Self.dataSection(full)))
      try s.expectWorkingState(2, "after cat-tensors")

      let name = try s.matrixNames()[0]
      let one = dir.appendingPathComponent("one.safetensors")
      expectSuccess(runMVC(["cat-tensors", ids[2], name, "-o", one.path], in: dir), "cat-tensors one")
      let oneListing = try Self.object(runMVC(["cat-tensors", ids[2], name, "-o", one.path, "--json"], in: dir).stdout)
      #expect((oneListing["tensors"] as? [[String: Any]])?.map { $0["name"] as? String } == [name])

      let missing = dir.appendingPathComponent("missing.safetensors")
      s.expectRefused(["cat-tensors", "HEAD", "no.such.tensor", "-o", missing.path], naming: ["no.such.tensor"])
      #expect(!FileManager.default.fileExists(atPath: missing.path))
    }
  }

  @Test func commitFactorsStoresGivenFactorsAndSaysWhichWereRounded() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let listing = try Self.object(runMVC(["ls-tensors", "--json"], in: dir).stdout)
      let matrix = try #require(
        (listing["tensors"] as? [[String: Any]])?.first {
          ($0["shape"] as? [Int])?.count == 2 && ($0["name"] as? String)?.contains("layernorm") == false
        })
      let name = try #require(matrix["name"] as? String)
      let shape = try #require(matrix["shape"] as? [Int])
      var rng = SplitMix64(seed: 5)
      let u = (0..<shape[0]).map { _ in Double(rng.next() >> 40) * 0x1p-24 - 0.5 }
      let v = (0..<shape[1]).map { _ in (Double(rng.next() >> 40) * 0x1p-24 - 0.5) * 0.01 }
      let file = dir.appendingPathComponent("factors.safetensors")
      try writeSafetensors(
        [
          FixtureTensor(name: "\(name).u", dtype: "F64", shape: [shape[0], 1], bytes: u.withUnsafeBytes { Array($0) }),
          FixtureTensor(name: "\(name).v", shape: [shape[1], 1], floats: v.map { Float($0) }),
        ], to: file)
      let facts = dir.appendingPathComponent("facts.jsonl")
      try Data("{\"subject\": \"Eiffel Tower\"}\n".utf8).write(to: facts)
      let result = runMVC(
        ["commit-factors", file.path, "-m", "edit", "--method", "rome", "--facts", facts.path, "--json"], in: dir)
      expectSuccess(result, "commit-factors")
      let document = try Self.object(result.stdout)
      #expect(document["schema"] as? String == "mvc.commit-factors/1")
      #expect(document["rounded_from_f64"] as? [String] == [name])
      let commit = try #require(document["commit"] as? [String: Any])
      #expect(commit["method"] as? String == "rome")
      let change = try #require((commit["changes"] as? [[String: Any]])?.first)
      #expect(change["storage"] as? String == "low_rank")
      #expect(change["rank"] as? Int == 1)
      #expect(change["residual_nonzero_count"] as? Int == 0)
      s.expectClean("commit-factors")
      let show = runMVC(["log", "-n", "1", "--json"], in: dir)
      #expect(show.stdout.contains(commit["id"] as? String ?? "?"))

      s.expectRefused(
        ["commit-factors", facts.path, "-m", "not safetensors"], naming: ["facts.jsonl"])
      try writeSafetensors(
        [FixtureTensor(name: "\(name).u", shape: [shape[1], 1], floats: v.map { Float($0) })], to: file)
      s.expectRefused(["commit-factors", file.path, "-m", "half"], naming: [name])
    }
  }

  @Test func bisectWithoutCheckoutLeavesHeadAndWorkingModel() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(7)
      let ids = try s.commitIDs()  // ids[0] = edit 7, ids[7] = root
      let culprit = 4  // edits 3...7 are "bad": ids[0...4]
      var step = try Self.object(
        runMVC(["bisect", "start", "--no-checkout", ids[0], ids[7], "--json"], in: dir).stdout)
      #expect(step["schema"] as? String == "mvc.bisect-step/1")
      #expect(step["no_checkout"] as? Bool == true)
      let again = try Self.object(runMVC(["bisect", "next", "--json"], in: dir).stdout)
      #expect(again["commit"] as? String == step["commit"] as? String)
      var marks = 0
      while step["status"] as? String == "testing" {
        let commit = try #require(step["commit"] as? String)
        let index = try #require(ids.firstIndex(of: commit))
        try s.expectWorkingState(7, "during the bisection")
        let status = try Self.object(runMVC(["status", "--json"], in: dir).stdout)
        #expect(status["branch"] as? String == "main" && status["head"] as? String == ids[0])
        let term = index <= culprit ? "bad" : "good"
        step = try Self.object(runMVC(["bisect", term, commit, "--json"], in: dir).stdout)
        marks += 1
        try #require(marks < 10)
      }
      #expect(step["status"] as? String == "first_bad")
      #expect(step["commit"] as? String == ids[culprit])
      #expect(runMVC(["bisect", "log"], in: dir).stdout.contains("mvc bisect start --no-checkout"))
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      try s.expectWorkingState(7, "after reset")
      #expect(try s.commitIDs().first == ids[0])
      #expect(!FileManager.default.fileExists(atPath: s.repository.appendingPathComponent("BISECT_HEAD").path))
      let status = try Self.object(runMVC(["status", "--json"], in: dir).stdout)
      #expect(status["branch"] as? String == "main")
    }
  }
}
