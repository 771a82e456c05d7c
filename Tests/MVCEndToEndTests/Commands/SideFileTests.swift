import Foundation
import TestSupport
import Testing

/// The Hugging Face model folder: the files `from_pretrained` reads beside the weights
/// (`config.json`, `tokenizer*`, ...) are tracked, carried by branches and written by checkout,
/// `-o DIR/` gives a loadable folder, `mvc init .` works inside the folder, and a folder re-saved
/// in another layout is refused with a hint rather than misread.
@Suite struct SideFileTests {
  static let config = Array(#"{"model_type": "gpt2", "n_layer": 1}"#.utf8)
  static let tokenizer = Array(#"{"version": "1.0", "model": {"type": "BPE"}}"#.utf8)

  /// A folder holding `model.safetensors`, `config.json`, `tokenizer.json` and an untracked
  /// `notes.txt`, as `save_pretrained` and a user would leave it.
  static func modelFolder(_ folder: URL) throws {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try writeSafetensors(
      transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 3),
      to: folder.appendingPathComponent("model.safetensors"))
    try Data(config).write(to: folder.appendingPathComponent("config.json"))
    try Data(tokenizer).write(to: folder.appendingPathComponent("tokenizer.json"))
    try Data("mine".utf8).write(to: folder.appendingPathComponent("notes.txt"))
  }

  static func git(_ repository: URL, _ args: [String], input: String? = nil) throws -> String {
    let result = runProcessOutcome(
      gitExecutable ?? URL(fileURLWithPath: "/usr/bin/git"),
      ["--git-dir=\(repository.appendingPathComponent(".mvc").path)"] + args, in: repository,
      environment: [
        "GIT_AUTHOR_NAME": "Mallory", "GIT_AUTHOR_EMAIL": "m@example.com", "GIT_COMMITTER_NAME": "Mallory",
        "GIT_COMMITTER_EMAIL": "m@example.com",
      ], input: input.map { Data($0.utf8) })
    guard result.status == 0 else { throw FixtureError("git \(args.joined(separator: " ")): \(result.stderr)") }
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  static func bytes(_ url: URL) -> [UInt8]? { FileManager.default.contents(atPath: url.path).map { [UInt8]($0) } }

  /// `init .` in a single-file folder tracks model.safetensors and its side files; a branch
  /// carries a config change that commit picks up and switch/checkout rewrite; `-o DIR/` writes
  /// a folder with the side files, `-o FILE` the weights alone; other files are untracked.
  @Test func aBranchCarriesAConfigChange() throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("gpt2")
      try Self.modelFolder(folder)
      expectSuccess(runMVC(["init", "-q", "."], in: folder), "init .")
      #expect(try Self.git(folder, ["config", "mvc.model"]) == "model.safetensors")
      #expect(try Self.git(folder, ["ls-tree", "--name-only", "main:files"]) == "config.json\ntokenizer.json")
      #expect(try Self.git(folder, ["cat-file", "blob", "main:mvc-format"]) == "mvc repository format 2")
      let clean = runMVC(["status"], in: folder)
      expectSuccess(clean)
      #expect(clean.stdout.contains("nothing to commit"), "\(clean.stdout)")
      #expect(clean.stdout.contains("Untracked files") && clean.stdout.contains("  notes.txt"), "\(clean.stdout)")

      expectSuccess(runMVC(["branch", "cfg"], in: folder))
      expectSuccess(runMVC(["switch", "cfg"], in: folder))
      let edited = Array(#"{"model_type": "gpt2", "n_layer": 1, "use_cache": false}"#.utf8)
      try Data(edited).write(to: folder.appendingPathComponent("config.json"))
      let dirty = runMVC(["status", "--json"], in: folder)
      let json = try #require(try JSONSerialization.jsonObject(with: Data(dirty.stdout.utf8)) as? [String: Any])
      #expect(json["clean"] as? Bool == false)
      let files = try #require(json["files"] as? [[String: Any]])
      #expect(files.count == 1 && files[0]["name"] as? String == "config.json")
      #expect(files.first?["change"] as? String == "modified")
      #expect(json["untracked"] as? [String] == ["notes.txt"])
      // A changed side file is an uncommitted change: switching away is refused.
      expectFatal(runMVC(["switch", "main"], in: folder), naming: ["config.json"])
      expectSuccess(runMVC(["commit", "-q", "-m", "no cache"], in: folder), "commit of config.json")
      #expect(
        try Self.git(folder, ["cat-file", "blob", "cfg:files/config.json"]) == String(decoding: edited, as: UTF8.self))

      expectSuccess(runMVC(["switch", "main"], in: folder))
      #expect(Self.bytes(folder.appendingPathComponent("config.json")) == Self.config)
      #expect(Self.bytes(folder.appendingPathComponent("notes.txt")) == Array("mine".utf8))
      expectSuccess(runMVC(["checkout", "cfg"], in: folder))
      #expect(Self.bytes(folder.appendingPathComponent("config.json")) == edited)

      // -o DIR/: a folder from_pretrained loads; untracked files stay behind.
      let out = dir.appendingPathComponent("out")
      expectSuccess(runMVC(["checkout", "main", "-o", out.path + "/"], in: folder))
      #expect(
        Set((try? FileManager.default.contentsOfDirectory(atPath: out.path)) ?? [])
          == ["model.safetensors", "config.json", "tokenizer.json"])
      expectSameBytes(
        out.appendingPathComponent("model.safetensors"), folder.appendingPathComponent("model.safetensors"))
      #expect(Self.bytes(out.appendingPathComponent("config.json")) == Self.config)
      // An existing folder is a folder too; the side files follow the revision.
      expectSuccess(runMVC(["checkout", "cfg", "-o", out.path], in: folder))
      #expect(Self.bytes(out.appendingPathComponent("config.json")) == edited)
      // -o FILE: the weights alone, as before.
      let file = dir.appendingPathComponent("copy.safetensors")
      expectSuccess(runMVC(["checkout", "main", "-o", file.path], in: folder))
      expectSameBytes(file, folder.appendingPathComponent("model.safetensors"))
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("config.json").path))
    }
  }

  /// A single-file folder saved again in shards (the old model.safetensors left beside the new
  /// index): refused with a hint, not reported clean.
  @Test func aSingleFileFolderResavedInShards() throws {
    try withTemporaryDirectory { dir in
      try Self.modelFolder(dir)
      expectSuccess(runMVC(["init", "-q", "."], in: dir))
      try writeShardedModel(transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 5), shardCount: 2, to: dir)
      let status = runMVC(["status"], in: dir)
      expectFatal(status, naming: ["does not match its shard index", "model.safetensors.index.json"])
      #expect(status.stderr.contains("hint: "), "\(status.stderr)")
    }
  }

  /// A tracked side file over the cap in the working folder: refused before it is read, nothing
  /// committed; `init` refuses before `.mvc` is created.
  @Test func anOversizedSideFileIsRefused() throws {
    try withTemporaryDirectory { dir in
      try Self.modelFolder(dir)
      let big = dir.appendingPathComponent("tokenizer.model")
      try Data(count: (64 << 20) + 1).write(to: big)
      let refusedInit = runMVC(["init", "-q", "."], in: dir)
      expectFatal(refusedInit, naming: ["tokenizer.model", "67108865 bytes"])
      #expect(refusedInit.stderr.contains("hint: "), "\(refusedInit.stderr)")
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent(".mvc").path))
      try FileManager.default.removeItem(at: big)
      expectSuccess(runMVC(["init", "-q", "."], in: dir))
      let head = try Self.git(dir, ["rev-parse", "main"])
      try Data(count: (64 << 20) + 1).write(to: big)
      expectFatal(runMVC(["status"], in: dir), naming: ["tokenizer.model"])
      expectFatal(runMVC(["commit", "-q", "-m", "big"], in: dir), naming: ["tokenizer.model"])
      #expect(try Self.git(dir, ["rev-parse", "main"]) == head)
    }
  }

  /// A model without side files still writes format-2 commits since its full states use chunk
  /// encoding 2 (issue 14). A config.json added later (or beside a repository made before side files were tracked) is a
  /// new file: status lists it, moves keep it, commit records it (format 2); a checkout of a
  /// commit without it then removes it, as git removes a tracked file.
  @Test func aSideFileAddedToAFormatOneRepository() throws {
    try withTemporaryDirectory { dir in
      try HostileRepositoryTests.smallRepository(at: dir)
      #expect(try Self.git(dir, ["cat-file", "blob", "main:mvc-format"]) == "mvc repository format 2")
      expectSuccess(runMVC(["branch", "other"], in: dir))
      let config = dir.appendingPathComponent("config.json")
      try Data(Self.config).write(to: config)
      let status = runMVC(["status"], in: dir)
      expectSuccess(status)
      #expect(status.stdout.contains("added     config.json  (file)"), "\(status.stdout)")
      expectSuccess(runMVC(["switch", "other"], in: dir), "a new side file does not block a move")
      #expect(Self.bytes(config) == Self.config)
      expectSuccess(runMVC(["commit", "-q", "-m", "track the config"], in: dir))
      #expect(try Self.git(dir, ["cat-file", "blob", "other:mvc-format"]) == "mvc repository format 2")
      // The parent has no files/ tree: the side files are per commit.
      #expect(try Self.git(dir, ["cat-file", "-p", "other~1^{tree}"]).contains("\tfiles") == false)
      expectSuccess(runMVC(["switch", "main"], in: dir))
      #expect(!FileManager.default.fileExists(atPath: config.path))
      // A new file the target would overwrite with other bytes is refused, and kept.
      try Data("{}".utf8).write(to: config)
      expectFatal(runMVC(["switch", "other"], in: dir), naming: ["config.json"])
      #expect(Self.bytes(config) == Array("{}".utf8))
      try FileManager.default.removeItem(at: config)
      expectSuccess(runMVC(["switch", "other"], in: dir))
      #expect(Self.bytes(config) == Self.config)
    }
  }

  /// `init .` inside a sharded folder: `.mvc` lives in the model folder; `-o DIR` writes the
  /// shards, the index and the side files.
  @Test func initDotInAShardedFolder() throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("llama")
      try writeShardedModel(
        transformerFixture(blocks: 2, hidden: 8, intermediate: 16, seed: 4), shardCount: 2, to: folder)
      try Data(Self.config).write(to: folder.appendingPathComponent("config.json"))
      expectSuccess(runMVC(["init", "-q", "."], in: folder), "init . in a sharded folder")
      #expect(try Self.git(folder, ["config", "mvc.model"]) == ".")
      let status = runMVC(["status"], in: folder)
      expectSuccess(status)
      #expect(status.stdout.contains("nothing to commit") && !status.stdout.contains("Untracked"), "\(status.stdout)")
      let out = dir.appendingPathComponent("out")
      expectSuccess(runMVC(["checkout", "HEAD", "-o", out.path], in: folder))
      for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) where !name.hasPrefix(".") {
        expectSameBytes(out.appendingPathComponent(name), folder.appendingPathComponent(name), name)
      }

      // Re-saved as one file beside the stale index: refused with a hint, never misread.
      try writeSafetensors(
        transformerFixture(blocks: 2, hidden: 8, intermediate: 16, seed: 4),
        to: folder.appendingPathComponent("model.safetensors"))
      for shard in 1...2 {
        try FileManager.default.removeItem(
          at: folder.appendingPathComponent(String(format: "model-%05d-of-00002.safetensors", shard)))
      }
      let stale = runMVC(["status"], in: folder)
      expectFatal(stale, naming: ["does not match its shard index", "model-00001-of-00002.safetensors"])
      #expect(stale.stderr.contains("hint: "), "\(stale.stderr)")
    }
  }

  /// A commit whose `files/` tree names `..`, `.mvc` or an untracked name, or holds a side file
  /// over the cap, is refused (`fatal:` and `hint:`) before anything is written.
  @Test(arguments: ["dotdot", "mvc-config", "other-name", "oversized"])
  func hostileSideFilesAreRefused(_ kind: String) throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("repo")
      try Self.modelFolder(folder)
      expectSuccess(runMVC(["init", "-q", "model.safetensors"], in: folder))
      let payload = try Self.git(folder, ["hash-object", "-w", "--stdin"], input: "owned\n")
      let filesLine: String
      switch kind {
      case "dotdot":
        let inner = try Self.git(folder, ["mktree"], input: "100644 blob \(payload)\tx\n")
        filesLine = "040000 tree \(inner)\t..\n"
      case "mvc-config":
        let inner = try Self.git(folder, ["mktree"], input: "100644 blob \(payload)\tconfig\n")
        filesLine = "040000 tree \(inner)\t.mvc\n"
      case "other-name":
        filesLine = "100644 blob \(payload)\trun.sh\n"
      default:
        let big = dir.appendingPathComponent("big")
        try Data(count: (64 << 20) + 1).write(to: big)
        let id = try Self.git(folder, ["hash-object", "-w", big.path])
        filesLine = "100644 blob \(id)\tconfig.json\n"
      }
      let files = try Self.git(folder, ["mktree"], input: filesLine)
      let root = try Self.git(folder, ["ls-tree", "main"]).split(separator: "\n").filter { !$0.hasSuffix("\tfiles") }
      let tree = try Self.git(
        folder, ["mktree"], input: root.joined(separator: "\n") + "\n040000 tree \(files)\tfiles\n")
      let commit = try Self.git(folder, ["commit-tree", tree, "-p", "main", "-m", "forged"])
      _ = try Self.git(folder, ["update-ref", "refs/heads/evil", commit])
      let before = try snapshot(folder.appendingPathComponent("model.safetensors"))
      let configBefore = Self.bytes(folder.appendingPathComponent("config.json"))

      let out = dir.appendingPathComponent("out")
      let materialized = runMVC(["checkout", "evil", "-o", out.path + "/"], in: folder)
      expectFatal(materialized, naming: ["files/"])
      #expect(materialized.stderr.contains("hint: "), "\(materialized.stderr)")
      #expect(!FileManager.default.fileExists(atPath: out.path), "wrote \(out.path)")

      let moved = runMVC(["checkout", "evil"], in: folder)
      expectFatal(moved, naming: ["files/"])
      #expect(try snapshot(folder.appendingPathComponent("model.safetensors")) == before)
      #expect(Self.bytes(folder.appendingPathComponent("config.json")) == configBefore)
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x").path))
      #expect(try Self.git(folder, ["config", "mvc.model"]) == "model.safetensors")
      #expect(try Self.git(folder, ["symbolic-ref", "HEAD"]) == "refs/heads/main")

      let fsck = runMVC(["fsck"], in: folder)
      #expect(fsck.status != 0 && (fsck.stdout + fsck.stderr).contains("files/"), "\(fsck.stdout)\(fsck.stderr)")
    }
  }
}
