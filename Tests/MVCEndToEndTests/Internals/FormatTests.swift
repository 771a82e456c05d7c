import Foundation
import TestSupport
import Testing

/// Half-precision models and sharded model folders through the whole cycle.
@Suite("dtypes and shards")
struct FormatTests {
  /// Ten commits, then every commit checked out (in place and with `-o`) byte for byte.
  static func roundTripTen(_ s: inout Scenario, sourceLocation: SourceLocation = #_sourceLocation) throws {
    try s.initialize(sourceLocation: sourceLocation)
    try s.editAndCommit(10, sourceLocation: sourceLocation)
    s.expectClean("10 commits", sourceLocation: sourceLocation)
    let ids = try s.commitIDs(sourceLocation: sourceLocation)
    #expect(ids.count == 11, sourceLocation: sourceLocation)
    for (k, id) in ids.reversed().enumerated() {
      expectSuccess(runMVC(["checkout", id], in: s.dir), "checkout state \(k)", sourceLocation: sourceLocation)
      try s.expectWorkingState(k, "checkout state \(k)", sourceLocation: sourceLocation)
      s.expectClean("checkout state \(k)", sourceLocation: sourceLocation)
    }
    for k in [0, 5, 10] {
      let out = s.dir.appendingPathComponent("out-\(k)")
      expectSuccess(
        runMVC(["checkout", ids[10 - k], "-o", out.lastPathComponent], in: s.dir), sourceLocation: sourceLocation)
      try s.expectState(of: out, equals: s.states[k], "-o state \(k)", sourceLocation: sourceLocation)
    }
    expectSuccess(runMVC(["checkout", "main"], in: s.dir), sourceLocation: sourceLocation)
    try s.expectWorkingState(10, "back to main", sourceLocation: sourceLocation)
    if gitExecutable != nil {
      let fsck = runGit(["--git-dir=.mvc", "fsck", "--strict"], in: s.dir)
      #expect(fsck.status == 0, "git fsck: \(fsck.stderr)", sourceLocation: sourceLocation)
    }
  }

  @Test(arguments: ["BF16", "F16"])
  func halfPrecisionModel(_ dtype: String) throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: dtype == "BF16" ? 16 : 17)
      try s.writeModel(blocks: 2, hidden: 64, intermediate: 128, dtype: dtype)
      try Self.roundTripTen(&s)
    }
  }

  @Test(arguments: ["F32", "BF16"])
  func fourShardModel(_ dtype: String) throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, modelName: "model", seed: 44)
      let tensors = transformerFixture(blocks: 4, hidden: 32, intermediate: 96, seed: 4, dtype: dtype)
      let map = try writeShardedModel(tensors, shardCount: 4, to: s.model)
      #expect(Set(map.values).count == 4)
      try Self.roundTripTen(&s)
      // Every shard file was edited at least once, or the test proves little.
      for k in 1...10 { #expect(s.states[k] != s.states[k - 1], "commit \(k) changed nothing") }
    }
  }

  /// Independent checks of the test-side half-precision conversion at its edges.
  @Test func halfPrecisionConversionEdges() {
    #expect(bf16Bits(1.0) == 0x3F80)
    #expect(bf16Bits(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie → even (down)
    #expect(bf16Bits(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie → even (up)
    #expect(bf16Bits(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
    #expect(floatFromBF16(bf16Bits(.nan)).isNaN)
    #expect(bf16Bits(.infinity) == 0x7F80)
    #expect(bf16Bits(Float.greatestFiniteMagnitude) == 0x7F80)  // rounds up to Inf
    #expect(f16Bits(1.0) == 0x3C00)
    #expect(f16Bits(65504) == 0x7BFF)
    #expect(f16Bits(65520) == 0x7C00)  // halfway to the next binade → Inf
    #expect(f16Bits(0x1p-24) == 0x0001)
    #expect(f16Bits(0x1p-25) == 0x0000)  // tie → even (0)
    #expect(f16Bits(0x1.8p-24) == 0x0002)  // tie → even (2)
    #expect(f16Bits(-2.0) == 0xC000)
    #expect(floatFromF16(f16Bits(.nan)).isNaN)
    #expect(f16Bits(1 + 0x1p-11) == 0x3C00)  // tie → even
    #expect(f16Bits(1 + 0x1.8p-10) == 0x3C02)  // tie → even (up)
    for bits in stride(from: UInt16(0), to: 0x7C00, by: 7) {
      #expect(f16Bits(floatFromF16(bits)) == bits)
      #expect(bf16Bits(floatFromBF16(bits)) == bits)
    }
  }
}

@Suite("shard layout changes")
struct ShardLayoutTests {
  /// Shards merged, split and renamed between commits; the index changes with them.
  @Test func reshardingRoundTrips() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, modelName: "model", seed: 3)
      let tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 8)
      try writeShardedModel(tensors, shardCount: 4, to: s.model)
      try s.initialize()
      try s.editAndCommit(1)

      func rewrite(_ shardCount: Int) throws -> [FixtureTensor] {
        // Collect the current tensors from every shard, then write them into a new layout.
        var all: [FixtureTensor] = []
        for file in try FileManager.default.contentsOfDirectory(atPath: s.model.path).sorted()
        where file.hasSuffix(".safetensors") {
          all += try readSafetensorsFixture(s.model.appendingPathComponent(file)).tensors
        }
        for file in try FileManager.default.contentsOfDirectory(atPath: s.model.path) {
          try FileManager.default.removeItem(at: s.model.appendingPathComponent(file))
        }
        let ordered = tensors.compactMap { t in all.first { $0.name == t.name } }
        try writeShardedModel(ordered, shardCount: shardCount, to: s.model)
        return ordered
      }
      _ = try rewrite(2)
      try s.commit("merge into 2 shards")
      s.expectClean("2 shards")
      try s.editAndCommit(1)
      _ = try rewrite(3)
      try s.edit(rank: 8)
      try s.commit("3 shards plus an edit")
      // The index alone changes (total_size written differently).
      let index = s.model.appendingPathComponent("model.safetensors.index.json")
      let text = try String(contentsOf: index, encoding: .utf8).replacingOccurrences(
        of: "\"metadata\": {", with: "\"metadata\": {\"format\": \"pt\",")
      try Data(text.utf8).write(to: index)
      try s.commit("index metadata")

      let ids = try s.commitIDs()
      #expect(ids.count == s.states.count)
      for k in [0, 5, 1, 4, 2, 3, 0, 5] {
        expectSuccess(runMVC(["checkout", ids[ids.count - 1 - k]], in: dir), "checkout state \(k)")
        try s.expectWorkingState(k, "checkout state \(k)")
        s.expectClean("checkout state \(k)")
        let out = dir.appendingPathComponent("out-\(k)")
        try? FileManager.default.removeItem(at: out)
        expectSuccess(runMVC(["checkout", ids[ids.count - 1 - k], "-o", out.lastPathComponent], in: dir))
        try s.expectState(of: out, equals: s.states[k], "-o state \(k)")
      }
    }
  }

  @Test func brokenIndex() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, modelName: "model")
      try writeShardedModel(
        transformerFixture(blocks: 1, hidden: 16, intermediate: 32, seed: 8), shardCount: 2, to: s.model)
      try s.initialize()
      let index = s.model.appendingPathComponent("model.safetensors.index.json")
      let good = try Data(contentsOf: index)
      try Data("{\"weight_map\": 3}".utf8).write(to: index)
      s.expectRefused(["commit", "-m", "x"], naming: ["model.safetensors.index.json"])
      let text = String(decoding: good, as: UTF8.self).replacingOccurrences(
        of: "model-00002-of-00002", with: "model-00009-of-00002")
      try Data(text.utf8).write(to: index)
      s.expectRefused(["commit", "-m", "x"], naming: ["model-00009-of-00002.safetensors"])
      try Data(
        String(decoding: good, as: UTF8.self).replacingOccurrences(of: "model-00002-of-00002", with: "../escape").utf8
      ).write(to: index)
      s.expectRefused(["commit", "-m", "x"], naming: ["../escape"])
    }
  }
}
