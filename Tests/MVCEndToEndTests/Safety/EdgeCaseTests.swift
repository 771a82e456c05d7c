import Foundation
import TestSupport
import Testing

/// Less common but legal models and edits: each must round-trip byte for byte.
@Suite("edge cases")
struct EdgeCaseTests {
  /// Commits `steps` (each rewrites the model), then checks out every commit by id.
  static func roundTrip(
    _ s: inout Scenario, _ steps: [(String, (inout [FixtureTensor], inout [String: String]?) throws -> Void)],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    try s.initialize(sourceLocation: sourceLocation)
    for (message, step) in steps {
      var (tensors, metadata) = try readSafetensorsFixture(s.model)
      try step(&tensors, &metadata)
      try writeSafetensors(tensors, to: s.model, metadata: metadata)
      try s.commit(message, sourceLocation: sourceLocation)
      s.expectClean(message, sourceLocation: sourceLocation)
    }
    let ids = try s.commitIDs(sourceLocation: sourceLocation)
    for (k, id) in ids.reversed().enumerated() {
      expectSuccess(runMVC(["checkout", id], in: s.dir), "checkout state \(k)", sourceLocation: sourceLocation)
      try s.expectWorkingState(k, "checkout state \(k)", sourceLocation: sourceLocation)
      let out = s.dir.appendingPathComponent("o\(k).safetensors")
      expectSuccess(runMVC(["checkout", id, "-o", out.lastPathComponent], in: s.dir), sourceLocation: sourceLocation)
      try s.expectState(of: out, equals: s.states[k], "-o state \(k)", sourceLocation: sourceLocation)
    }
  }

  static func mutate(_ tensors: inout [FixtureTensor], _ name: String, _ body: (inout [Float]) -> Void) {
    guard let i = tensors.firstIndex(where: { $0.name == name }) else {
      Issue.record("the fixture has no tensor '\(name)' to change")
      return
    }
    var values = tensors[i].decodedFloats
    body(&values)
    tensors[i] = FixtureTensor(name: name, dtype: tensors[i].dtype, shape: tensors[i].shape, floats: values)
  }

  @Test func headerOnlyChanges() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try Self.roundTrip(
        &s,
        [
          ("metadata added", { _, metadata in metadata = ["format": "pt", "note": "v1"] }),
          ("metadata changed", { _, metadata in metadata = ["format": "pt", "note": "v2"] }),
          ("tensors reordered", { tensors, _ in tensors.reverse() }),
          ("metadata removed", { _, metadata in metadata = nil }),
        ])
    }
  }

  @Test func integerScalarAndOddShapedTensors() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      var tensors = transformerFixture(blocks: 1, hidden: 32, intermediate: 64, seed: 3)
      tensors.append(
        FixtureTensor(
          name: "position_ids", dtype: "I64", shape: [1, 16],
          bytes: (0..<16).flatMap { i in withUnsafeBytes(of: Int64(i).littleEndian, Array.init) }))
      tensors.append(FixtureTensor(name: "mask", dtype: "U8", shape: [7], bytes: [1, 0, 1, 1, 0, 0, 1]))
      tensors.append(FixtureTensor(name: "flags", dtype: "BOOL", shape: [3], bytes: [1, 0, 1]))
      tensors.append(FixtureTensor(name: "logit_scale", shape: [], floats: [2.5]))
      tensors.append(FixtureTensor(name: "row", shape: [1, 40], floats: (0..<40).map { Float($0) / 40 }))
      tensors.append(FixtureTensor(name: "column", shape: [40, 1], floats: (0..<40).map { Float($0) / 40 }))
      tensors.append(FixtureTensor(name: "conv", shape: [8, 4, 3], floats: (0..<96).map { Float($0) * 0.01 }))
      tensors.append(
        FixtureTensor(
          name: "f64", dtype: "F64", shape: [12, 10],
          bytes: (0..<120).flatMap { i in withUnsafeBytes(of: (Double(i) * 0.001).bitPattern.littleEndian, Array.init) }
        ))
      try writeSafetensors(tensors, to: s.model)
      try Self.roundTrip(
        &s,
        [
          (
            "edit ints and scalars",
            { t, _ in
              if let i = t.firstIndex(where: { $0.name == "position_ids" }) { t[i].bytes[8] = 99 }
              if let i = t.firstIndex(where: { $0.name == "mask" }) { t[i].bytes[1] = 1 }
              if let i = t.firstIndex(where: { $0.name == "flags" }) { t[i].bytes[1] = 1 }
              Self.mutate(&t, "logit_scale") { $0[0] = 3 }
              Self.mutate(&t, "row") { $0[5] += 1 }
              Self.mutate(&t, "column") { $0[7] -= 1 }
            }
          ),
          (
            "rank-1 edits of a 3-D and an F64 tensor",
            { t, _ in
              Self.mutate(&t, "conv") { v in
                for i in 0..<8 { for j in 0..<12 { v[i * 12 + j] += Float(i + 1) * Float(j - 5) * 0.003 } }
              }
              if let i = t.firstIndex(where: { $0.name == "f64" }) {
                var bytes = t[i].bytes
                for r in 0..<12 {
                  for c in 0..<10 {
                    let o = (r * 10 + c) * 8
                    let old = Double(bitPattern: bytes[o..<(o + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) })
                    let new = old + Double(r) * Double(c) * 1e-3
                    withUnsafeBytes(of: new.bitPattern.littleEndian) {
                      for (k, b) in $0.enumerated() { bytes[o + k] = b }
                    }
                  }
                }
                t[i].bytes = bytes
              }
            }
          ),
        ])
    }
  }

  @Test func emptyTensor() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      var tensors = transformerFixture(blocks: 1, hidden: 32, intermediate: 64, seed: 3)
      tensors.insert(FixtureTensor(name: "empty", shape: [0, 32], floats: []), at: 1)
      try writeSafetensors(tensors, to: s.model)
      try Self.roundTrip(
        &s,
        [
          (
            "edit next to an empty tensor",
            { t, _ in Self.mutate(&t, "model.layers.0.mlp.up_proj.weight") { $0[3] += 0.5 } }
          ),
          ("another empty tensor", { t, _ in t.append(FixtureTensor(name: "empty2", shape: [4, 0], floats: [])) }),
        ])
    }
  }

  /// Full-rank changes (a fine-tune), a one-ulp change, and a revert to an older state.
  @Test func denseTinyAndRevertingChanges() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      var rng = SplitMix64(seed: 5)
      let up = "model.layers.0.mlp.up_proj.weight"
      var original: [Float] = []
      try Self.roundTrip(
        &s,
        [
          (
            "full-rank",
            { t, _ in
              Self.mutate(&t, up) { v in
                original = v; for i in v.indices { v[i] += rng.nextGaussian() * 0.001 }
              }
            }
          ),
          ("one ulp", { t, _ in Self.mutate(&t, up) { $0[17] = $0[17].nextUp } }),
          ("revert", { t, _ in Self.mutate(&t, up) { $0 = original } }),
          (
            "sign flips",
            { t, _ in Self.mutate(&t, up) { v in for i in stride(from: 0, to: v.count, by: 3) { v[i] = -v[i] } } }
          ),
          ("zeroed", { t, _ in Self.mutate(&t, up) { v in for i in v.indices { v[i] = 0 } } }),
        ])
    }
  }

  /// A tensor holding Inf or NaN (masks, unused rows) must still be committable when edited.
  @Test(arguments: [Float.infinity, -Float.infinity, Float.nan])
  func nonFiniteValuesInAnEditedTensor(_ special: Float) throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      let up = "model.layers.0.mlp.up_proj.weight"
      var (tensors, _) = try readSafetensorsFixture(s.model)
      Self.mutate(&tensors, up) { $0[0] = special }
      try writeSafetensors(tensors, to: s.model)
      try s.initialize()
      try s.edit(rank: 1, tensor: up)
      let commit = runMVC(["commit", "-m", "edit a tensor with \(special)"], in: dir)
      expectSuccess(commit, "commit of a tensor holding \(special)")
      try #require(commit.status == 0)
      s.states.append(try snapshot(s.model))
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "before")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "after")
    }
  }

  @Test func toleranceCommitRewritesTheWorkingModel() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      try s.edit(rank: 2)
      let result = runMVC(["commit", "-m", "approx", "--tolerance", "1e-3"], in: dir)
      expectSuccess(result, "commit --tolerance")
      s.expectClean("commit --tolerance")
      s.states.append(try snapshot(s.model))
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "before")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "the normalized state")
      #expect(runMVC(["commit", "-m", "x", "--tolerance", "-1"], in: dir).status == 129)
    }
  }

  @Test func streamsQuietAndDirectoryOption() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("my models ü", isDirectory: true)
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      var s = Scenario(dir: work)
      try s.writeModel()
      let initResult = runMVC(["init", "-C", work.path, "model.safetensors"], in: dir)
      expectSuccess(initResult, "init -C")
      #expect(initResult.stdout.contains("Initialized mvc repository"), "\(initResult.stdout)")
      #expect(initResult.stderr.isEmpty, "init stderr: \(initResult.stderr)")
      s.states.append(try snapshot(s.model))
      try s.edit(rank: 1)
      let quiet = runMVC(["commit", "-q", "-m", "quiet"], in: work)
      expectSuccess(quiet)
      #expect(quiet.stdout.isEmpty && quiet.stderr.isEmpty, "-q: \(quiet)")
      s.states.append(try snapshot(s.model))
      let checkout = runMVC(["checkout", "HEAD~1"], in: work)
      expectSuccess(checkout)
      #expect(checkout.stdout.isEmpty, "checkout writes results only: \(checkout.stdout)")
      #expect(checkout.stderr.hasPrefix("HEAD is now at "), "\(checkout.stderr)")
      let oneline = runMVC(["log", "--oneline", "main"], in: work)
      #expect(oneline.stdout.split(separator: "\n").count == 2, "\(oneline.stdout)")
      let limited = runMVC(["log", "--json", "-n", "1", "main"], in: work)
      #expect(
        (try? JSONSerialization.jsonObject(with: Data(limited.stdout.utf8)) as? [String: Any])?["commits"].map {
          ($0 as? [Any])?.count
        } == 1)
      // From a subfolder: the repository is found upwards.
      let sub = work.appendingPathComponent("sub")
      try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
      expectSuccess(runMVC(["checkout", "main"], in: sub), "checkout from a subfolder")
      try s.expectWorkingState(1, "checkout from a subfolder")
      let statusJSON = runMVC(["status", "--json"], in: sub)
      let status = try JSONSerialization.jsonObject(with: Data(statusJSON.stdout.utf8)) as? [String: Any]
      #expect(status?["schema"] as? String == "mvc.status/1")
      #expect(status?["clean"] as? Bool == true)
      #expect(status?["branch"] as? String == "main")
      #expect(runMVC(["switch", "main", "HEAD"], in: work).status == 129, "a start point needs -c")
    }
  }

  @Test func deletedWorkingModel() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(1)
      try FileManager.default.removeItem(at: s.model)
      s.expectRefused(["status"], naming: ["model.safetensors"])
      s.expectRefused(["commit", "-m", "gone"], naming: ["model.safetensors"])
      s.expectRefused(["checkout", "HEAD~1"], naming: ["model.safetensors"])
      expectSuccess(runMVC(["checkout", "--force", "HEAD"], in: dir), "checkout --force restores")
      try s.expectWorkingState(1, "restored")
    }
  }

  @Test func duplicateKeyInHeader() throws {
    try withTemporaryDirectory { dir in
      let model = dir.appendingPathComponent("model.safetensors")
      let header =
        #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
      var bytes: [UInt8] = []
      withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
      bytes += Array(header.utf8) + [UInt8](repeating: 0, count: 8)
      try Data(bytes).write(to: model)
      let result = runMVC(["init", "model.safetensors"], in: dir)
      expectFatal(result, naming: ["model.safetensors", "'a'"])
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent(".mvc").path))
    }
  }
}
