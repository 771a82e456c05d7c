import Foundation
import TestSupport
import Testing

@Suite("commit --delta")
struct DeltaCommitTests {
  /// Row-major `rows × cols` product `scale · B · A` in Double, `B` rows×r, `A` r×cols.
  static func product(_ b: [Float], _ a: [Float], rows: Int, rank: Int, cols: Int, scale: Double) -> [Double] {
    var out = [Double](repeating: 0, count: rows * cols)
    for i in 0..<rows {
      for k in 0..<rank {
        let bik = Double(b[i * rank + k]) * scale
        for j in 0..<cols { out[i * cols + j] += bik * Double(a[k * cols + j]) }
      }
    }
    return out
  }

  static func tensor(_ name: String, in url: URL) throws -> FixtureTensor {
    try #require(try readSafetensorsFixture(url).tensors.first { $0.name == name })
  }

  /// Expects `working` == base + delta within 1e-5 relative (Frobenius and max-abs).
  static func expectApplied(
    _ name: String, working: URL, base: [FixtureTensor], delta: [Double],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let before = try #require(base.first { $0.name == name }).decodedFloats
    let after = try tensor(name, in: working).decodedFloats
    let expected = zip(before, delta).map { Double($0) + $1 }
    let error = relativeError(after, expected)
    #expect(error < 1e-5, "'\(name)': relative error \(error)", sourceLocation: sourceLocation)
    let maxAbs = expected.map(abs).max() ?? 0
    let worst = zip(after, expected).map { abs(Double($0) - $1) }.max() ?? 0
    #expect(worst <= 1e-5 * maxAbs, "'\(name)': max error \(worst) of \(maxAbs)", sourceLocation: sourceLocation)
  }

  @Test func loraAdapterWithScale() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 8)
      try s.writeModel(blocks: 2, hidden: 64, intermediate: 256)
      try s.initialize()
      let base = try readSafetensorsFixture(s.model).tensors
      var rng = SplitMix64(seed: 77)
      let adapter = dir.appendingPathComponent("adapter", isDirectory: true)
      try FileManager.default.createDirectory(at: adapter, withIntermediateDirectories: true)
      try Data(#"{"r": 4, "lora_alpha": 8, "peft_type": "LORA", "target_modules": ["up_proj", "down_proj"]}"#.utf8)
        .write(to: adapter.appendingPathComponent("adapter_config.json"))
      // up_proj: out 256 × in 64; down_proj: out 64 × in 256.
      let targets = [("model.layers.0.mlp.up_proj", 256, 64), ("model.layers.1.mlp.down_proj", 64, 256)]
      var lora: [FixtureTensor] = []
      var expected: [String: [Double]] = [:]
      for (module, out, inDim) in targets {
        let a = rng.gaussianArray(count: 4 * inDim, scale: 0.05)
        let b = rng.gaussianArray(count: out * 4, scale: 0.05)
        lora.append(FixtureTensor(name: "base_model.model.\(module).lora_A.weight", shape: [4, inDim], floats: a))
        lora.append(FixtureTensor(name: "base_model.model.\(module).lora_B.weight", shape: [out, 4], floats: b))
        expected[module + ".weight"] = Self.product(b, a, rows: out, rank: 4, cols: inDim, scale: 2)
      }
      try writeSafetensors(lora, to: adapter.appendingPathComponent("adapter_model.safetensors"))

      let result = runMVC(["commit", "--delta", "adapter/adapter_model.safetensors", "-m", "lora"], in: dir)
      expectSuccess(result, "commit --delta lora")
      try #require(result.status == 0)
      #expect(result.stdout.contains("rank 4"), "\(result.stdout)")
      for (name, delta) in expected {
        try Self.expectApplied(name, working: s.model, base: base, delta: delta)
      }
      // Everything else is untouched, byte for byte.
      let after = try readSafetensorsFixture(s.model).tensors
      for t in base where expected[t.name] == nil {
        #expect(after.first { $0.name == t.name }?.bytes == t.bytes, "'\(t.name)' changed")
      }
      s.expectClean("commit --delta")
      s.states.append(try snapshot(s.model))

      let show = runMVC(["show", "--json"], in: dir)
      let shown = try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any]
      let commit = shown?["commit"] as? [String: Any]
      let changes = commit?["changes"] as? [[String: Any]] ?? []
      #expect(Set(changes.compactMap { $0["tensor"] as? String }) == Set(expected.keys), "\(show.stdout)")
      #expect(changes.allSatisfy { $0["rank"] as? Int == 4 }, "\(show.stdout)")

      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "checkout before the delta")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "checkout of the delta commit")
      expectSuccess(runMVC(["checkout", "HEAD", "-o", "copy.safetensors"], in: dir))
      try s.expectState(
        of: dir.appendingPathComponent("copy.safetensors"), equals: s.states[1], "-o of the delta commit")

      // A regular edit on top, then back through the delta commit.
      try s.editAndCommit(1)
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(1, "delta commit under a later edit")
    }
  }

  @Test func loraWithoutConfigNeedsAScale() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 8)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let base = try readSafetensorsFixture(s.model).tensors
      var rng = SplitMix64(seed: 1)
      let a = rng.gaussianArray(count: 2 * 32, scale: 0.1)
      let b = rng.gaussianArray(count: 96 * 2, scale: 0.1)
      try writeSafetensors(
        [
          FixtureTensor(name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [2, 32], floats: a),
          FixtureTensor(name: "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", shape: [96, 2], floats: b),
        ], to: dir.appendingPathComponent("lora.safetensors"))
      // No adapter_config.json: the scale lora_alpha/r is unknown, so mvc refuses to guess.
      let refused = s.expectRefused(
        ["commit", "--delta", "lora.safetensors", "-m", "lora, no config"], naming: ["lora.safetensors"])
      #expect(refused.stderr.contains("adapter_config.json") && refused.stderr.contains("--scale"), "\(refused.stderr)")
      let result = runMVC(["commit", "--delta", "lora.safetensors", "--scale", "1", "-m", "lora, no config"], in: dir)
      #expect(result.stderr.contains("LoRA scale lora_alpha/r = 1.0 (from --scale)"), "\(result.stderr)")
      expectSuccess(result)
      try Self.expectApplied(
        "model.layers.0.mlp.up_proj.weight", working: s.model, base: base,
        delta: Self.product(b, a, rows: 96, rank: 2, cols: 32, scale: 1))
    }
  }

  @Test func denseDeltas() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 9)
      try s.writeModel(blocks: 2, hidden: 64, intermediate: 256)
      try s.initialize()
      let base = try readSafetensorsFixture(s.model).tensors
      var rng = SplitMix64(seed: 123)
      // A rank-3 delta for down_proj (64×256), a full-rank one for up_proj (256×64).
      let b = rng.gaussianArray(count: 64 * 3, scale: 0.05)
      let a = rng.gaussianArray(count: 3 * 256, scale: 0.05)
      let lowRank = Self.product(b, a, rows: 64, rank: 3, cols: 256, scale: 1).map { Float($0) }
      let fullRank = rng.gaussianArray(count: 256 * 64, scale: 0.001)
      try writeSafetensors(
        [
          FixtureTensor(name: "model.layers.0.mlp.down_proj.weight", shape: [64, 256], floats: lowRank),
          FixtureTensor(name: "model.layers.1.mlp.up_proj.weight", shape: [256, 64], floats: fullRank),
        ], to: dir.appendingPathComponent("dense.safetensors"))

      let result = runMVC(["commit", "--delta", "dense.safetensors", "-m", "dense"], in: dir)
      expectSuccess(result, "commit --delta dense")
      try #require(result.status == 0)
      try Self.expectApplied(
        "model.layers.0.mlp.down_proj.weight", working: s.model, base: base, delta: lowRank.map(Double.init))
      try Self.expectApplied(
        "model.layers.1.mlp.up_proj.weight", working: s.model, base: base, delta: fullRank.map(Double.init))
      #expect(result.stdout.contains("rank 3"), "\(result.stdout)")
      s.expectClean("commit --delta dense")
      s.states.append(try snapshot(s.model))

      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "before the dense delta")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "the dense delta commit")
    }
  }
}

@Suite("commit --delta: orientations, dtypes, shards")
struct DeltaOrientationTests {
  /// GPT-2's Conv1D stores weights in×out; PEFT marks it `fan_in_fan_out: true` and its
  /// delta is `scale · (B·A)ᵀ`, square or not.
  @Test(arguments: [(32, 32), (32, 96)])
  func fanInFanOutConv1D(_ dims: (Int, Int)) throws {
    let (inDim, outDim) = dims
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      var rng = SplitMix64(seed: 31)
      let name = "transformer.h.0.attn.c_proj.weight"
      try writeSafetensors(
        [
          FixtureTensor(
            name: name, shape: [inDim, outDim], floats: rng.gaussianArray(count: inDim * outDim, scale: 0.02)),
          FixtureTensor(
            name: "transformer.h.0.ln_1.weight", shape: [inDim], floats: [Float](repeating: 1, count: inDim)),
        ], to: s.model)
      try s.initialize()
      let base = try readSafetensorsFixture(s.model).tensors
      let a = rng.gaussianArray(count: 4 * inDim, scale: 0.05)  // r × in
      let b = rng.gaussianArray(count: outDim * 4, scale: 0.05)  // out × r
      try Data(#"{"r": 4, "lora_alpha": 16, "fan_in_fan_out": true}"#.utf8)
        .write(to: dir.appendingPathComponent("adapter_config.json"))
      try writeSafetensors(
        [
          FixtureTensor(
            name: "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight", shape: [4, inDim], floats: a),
          FixtureTensor(
            name: "base_model.model.transformer.h.0.attn.c_proj.lora_B.weight", shape: [outDim, 4], floats: b),
        ], to: dir.appendingPathComponent("adapter_model.safetensors"))
      let result = runMVC(["commit", "--delta", "adapter_model.safetensors", "-m", "conv1d lora"], in: dir)
      expectSuccess(result)
      try #require(result.status == 0)
      // (B·A)ᵀ: in × out.
      let ba = DeltaCommitTests.product(b, a, rows: outDim, rank: 4, cols: inDim, scale: 4)
      var transposed = [Double](repeating: 0, count: inDim * outDim)
      for i in 0..<outDim { for j in 0..<inDim { transposed[j * outDim + i] = ba[i * inDim + j] } }
      if inDim == outDim {
        try DeltaCommitTests.expectApplied(name, working: s.model, base: base, delta: transposed)
      } else {
        try DeltaCommitTests.expectApplied(name, working: s.model, base: base, delta: transposed)
      }
    }
  }

  @Test func loraOnBF16Model() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96, dtype: "BF16")
      try s.initialize()
      let base = try readSafetensorsFixture(s.model).tensors
      var rng = SplitMix64(seed: 2)
      let a = rng.gaussianArray(count: 2 * 32, scale: 0.1)
      let b = rng.gaussianArray(count: 96 * 2, scale: 0.1)
      try writeSafetensors(
        [
          FixtureTensor(name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [2, 32], floats: a),
          FixtureTensor(name: "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", shape: [96, 2], floats: b),
        ], to: dir.appendingPathComponent("lora.safetensors"))
      expectSuccess(runMVC(["commit", "--delta", "lora.safetensors", "--scale", "1", "-m", "bf16 lora"], in: dir))
      // One rounding to BF16 of the exact sum: within half a BF16 ulp (2⁻⁸ relative).
      let name = "model.layers.0.mlp.up_proj.weight"
      let before = try #require(base.first { $0.name == name }).decodedFloats
      let after = try DeltaCommitTests.tensor(name, in: s.model).decodedFloats
      let delta = DeltaCommitTests.product(b, a, rows: 96, rank: 2, cols: 32, scale: 1)
      let expected = zip(before, delta).map { Double($0) + $1 }
      for (got, want) in zip(after, expected) {
        #expect(
          Double(got) == Double(floatFromBF16(bf16Bits(Float(want)))) || abs(Double(got) - want) <= abs(want) * 0x1p-8)
      }
      s.states.append(try snapshot(s.model))
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "before")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "after")
    }
  }

  @Test func deltaOnShardedModel() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, modelName: "model")
      try writeShardedModel(
        transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 6), shardCount: 4, to: s.model)
      try s.initialize()
      var rng = SplitMix64(seed: 9)
      let name = "model.layers.1.mlp.down_proj.weight"  // [32, 96]
      let shard = try shardFile(of: name, in: s.model)
      let base = try readSafetensorsFixture(shard).tensors
      let delta = DeltaCommitTests.product(
        rng.gaussianArray(count: 32 * 2, scale: 0.05), rng.gaussianArray(count: 2 * 96, scale: 0.05),
        rows: 32, rank: 2, cols: 96, scale: 1)
      try writeSafetensors(
        [FixtureTensor(name: name, shape: [32, 96], floats: delta.map { Float($0) })],
        to: dir.appendingPathComponent("dense.safetensors"))
      expectSuccess(runMVC(["commit", "--delta", "dense.safetensors", "-m", "dense on shards"], in: dir))
      try DeltaCommitTests.expectApplied(name, working: shard, base: base, delta: delta.map { Double(Float($0)) })
      s.expectClean("delta on shards")
      s.states.append(try snapshot(s.model))
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "before")
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      try s.expectWorkingState(1, "after")
    }
  }
}
