import Foundation
import TestSupport
import Testing

/// `mvc export --lora`, `mvc import --lora` and `--rank` truncation through the binary, checked
/// by an independent numpy implementation of PEFT's merge (`W + lora_alpha/r · B·A`).
@Suite struct ExportTests {
  /// Runs the numpy check script in `dir`: `python3 -c checkScript args…`.
  static func numpyCheck(_ args: [String], in dir: URL) throws -> ProcessOutcome {
    let python = try #require(python3WithNumpy, "\(numpyUnavailableReason)")
    return runProcessOutcome(python, ["-c", checkScript] + args, in: dir)
  }

  /// A repository with the base model and one commit per `(tensor index, rank)` edit.
  static func makeRepository(in dir: URL, edits: [(Int, Int)]) throws {
    let model = dir.appendingPathComponent("model.safetensors")
    var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 11)
    try writeSafetensors(tensors, to: model)
    let initResult = runMVC(["init", "model.safetensors"], in: dir)
    try #require(initResult.status == 0, "\(initResult.stderr)")
    for (step, (index, rank)) in edits.enumerated() {
      applyLowRankEdit(&tensors, index: index, rank: rank, seed: UInt64(100 + step))
      try writeSafetensors(tensors, to: model)
      let r = runMVC(["commit", "-m", "edit \(step)"], in: dir)
      try #require(r.status == 0, "\(r.stderr)")
    }
  }

  /// numpy: a safetensors reader, PEFT's merge with rank_pattern/alpha_pattern, and the checks.
  static let checkScript = #"""
    import json, re, struct, sys
    import numpy as np

    def load(path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        meta = header.pop("__metadata__", None)
        out = {}
        for k, v in header.items():
            assert v["dtype"] == "F32", v
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(data[a:b], dtype="<f4").reshape(v["shape"]).astype(np.float64)
        return out, meta

    def pattern(patterns, module, default):
        for key, value in patterns.items():
            if re.match(r"(.*\.)?(%s)$" % key, module):
                return value
        return default

    def merged(base, adapter_dir):
        weights, meta = load(adapter_dir + "/adapter_model.safetensors")
        config = json.load(open(adapter_dir + "/adapter_config.json"))
        assert meta == {"format": "pt"}, meta
        assert config["peft_type"] == "LORA"
        assert isinstance(config["r"], int) and config["r"] >= 1
        assert config["lora_alpha"] == config["r"]
        assert config["bias"] == "none" and config["task_type"] is None and config["inference_mode"] is True
        assert config["fan_in_fan_out"] is False
        assert isinstance(config["base_model_name_or_path"], str)
        modules = sorted({k[len("base_model.model."):].rsplit(".lora_", 1)[0] for k in weights})
        for k in weights:
            assert re.fullmatch(r"base_model\.model\..+\.lora_[AB]\.weight", k), k
        assert sorted(config["target_modules"]) == modules, (config["target_modules"], modules)
        out = {k: v.copy() for k, v in base.items()}
        for m in modules:
            A = weights["base_model.model.%s.lora_A.weight" % m]
            B = weights["base_model.model.%s.lora_B.weight" % m]
            r = pattern(config.get("rank_pattern", {}), m, config["r"])
            alpha = pattern(config.get("alpha_pattern", {}), m, config["lora_alpha"])
            assert A.shape[0] == r and B.shape[1] == r, (m, A.shape, B.shape, r)
            out[m + ".weight"] = out[m + ".weight"] + (alpha / r) * (B @ A)
        return out, modules

    def relerr(a, b):
        return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)

    mode = sys.argv[1]
    if mode == "merge":
        base, _ = load(sys.argv[2]); end, _ = load(sys.argv[3])
        out, modules = merged(base, sys.argv[4])
        for k in end:
            e = relerr(out[k], end[k])
            assert e < 1e-5, (k, e)
            if k[:-len(".weight")] in modules:
                d = relerr(out[k] - base[k], end[k] - base[k])
                assert d < 1e-4, (k, d)
            else:
                assert np.array_equal(base[k], end[k]), k
        print("ok", len(modules))
    elif mode == "truncation":
        base, _ = load(sys.argv[2]); end, _ = load(sys.argv[3])
        out, modules = merged(base, sys.argv[4])
        printed = float(sys.argv[5])
        assert len(modules) == 1
        k = modules[0] + ".weight"
        D = end[k] - base[k]
        U, s, Vt = np.linalg.svd(D, full_matrices=False)
        assert s[1] > 1e-3 * s[0] and s[2] < 1e-4 * s[0], s[:4]
        best = s[0] * np.outer(U[:, 0], Vt[0])
        got = out[k] - base[k]
        assert relerr(got, best) < 1e-5, relerr(got, best)
        expected = np.sqrt(np.sum(s[1:] ** 2)) / np.sqrt(np.sum(s ** 2))
        assert abs(printed - expected) < 1e-5, (printed, expected)
        print("ok", printed, expected)
    """#

  // The numpy implementation of PEFT's merge is the independent check these two tests stand on:
  // without numpy they are skipped (and say why), never passed.
  @Test(.enabled(if: python3WithNumpy != nil, Comment(rawValue: numpyUnavailableReason)))
  func exportedAdapterMergesToTheRangeEndAndImportsBack() throws {
    try withTemporaryDirectory { dir in
      // Five edits, rank 1 and 4, over three tensors (two edits on up_proj of block 0).
      try Self.makeRepository(in: dir, edits: [(1, 1), (4, 4), (0, 1), (1, 4), (3, 1)])
      let export = runMVC(
        ["export", "--lora", "adapter", "--base-model", "fixture/tiny"], in: dir)
      try #require(export.status == 0, "\(export.stderr)")
      #expect(export.stdout.hasPrefix("exported 4 tensors of "))
      #expect(
        export.stdout.contains("model.layers.0.mlp.down_proj.weight  rank 5  factors of 2 commits"))
      #expect(export.stderr.contains("omit the per-commit residuals"))

      let config = try #require(
        try JSONSerialization.jsonObject(
          with: Data(contentsOf: dir.appendingPathComponent("adapter/adapter_config.json")))
          as? [String: Any])
      #expect(config["peft_type"] as? String == "LORA")
      #expect(config["r"] as? Int == 5)
      #expect(config["lora_alpha"] as? Int == 5)
      #expect(config["base_model_name_or_path"] as? String == "fixture/tiny")
      #expect((config["rank_pattern"] as? [String: Int])?["model.layers.0.mlp.up_proj"] == 1)

      // The range's end as mvc checks it out, and its start.
      #expect(runMVC(["checkout", "HEAD", "-o", "end.safetensors"], in: dir).status == 0)
      let root = runMVC(["checkout", "HEAD~5", "-o", "base.safetensors"], in: dir)
      try #require(root.status == 0, "\(root.stderr)")
      let merged = try Self.numpyCheck(["merge", "base.safetensors", "end.safetensors", "adapter"], in: dir)
      #expect(merged.status == 0, "\(merged.stderr)")
      #expect(merged.stdout.hasPrefix("ok 4"))

      // The reverse: import the folder on a branch at the base.
      let switched = runMVC(["switch", "-c", "imported", "HEAD~5"], in: dir)
      try #require(switched.status == 0, "\(switched.stderr)")
      let imported = runMVC(
        ["import", "--lora", "adapter", "-m", "import adapter"], in: dir)
      try #require(imported.status == 0, "\(imported.stderr)")
      #expect(imported.stdout.contains("model.layers.1.mlp.down_proj.weight"))
      // base + adapter, merged by numpy, against mvc's import of it: same model within rounding.
      let reimported = try Self.numpyCheck(["merge", "base.safetensors", "model.safetensors", "adapter"], in: dir)
      #expect(reimported.status == 0, "\(reimported.stderr)")
      #expect(reimported.stdout.hasPrefix("ok 4"))
      let log = runMVC(["show", "HEAD"], in: dir)
      #expect(log.stdout.contains("lora-import"))
    }
  }

  @Test(.enabled(if: python3WithNumpy != nil, Comment(rawValue: numpyUnavailableReason)))
  func rankOneOfARankTwoRangeIsTheOptimalTruncation() throws {
    try withTemporaryDirectory { dir in
      try Self.makeRepository(in: dir, edits: [(3, 1), (1, 1), (1, 1)])
      let export = runMVC(
        ["export", "--lora", "adapter", "HEAD~2..HEAD", "--rank", "1"], in: dir)
      try #require(export.status == 0, "\(export.stderr)")
      let line = try #require(
        export.stdout.split(separator: "\n").first { $0.contains("rank 1 of 2") })
      let field = try #require(line.range(of: "relative Frobenius error "))
      let printed = try #require(Double(line[field.upperBound...].split(separator: " ")[0]))
      #expect(printed > 0)
      #expect(!export.stdout.contains("layers.1.mlp.up_proj"))  // outside the range
      #expect(
        runMVC(["checkout", "HEAD~2", "-o", "from.safetensors"], in: dir).status == 0)
      let check = try Self.numpyCheck(
        ["truncation", "from.safetensors", "model.safetensors", "adapter", "\(printed)"], in: dir)
      #expect(check.status == 0, "\(check.stderr)")
      #expect(check.stdout.hasPrefix("ok "))
    }
  }

  @Test func denseDeltaExportIsReadBackByCommitDelta() throws {
    try withTemporaryDirectory { dir in
      try Self.makeRepository(in: dir, edits: [(1, 1), (0, 4)])
      let export = runMVC(["export", "--delta", "d.safetensors", "--dense"], in: dir)
      try #require(export.status == 0, "\(export.stderr)")
      let factors = runMVC(["export", "--delta", "f.safetensors", "HEAD~1.."], in: dir)
      try #require(factors.status == 0, "\(factors.stderr)")
      let header = try Data(contentsOf: dir.appendingPathComponent("f.safetensors"))
      let text = String(decoding: header.prefix(400), as: UTF8.self)
      #expect(text.contains("model.layers.0.mlp.up_proj.weight.delta_u"))
      #expect(text.contains("model.layers.0.mlp.up_proj.weight.delta_v"))
      #expect(!text.contains("down_proj"))
      let switched = runMVC(["switch", "-c", "again", "HEAD~2"], in: dir)
      try #require(switched.status == 0, "\(switched.stderr)")
      let commit = runMVC(["commit", "-m", "replay", "--delta", "d.safetensors"], in: dir)
      #expect(commit.status == 0, "\(commit.stderr)")
      let diff = runMVC(["diff", "main", "again"], in: dir)
      #expect(diff.status == 0)
    }
  }

  @Test func aDenseHighRankChangeIsRefusedAndNothingIsWritten() throws {
    try withTemporaryDirectory { dir in
      // Rank 16 on a 32×96 matrix is above the factor break-even: the commit stores it full,
      // so export factorizes W_TO − W_FROM, finds it is not low-rank, and refuses.
      try Self.makeRepository(in: dir, edits: [(1, 16)])
      let r = runMVC(["export", "--lora", "adapter"], in: dir)
      #expect(r.status == 128)
      #expect(r.stdout.isEmpty)
      #expect(
        r.stderr.hasPrefix("fatal: tensor 'model.layers.0.mlp.down_proj.weight': the difference"))
      #expect(r.stderr.contains("is not low-rank"))
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("adapter").path))
    }
  }

  @Test func importRefusesTargetModulesTheModelLacks() throws {
    try withTemporaryDirectory { dir in
      try Self.makeRepository(in: dir, edits: [(1, 1)])
      #expect(runMVC(["export", "--lora", "adapter"], in: dir).status == 0)
      let configURL = dir.appendingPathComponent("adapter/adapter_config.json")
      var config = try #require(
        try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as? [String: Any])
      config["target_modules"] = ["model.layers.0.mlp.down_proj", "q_proj"]
      try JSONSerialization.data(withJSONObject: config).write(to: configURL)
      #expect(runMVC(["switch", "-c", "other", "HEAD~1"], in: dir).status == 0)
      let before = runMVC(["log", "--oneline"], in: dir).stdout
      let r = runMVC(["import", "--lora", "adapter", "-m", "x"], in: dir)
      #expect(r.status == 128)
      #expect(r.stderr.hasPrefix("fatal: delta '"))
      #expect(r.stderr.contains("'q_proj': target module matches no weight of the model"))
      #expect(runMVC(["log", "--oneline"], in: dir).stdout == before)
    }
  }

  @Test func completionScriptsAreGenerated() throws {
    try withTemporaryDirectory { dir in
      for shell in ["bash", "zsh", "fish"] {
        let r = runMVC(["completion", shell], in: dir)
        #expect(r.status == 0)
        #expect(r.stdout.contains("export"))
      }
      #expect(runMVC(["completion", "tcsh"], in: dir).status == 129)
    }
  }
}
