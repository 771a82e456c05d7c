import Foundation
import TestSupport
import Testing

/// Every bad input: exit 128, `fatal: ` naming the file, tensor or revision, nothing changed.
@Suite("bad input")
struct BadInputTests {
  enum Damage: String, CaseIterable, CustomTestStringConvertible {
    case truncated, corruptHeaderJSON, headerLongerThanFile, tooShort

    var testDescription: String { rawValue }

    func apply(to url: URL) throws {
      var bytes = [UInt8](try Data(contentsOf: url))
      switch self {
      case .truncated:
        bytes.removeLast(bytes.count / 3)
      case .corruptHeaderJSON:
        bytes[8] = UInt8(ascii: "[")  // '{' → '[': not an object
        bytes[9] = UInt8(ascii: "x")
      case .headerLongerThanFile:
        let n = UInt64(bytes.count + 1000)
        for i in 0..<8 { bytes[i] = UInt8(truncatingIfNeeded: n >> (8 * UInt64(i))) }
      case .tooShort:
        bytes = Array(bytes.prefix(5))
      }
      try Data(bytes).write(to: url)
    }
  }

  @Test(arguments: Damage.allCases)
  func damagedModelAtInit(_ damage: Damage) throws {
    try withTemporaryDirectory { dir in
      let s = Scenario(dir: dir)
      try s.writeModel()
      try damage.apply(to: s.model)
      let before = treeHash(of: dir, excluding: [])
      let result = runMVC(["init", "model.safetensors"], in: dir)
      expectFatal(result, naming: ["model.safetensors"])
      #expect(!FileManager.default.fileExists(atPath: s.repository.path), ".mvc left behind")
      #expect(treeHash(of: dir, excluding: []) == before, "init changed the folder")
    }
  }

  @Test(arguments: Damage.allCases)
  func damagedModelAtCommit(_ damage: Damage) throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(1)
      try damage.apply(to: s.model)
      s.expectRefused(["commit", "-m", "broken"], naming: ["model.safetensors"])
      s.expectRefused(["checkout", "HEAD~1"], naming: ["model.safetensors"])
      // --force rewrites a damaged working model from the repository.
      expectSuccess(runMVC(["checkout", "--force", "HEAD"], in: dir), "checkout --force HEAD")
      try s.expectWorkingState(1, "repaired by checkout --force")
    }
  }

  @Test func deltaShapeMismatch() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let name = "model.layers.0.mlp.up_proj.weight"  // [96, 32]
      try writeSafetensors(
        [FixtureTensor(name: name, shape: [32, 96], floats: [Float](repeating: 0.01, count: 96 * 32))],
        to: dir.appendingPathComponent("delta.safetensors"))
      s.expectRefused(["commit", "--delta", "delta.safetensors", "-m", "bad"], naming: [name, "delta.safetensors"])

      // A LoRA pair whose product has the wrong shape.
      try writeSafetensors(
        [
          FixtureTensor(
            name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [2, 31],
            floats: [Float](repeating: 0.1, count: 62)),
          FixtureTensor(
            name: "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", shape: [96, 2],
            floats: [Float](repeating: 0.1, count: 192)),
        ], to: dir.appendingPathComponent("lora.safetensors"))
      s.expectRefused(["commit", "--delta", "lora.safetensors", "--scale", "1", "-m", "bad"], naming: [name])
    }
  }

  @Test func deltaNamesUnknownTensor() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let name = "model.layers.9.mlp.up_proj.weight"
      try writeSafetensors(
        [FixtureTensor(name: name, shape: [96, 32], floats: [Float](repeating: 0.01, count: 96 * 32))],
        to: dir.appendingPathComponent("delta.safetensors"))
      s.expectRefused(["commit", "--delta", "delta.safetensors", "-m", "bad"], naming: [name])
      try writeSafetensors(
        [
          FixtureTensor(
            name: "base_model.model.model.layers.9.mlp.up_proj.lora_A.weight", shape: [2, 32],
            floats: [Float](repeating: 0.1, count: 64)),
          FixtureTensor(
            name: "base_model.model.model.layers.9.mlp.up_proj.lora_B.weight", shape: [96, 2],
            floats: [Float](repeating: 0.1, count: 192)),
        ], to: dir.appendingPathComponent("lora.safetensors"))
      s.expectRefused(["commit", "--delta", "lora.safetensors", "--scale", "1", "-m", "bad"], naming: [name])
      s.expectRefused(["commit", "--delta", "missing.safetensors", "-m", "bad"], naming: ["missing.safetensors"])
      // An empty delta file.
      try writeSafetensors([], to: dir.appendingPathComponent("empty.safetensors"))
      s.expectRefused(["commit", "--delta", "empty.safetensors", "-m", "bad"], naming: ["empty.safetensors"])
    }
  }

  @Test func loraWithoutB() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try writeSafetensors(
        [
          FixtureTensor(
            name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [2, 32],
            floats: [Float](repeating: 0.1, count: 64))
        ],
        to: dir.appendingPathComponent("lora.safetensors"))
      let result = s.expectRefused(
        ["commit", "--delta", "lora.safetensors", "--scale", "1", "-m", "bad"],
        naming: ["model.layers.0.mlp.up_proj", "lora.safetensors"])
      #expect(result.stderr.contains("lora_B"), "\(result.stderr)")
    }
  }

  @Test func badAdapterConfig() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try writeSafetensors(
        [
          FixtureTensor(
            name: "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", shape: [2, 32],
            floats: [Float](repeating: 0.1, count: 64)),
          FixtureTensor(
            name: "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight", shape: [96, 2],
            floats: [Float](repeating: 0.1, count: 192)),
        ], to: dir.appendingPathComponent("lora.safetensors"))
      try Data("{not json".utf8).write(to: dir.appendingPathComponent("adapter_config.json"))
      s.expectRefused(["commit", "--delta", "lora.safetensors", "-m", "bad"], naming: ["adapter_config.json"])
      try Data(#"{"r": 0, "lora_alpha": 8}"#.utf8).write(to: dir.appendingPathComponent("adapter_config.json"))
      s.expectRefused(["commit", "--delta", "lora.safetensors", "-m", "bad"], naming: ["adapter_config.json"])
    }
  }

  enum LayoutChange: String, CaseIterable, CustomTestStringConvertible {
    case dtype, shape
    var testDescription: String { rawValue }
  }

  @Test(arguments: LayoutChange.allCases)
  func workingTensorChangedDTypeOrShape(_ change: LayoutChange) throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      var tensors = try readSafetensorsFixture(s.model).tensors
      let name = "model.layers.1.mlp.down_proj.weight"  // F32 [32, 96]
      let index = try #require(tensors.firstIndex { $0.name == name })
      let t = tensors[index]
      switch change {
      case .dtype: tensors[index] = FixtureTensor(name: name, dtype: "BF16", shape: t.shape, floats: t.floats)
      case .shape: tensors[index] = FixtureTensor(name: name, dtype: "F32", shape: [96, 32], bytes: t.bytes)
      }
      try writeSafetensors(tensors, to: s.model)
      s.expectRefused(["commit", "-m", "changed layout"], naming: [name])
      s.expectRefused(["status"], naming: [name])
      s.expectRefused(["checkout", "main"], naming: [name])
    }
  }

  @Test func unknownRevision() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(2)
      for revision in ["nosuch", "HEAD~40", "0123456789abcdef0123456789abcdef01234567", "main^^^^"] {
        let result = s.expectRefused(["checkout", revision], naming: ["'\(revision)'"])
        #expect(result.stderr.contains("3 commits"), "\(result.stderr)")
        s.expectRefused(["checkout", revision, "-o", "out.safetensors"], naming: ["'\(revision)'"])
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out.safetensors").path))
        s.expectRefused(["show", revision], naming: ["'\(revision)'"])
        s.expectRefused(["log", revision], naming: ["'\(revision)'"])
        s.expectRefused(["branch", "x", revision], naming: ["'\(revision)'"])
        s.expectRefused(["tag", "t", revision], naming: ["'\(revision)'"])
      }
    }
  }

  @Test func outsideAnyRepository() throws {
    try withTemporaryDirectory { dir in
      let s = Scenario(dir: dir)
      try s.writeModel()
      let before = treeHash(of: dir, excluding: [])
      for args in [["status"], ["commit", "-m", "x"], ["log"], ["checkout", "HEAD"], ["branch"], ["show"]] {
        let result = runMVC(args, in: dir)
        expectFatal(result, naming: ["not an mvc repository", dir.lastPathComponent])
        #expect(result.stderr.contains("hint: "), "\(args): \(result.stderr)")
      }
      #expect(treeHash(of: dir, excluding: []) == before)
    }
  }

  @Test func initTwice() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      s.expectRefused(["init", "model.safetensors"], naming: [".mvc"])
    }
  }

  @Test func initMissingOrOutsideModel() throws {
    try withTemporaryDirectory { dir in
      let before = treeHash(of: dir, excluding: [])
      expectFatal(runMVC(["init", "nothere.safetensors"], in: dir), naming: ["nothere.safetensors"])
      expectFatal(runMVC(["init", "/etc/hostname"], in: dir), naming: ["/etc/hostname"])
      #expect(treeHash(of: dir, excluding: []) == before)
      #expect(runMVC(["frobnicate"], in: dir).status == 129)
      #expect(runMVC(["checkout"], in: dir).status == 129)
    }
  }

  /// The harness's own rule: a `fatal:` line that no `hint:` line follows fails the test that ran it.
  @Test func aFatalLineWithoutAHintIsAnIssue() {
    withKnownIssue {
      checkDiagnosticsAreReadable("fatal: something failed\n", command: ["mvc", "status"])
    }
    checkDiagnosticsAreReadable("fatal: something failed\nhint: do this\n", command: ["mvc", "status"])
  }
}
