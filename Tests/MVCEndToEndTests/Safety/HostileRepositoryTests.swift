import EditVCS
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Repositories written by someone else, as an attacker would write them: commits whose
/// `model/layout.json`, `meta.json` or `edit.json` name paths outside the clone or declare
/// sizes that overflow, served over `git daemon` on loopback and over a path. Every one must
/// end in a clean error (exit 128, a message naming the object), never a signal, a hang or a
/// byte written outside the clone.
@Suite(.serialized) struct HostileRepositoryTests {
  typealias H = RemoteHarness

  // MARK: Building hostile repositories

  /// A published repository: a model, its root commit and two low-rank edits, pushed to a
  /// bare repository `published.git` in `dir`.
  static func publish(in dir: URL, sharded: Bool) throws -> URL {
    let work = dir.appendingPathComponent("author")
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    var tensors = transformerFixture(blocks: 2, hidden: 16, intermediate: 48, seed: 5)
    let modelName = sharded ? "model" : "model.safetensors"
    let model = work.appendingPathComponent(modelName)
    func write() throws {
      if sharded {
        try writeShardedModel(tensors, shardCount: 2, to: model)
      } else {
        try writeSafetensors(tensors, to: model)
      }
    }
    try write()
    try #require(runMVC(["init", "-q", modelName], in: work).status == 0)
    for step in 0..<2 {
      applyLowRankEdit(&tensors, index: 1 + 3 * step, rank: 1, seed: UInt64(40 + step))
      try write()
      let commit = runMVC(["commit", "-q", "-m", "edit \(step)"], in: work)
      try #require(commit.status == 0, "\(commit.stderr)")
    }
    let bare = dir.appendingPathComponent("published.git")
    try #require(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
    try #require(runMVC(["remote", "add", "origin", bare.path], in: work).status == 0)
    let push = runMVC(["push", "-q", "origin", "main"], in: work)
    try #require(push.status == 0, "\(push.stderr)")
    return bare
  }

  /// A one-block model in `folder`, committed by `mvc init`.
  @discardableResult
  static func smallRepository(at folder: URL) throws -> URL {
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    try writeSafetensors(
      transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 3),
      to: folder.appendingPathComponent("model.safetensors"))
    try #require(runMVC(["init", "-q", "model.safetensors"], in: folder).status == 0)
    return folder
  }

  static func git(_ bare: URL, _ args: [String], index: URL? = nil) throws -> String {
    var environment: [String: String] = [:]
    if let index {
      environment["GIT_INDEX_FILE"] = index.path
      // An empty work tree beside the index, which `update-index --force-remove` needs.
      environment["GIT_WORK_TREE"] = index.deletingLastPathComponent().path
    }
    for role in ["AUTHOR", "COMMITTER"] {
      environment["GIT_\(role)_NAME"] = "Mallory"
      environment["GIT_\(role)_EMAIL"] = "mallory@example.com"
      environment["GIT_\(role)_DATE"] = "@1700000100 +0000"
    }
    let result = runProcessOutcome(
      gitExecutable ?? URL(fileURLWithPath: "/usr/bin/git"), ["--git-dir=\(bare.path)"] + args, in: bare,
      environment: environment)
    guard result.status == 0 else { throw FixtureError("git \(args.joined(separator: " ")): \(result.stderr)") }
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// Paths of every blob in the tree of `main`.
  static func paths(_ bare: URL) throws -> [String] {
    try git(bare, ["ls-tree", "-r", "--name-only", "main"]).split(separator: "\n").map(String.init)
  }

  static func blob(_ bare: URL, _ path: String) throws -> [UInt8] {
    Array(try git(bare, ["cat-file", "blob", "main:\(path)"]).utf8)
  }

  /// Replaces the tip of `main` by a commit with the same parents whose tree has `replacements`
  /// (path → new bytes) in place of the originals, as a hostile publisher would.
  static func forge(_ bare: URL, _ replacements: [String: [UInt8]], removing removed: [String] = []) throws {
    let scratch = bare.deletingLastPathComponent().appendingPathComponent("forge-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }
    let index = scratch.appendingPathComponent("index")
    _ = try git(bare, ["read-tree", "main"], index: index)
    for (path, bytes) in replacements {
      let file = scratch.appendingPathComponent("blob")
      try Data(bytes).write(to: file)
      let id = try git(bare, ["hash-object", "-w", file.path])
      _ = try git(bare, ["update-index", "--add", "--cacheinfo", "100644,\(id),\(path)"], index: index)
    }
    for path in removed { _ = try git(bare, ["update-index", "--force-remove", path], index: index) }
    let tree = try git(bare, ["write-tree"], index: index)
    let parents = try git(bare, ["rev-parse", "main^@"]).split(separator: "\n").flatMap { ["-p", String($0)] }
    let commit = try git(bare, ["commit-tree", tree] + parents + ["-m", "forged"])
    _ = try git(bare, ["update-ref", "refs/heads/main", commit])
  }

  static func json(_ bytes: [UInt8]) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
  }

  static func bytes(_ object: Any) throws -> [UInt8] {
    Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
  }

  /// Every regular file under `folder`, relative.
  static func files(under folder: URL) -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return [] }
    return walker.compactMap { $0 as? String }.filter {
      var isDirectory: ObjCBool = false
      return FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path, isDirectory: &isDirectory)
        && !isDirectory.boolValue
    }.sorted()
  }

  /// Clones `url` into `landing/a/b/clone` and checks the outcome is a clean refusal: exit 128
  /// with `expected` in the message, no signal, nothing left in `landing`, `victims` untouched.
  static func expectRefusedClone(
    _ url: String, in dir: URL, expected: String, victims: [String] = [],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let landing = dir.appendingPathComponent("landing-\(UUID().uuidString.prefix(8))")
    let nested = landing.appendingPathComponent("a/b")
    try FileManager.default.createDirectory(at: nested, withIntermediateDirectories: true)
    let result = runMVCOutcome(["clone", "-q", url, "clone"], in: nested, timeout: 60)
    #expect(
      result.signal == nil && !result.timedOut && result.status == 128, "\(result.summary)",
      sourceLocation: sourceLocation)
    #expect(result.stderr.contains(expected), "\(result.stderr)", sourceLocation: sourceLocation)
    #expect(
      !result.stderr.contains("GitError(") && !result.stderr.contains("Optional("), sourceLocation: sourceLocation)
    #expect(files(under: landing).isEmpty, "left behind: \(files(under: landing))", sourceLocation: sourceLocation)
    for victim in victims {
      #expect(!FileManager.default.fileExists(atPath: victim), "wrote '\(victim)'", sourceLocation: sourceLocation)
    }
  }

  static func daemonURL(for bare: URL, in dir: URL, _ body: (String) throws -> Void) throws {
    if let reason = H.gitDaemonUnavailableReason {
      // The path half has run; the test cannot do what it claims without the git:// half, so
      // it ends as skipped, with the reason, rather than passing.
      try Test.cancel("the git:// half needs git daemon: \(reason)")
    }
    let daemon = try H.startGitDaemon(basePath: dir, probe: bare.lastPathComponent)
    defer { daemon.stop() }
    try body(daemon.url(bare.lastPathComponent))
  }

  // MARK: Paths

  /// A layout naming files outside the model folder (the index file, a shard, `.mvc/HEAD`, an
  /// absolute path) is refused before anything is written, over git:// and over a path.
  @Test(arguments: [
    ("index_file", "../../../../escaped-index.json"),
    ("index_file", "/tmp/mvc-hostile-index.json"),
    ("shard", "../.mvc/HEAD"),
    ("shard", "../../../escaped-shard.safetensors"),
    ("shard", "/tmp/mvc-hostile-shard.safetensors"),
    ("shard", ".mvc"),
    ("shard", ".."),
  ])
  func layoutPathsNeverLeaveTheModelFolder(field: String, value: String) throws {
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: true)
      var layout = try Self.json(try Self.blob(bare, "model/layout.json"))
      if field == "index_file" {
        layout["index_file"] = value
      } else {
        var shards = try #require(layout["shards"] as? [[String: Any]])
        shards[0]["file"] = value
        layout["shards"] = shards
      }
      try Self.forge(bare, ["model/layout.json": try Self.bytes(layout)])
      let victims = [
        dir.appendingPathComponent("escaped-index.json").path,
        dir.appendingPathComponent("escaped-shard.safetensors").path,
        "/tmp/mvc-hostile-index.json", "/tmp/mvc-hostile-shard.safetensors",
      ]
      try Self.expectRefusedClone(bare.path, in: dir, expected: "layout.json", victims: victims)
      try Self.daemonURL(for: bare, in: dir) { url in
        try Self.expectRefusedClone(url, in: dir, expected: "layout.json", victims: victims)
      }
    }
  }

  /// A single-file layout whose file name is a path is refused too.
  @Test(arguments: ["../../escaped.safetensors", ".mvc", "sub/model.safetensors", ""])
  func singleFileLayoutNamesOneFile(name: String) throws {
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: false)
      var layout = try Self.json(try Self.blob(bare, "model/layout.json"))
      var shards = try #require(layout["shards"] as? [[String: Any]])
      shards[0]["file"] = name
      layout["shards"] = shards
      try Self.forge(bare, ["model/layout.json": try Self.bytes(layout)])
      try Self.expectRefusedClone(bare.path, in: dir, expected: "layout.json")
    }
  }

  /// `mvc.model` in the local config is confined too: a path leaving the folder, one inside
  /// `.mvc`, or one whose folder is a symlink out are refused, and nothing is written.
  @Test(arguments: [
    "../../outside.safetensors", ".mvc/HEAD", "/tmp/mvc-hostile-config.safetensors", "link/model.safetensors",
  ])
  func configModelPathIsConfined(path: String) throws {
    try withTemporaryDirectory { dir in
      let work = try Self.smallRepository(at: dir.appendingPathComponent("x/y/work"))
      let outside = dir.appendingPathComponent("elsewhere")
      try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
      try FileManager.default.createSymbolicLink(at: work.appendingPathComponent("link"), withDestinationURL: outside)
      let headBefore = try Data(contentsOf: work.appendingPathComponent(".mvc/HEAD"))
      try #require(runGit(["--git-dir=\(work.path)/.mvc", "config", "mvc.model", path], in: work).status == 0)
      let result = runMVCOutcome(["checkout", "--force", "HEAD"], in: work, timeout: 60)
      #expect(result.signal == nil && result.status == 128, "\(result.summary)")
      #expect(result.stderr.contains("mvc.model") || result.stderr.contains("symbolic link"), "\(result.stderr)")
      #expect(try Data(contentsOf: work.appendingPathComponent(".mvc/HEAD")) == headBefore)
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x/outside.safetensors").path))
      #expect(!FileManager.default.fileExists(atPath: "/tmp/mvc-hostile-config.safetensors"))
      #expect(Self.files(under: outside).isEmpty)
    }
  }

  /// A `reference` state names an absolute path on the publisher's machine: a clone never
  /// opens it (here a FIFO, which would hang a reader) unless the user names the base.
  @Test func referencePathFromARemoteIsNotFollowed() throws {
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: false)
      let fifo = dir.appendingPathComponent("fifo")
      try #require(mkfifo(fifo.path, 0o600) == 0)
      let metaPath = try #require(try Self.paths(bare).first { $0.hasSuffix("layernorm.weight/meta.json") })
      var meta = try Self.json(try Self.blob(bare, metaPath))
      meta["kind"] = "reference"
      meta["reference_path"] = fifo.path
      meta["reference_shard_file"] = "model.safetensors"
      try Self.forge(bare, [metaPath: try Self.bytes(meta)])
      try Self.expectRefusedClone(bare.path, in: dir, expected: "stored by reference")
    }
  }

  // MARK: Numbers

  /// Shapes, ranks and counts that overflow or ask for exabytes end in a clean refusal in
  /// `clone`, and in `fsck`, `log`, `show` and `checkout` of a repository that fetched them.
  @Test(arguments: [
    ("full", "shape", "[4611686018427387904, 4]"),
    ("full", "shape", "[2147483648, 2147483648, 4]"),
    ("full", "shape", "[-4, -4]"),
    ("full", "chunk_count", "-1"),
    ("full", "chunk_count", "1000000000000000"),
    ("full", "chunk_byte_count", "1"),
    ("full", "chunk_byte_count", "0"),
    ("full", "shape", "[1073741824, 1]"),
    ("low_rank", "rank", "4611686018427387904"),
    ("low_rank", "rows", "4611686018427387904"),
    ("low_rank", "rows", "-1"),
    ("low_rank", "residual_nonzero_count", "-5"),
    ("edit", "stored_byte_count", "9223372036854775807"),
    ("edit", "rank", "-3"),
    // Not a number, but the hash names the snapshot file: a path in it must not become one.
    ("low_rank", "hash", "\"../../../../pwned\""),
  ])
  func untrustedNumbersEndInCleanErrors(kind: String, field: String, value: String) throws {
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: false)
      // A healthy clone made before the forgery, to fetch the hostile commit into.
      let healthy = dir.appendingPathComponent("healthy")
      try #require(runMVC(["clone", "-q", bare.path, healthy.path], in: dir).status == 0)

      let parsedValue = try JSONSerialization.jsonObject(with: Data(value.utf8), options: [.fragmentsAllowed])
      let path: String
      var object: [String: Any]
      if kind == "edit" {
        path = "edit.json"
        object = try Self.json(try Self.blob(bare, path))
        var changes = try #require(object["changes"] as? [[String: Any]])
        changes[0][field] = parsedValue
        object["changes"] = changes
      } else {
        var found: (String, [String: Any])?
        for candidate in try Self.paths(bare) where candidate.hasSuffix("/meta.json") {
          let meta = try Self.json(try Self.blob(bare, candidate))
          if meta["kind"] as? String == kind {
            found = (candidate, meta)
            break
          }
        }
        (path, object) = try #require(found)
        object[field] = parsedValue
      }
      try Self.forge(bare, [path: try Self.bytes(object)])

      try Self.expectRefusedClone(bare.path, in: dir, expected: "refusing")

      // `mvc fetch` checks what it received and keeps no reference to it ...
      let originBefore = try Self.git(
        healthy.appendingPathComponent(".mvc"), ["rev-parse", "refs/remotes/origin/main"])
      let fetch = runMVCOutcome(["fetch", "-q"], in: healthy, timeout: 60)
      #expect(
        fetch.signal == nil && fetch.status == 128 && fetch.stderr.contains("refusing"), "fetch: \(fetch.summary)")
      #expect(
        try Self.git(healthy.appendingPathComponent(".mvc"), ["rev-parse", "refs/remotes/origin/main"]) == originBefore)
      // ... and a repository that got the commit another way (plain git) still refuses it cleanly.
      _ = try Self.git(
        healthy.appendingPathComponent(".mvc"), ["fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*"])
      let model = healthy.appendingPathComponent("model.safetensors")
      let before = try Data(contentsOf: model)
      for command in [
        ["fsck"], ["log", "--stat", "origin/main"], ["show", "origin/main"], ["checkout", "origin/main"],
        ["fsck", "--full"],
      ] {
        let result = runMVCOutcome(command, in: healthy, timeout: 60)
        #expect(result.signal == nil && !result.timedOut, "\(command): \(result.summary)")
        #expect(
          !result.stderr.contains("GitError(") && !result.stderr.contains("Optional("), "\(command): \(result.stderr)")
        if (command == ["checkout", "origin/main"] && kind != "edit") || command.first == "fsck" {
          #expect(result.status != 0, "\(command) accepted the forged commit: \(result.stdout)")
        }
      }
      #expect(try Data(contentsOf: model) == before, "the working model changed")
      _ = runMVCOutcome(["checkout", "-q", "main"], in: healthy, timeout: 60)
      #expect(!FileManager.default.fileExists(atPath: healthy.appendingPathComponent(".mvc/mvc-journal.json").path))
      let status = runMVCOutcome(["status"], in: healthy, timeout: 60)
      #expect(status.status == 0, "status after: \(status.summary)")
    }
  }

  /// A few-KB repository that declares a 1 GiB tensor (consistent metadata, 16 chunk blobs
  /// whose zstd headers declare 64 MiB each, then garbage) fails at the first chunk having
  /// touched about one chunk of memory, not the declared gigabyte.
  @Test(
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "needs /usr/bin/time (Debian: time)"))
  func declaredSizeIsNotAllocatedBeforeTheDataChecksOut() throws {
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: false)
      let metaPath = try #require(
        try Self.paths(bare).first { $0.hasSuffix("layers.0.post_attention_layernorm.weight/meta.json") })
      var meta = try Self.json(try Self.blob(bare, metaPath))
      let chunk = 64 << 20
      meta["shape"] = [1 << 28]  // F32: 1 GiB
      meta["chunk_byte_count"] = chunk
      meta["chunk_count"] = 16
      // Frame header: magic, single-segment with a 4-byte content size, then a bogus block.
      var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xA0]
      frame += withUnsafeBytes(of: UInt32(chunk).littleEndian, Array.init)
      frame += [0xFF, 0xFF, 0xFF] + Array(repeating: 0xAB, count: 64)
      var replacements = [metaPath: try Self.bytes(meta)]
      // The stored safetensors header must agree, or the clone stops before decoding.
      let tensorName = try #require(meta["name"] as? String)
      let header = try Self.blob(bare, "model/header-0000")
      var entries = try Self.json(Array(header[8...]))
      var offset = 0
      for key in entries.keys.filter({ $0 != "__metadata__" }).sorted(by: {
        ((entries[$0] as? [String: Any])?["data_offsets"] as? [Int])?.first ?? 0
          < ((entries[$1] as? [String: Any])?["data_offsets"] as? [Int])?.first ?? 0
      }) {
        var entry = try #require(entries[key] as? [String: Any])
        let offsets = try #require(entry["data_offsets"] as? [Int])
        let size = key == tensorName ? 1 << 30 : offsets[1] - offsets[0]
        if key == tensorName { entry["shape"] = [1 << 28] }
        entry["data_offsets"] = [offset, offset + size]
        offset += size
        entries[key] = entry
      }
      var json = try Self.bytes(entries)
      while json.count % 8 != 0 { json.append(0x20) }
      replacements["model/header-0000"] = withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json
      let folder = (metaPath as NSString).deletingLastPathComponent
      for i in 0..<16 { replacements[folder + String(format: "/data-%04d.zst", i)] = frame }
      try Self.forge(bare, replacements)
      let landing = dir.appendingPathComponent("landing")
      try FileManager.default.createDirectory(at: landing, withIntermediateDirectories: true)
      let executable = try #require(mvcExecutable)
      let result = runProcessOutcome(
        URL(fileURLWithPath: "/usr/bin/time"),
        ["-f", "peak-rss-kb %M", executable.path, "clone", "-q", bare.path, "clone"],
        in: landing, timeout: 120)
      #expect(result.status == 128 && result.signal == nil, "\(result.summary)")
      let peak = result.stderr.split(separator: "\n").compactMap { line -> Int? in
        line.hasPrefix("peak-rss-kb ") ? Int(line.dropFirst("peak-rss-kb ".count)) : nil
      }.last
      let kilobytes = try #require(peak, "\(result.stderr)")
      print(
        "clone of a repository declaring a 1 GiB tensor: peak RSS \(kilobytes / 1024) MiB, \(result.stderr.prefix(300))"
      )
      #expect(kilobytes < 256 * 1024, "peak RSS \(kilobytes / 1024) MiB for a tensor that failed at its first chunk")
      #expect(Self.files(under: landing).isEmpty)
    }
  }

  // MARK: Seeded mutations

  /// Values a hostile publisher would try in any JSON slot (computed: `[Any]` is not `Sendable`).
  static var hostileValues: [Any] {
    [
      -1, 0, 1, 2_147_483_648, 4_294_967_297, 9_007_199_254_740_993, 4_611_686_018_427_387_904, Int64.max, Int64.min,
      1_000_000_000_000_000, 1e308, -0.5, "", "../../../pwned", "/tmp/mvc-pwned", ".mvc", "..", "model.safetensors",
      String(repeating: "A", count: 5000), "xxh3-128:" + String(repeating: "0", count: 32), [Any](), [Int64.max, 4],
      [-4, -8], [Int](repeating: 1, count: 20), [String: Any](), NSNull(), true,
    ]
  }

  /// Replaces one slot (an object's value, an array element) of `value`, or drops a key.
  static func mutate(_ value: Any, _ rng: inout SplitMix64, depth: Int = 0) -> Any {
    func pick(_ count: Int) -> Int { Int(rng.next() % UInt64(max(count, 1))) }
    if var object = value as? [String: Any], !object.isEmpty, depth < 6 {
      let key = object.keys.sorted()[pick(object.count)]
      switch pick(6) {
      case 0: object[key] = nil
      case 1, 2: object[key] = hostileValues[pick(hostileValues.count)]
      default: object[key] = object[key].map { mutate($0, &rng, depth: depth + 1) }
      }
      return object
    }
    if var array = value as? [Any], !array.isEmpty, depth < 6 {
      let i = pick(array.count)
      switch pick(5) {
      case 0: array.remove(at: i)
      case 1: array.append(array[i])
      case 2: array[i] = hostileValues[pick(hostileValues.count)]
      default: array[i] = mutate(array[i], &rng, depth: depth + 1)
      }
      return array
    }
    return hostileValues[pick(hostileValues.count)]
  }

  /// A seeded loop of mutations over `meta.json`, `edit.json`, `layout.json`, `mvc-format` and
  /// the tree's shape (entries removed, blobs swapped, garbage bytes). Each hostile repository
  /// is cloned over a path; the clone (and, where it succeeds, `fsck --full` and `status` in
  /// it) must end with exit 0 or 128 — no signal, no hang — and write nothing outside it.
  /// `MVC_HOSTILE_MUTATIONS` (default 40) and `MVC_HOSTILE_SEED` set a longer run.
  @Test func seededMutationsEndCleanly() throws {
    let environment = ProcessInfo.processInfo.environment
    let iterations = environment["MVC_HOSTILE_MUTATIONS"].flatMap { Int($0) } ?? 40
    let seed = environment["MVC_HOSTILE_SEED"].flatMap { UInt64($0) } ?? 2026
    try withTemporaryDirectory { dir in
      let bare = try Self.publish(in: dir, sharded: false)
      let original = try Self.git(bare, ["rev-parse", "main"])
      let paths = try Self.paths(bare)
      let jsonPaths = paths.filter { $0.hasSuffix(".json") }
      let dataPaths = paths.filter { !$0.hasSuffix(".json") }
      var rng = SplitMix64(seed: seed)
      var outcomes: [String: Int] = [:]
      let expectedEntries = Set(["author", "published.git"])
      for iteration in 0..<iterations {
        _ = try Self.git(bare, ["update-ref", "refs/heads/main", original])
        var description: String
        switch rng.next() % 10 {
        case 0..<7:
          let path = jsonPaths[Int(rng.next() % UInt64(jsonPaths.count))]
          let mutated = Self.mutate(try JSONSerialization.jsonObject(with: Data(try Self.blob(bare, path))), &rng)
          let bytes =
            (try? JSONSerialization.data(withJSONObject: mutated, options: [.fragmentsAllowed])).map(Array.init)
            ?? Array("{".utf8)
          description = "\(path) := \(String(decoding: bytes, as: UTF8.self).prefix(160))"
          try Self.forge(bare, [path: bytes])
        case 7:
          let path = dataPaths[Int(rng.next() % UInt64(dataPaths.count))]
          description = "removed \(path)"
          try Self.forge(bare, [:], removing: [path])
        case 8:
          let a = dataPaths[Int(rng.next() % UInt64(dataPaths.count))]
          let others = dataPaths.filter { $0 != a }
          let b = others[Int(rng.next() % UInt64(others.count))]
          description = "\(a) <-> \(b)"
          try Self.forge(bare, [a: try Self.blob(bare, b), b: try Self.blob(bare, a)])
        default:
          let path = paths[Int(rng.next() % UInt64(paths.count))]
          var bytes = try Self.blob(bare, path)
          for _ in 0..<(1 + Int(rng.next() % 8)) where !bytes.isEmpty {
            bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
          }
          description = "garbled \(path)"
          try Self.forge(bare, [path: bytes])
        }
        let landing = dir.appendingPathComponent("landing/a/b")
        try FileManager.default.createDirectory(at: landing, withIntermediateDirectories: true)
        let clone = runMVCOutcome(["clone", "-q", bare.path, "clone"], in: landing, timeout: 60)
        #expect(
          clone.signal == nil && !clone.timedOut && [0, 128].contains(clone.status),
          "#\(iteration) \(description): clone \(clone.summary)")
        #expect(
          !clone.stderr.contains("GitError(") && !clone.stderr.contains("Optional("), "#\(iteration): \(clone.stderr)")
        outcomes[clone.status == 0 ? "cloned" : clone.signal == nil ? "refused" : "signal", default: 0] += 1
        if clone.status == 0 {
          for command in [["fsck", "--full"], ["status"], ["log", "--stat"]] {
            let result = runMVCOutcome(command, in: landing.appendingPathComponent("clone"), timeout: 60)
            #expect(
              result.signal == nil && !result.timedOut && [0, 1, 128].contains(result.status),
              "#\(iteration) \(description): \(command) \(result.summary)")
          }
        } else {
          #expect(
            Self.files(under: dir.appendingPathComponent("landing")).isEmpty,
            "#\(iteration) \(description): clone left files")
        }
        try FileManager.default.removeItem(at: dir.appendingPathComponent("landing"))
        let entries = Set(try FileManager.default.contentsOfDirectory(atPath: dir.path))
        #expect(
          entries == expectedEntries, "#\(iteration) \(description): wrote \(entries.subtracting(expectedEntries))")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/mvc-pwned"), "#\(iteration) \(description)")
      }
      print("hostile mutations: \(iterations) (seed \(seed)): \(outcomes.sorted { $0.key < $1.key })")
    }
  }

  // MARK: Deep trees

  /// python3, which writes the deep tree's objects (libgit2, fsync on as mvc opens it, takes
  /// over a minute for 60,000 trees; git's plumbing cannot chain them in bulk).
  static let python: URL? = python3Executable

  /// A tree nested 60,000 deep under a commit: `fsck` walks it without recursion.
  @Test(.enabled(if: python != nil, "needs python3 to write 60,000 tree objects"))
  func deeplyNestedTreeDoesNotOverflowTheStack() throws {
    try withTemporaryDirectory { dir in
      let work = try Self.smallRepository(at: dir.appendingPathComponent("work"))
      let python = try #require(Self.python)
      let script = """
        import hashlib, os, sys, zlib
        objects = sys.argv[1]
        def write(kind, body):
            data = kind + b" " + str(len(body)).encode() + b"\\0" + body
            oid = hashlib.sha1(data).hexdigest()
            folder = os.path.join(objects, oid[:2])
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, oid[2:])
            if not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(zlib.compress(data, 1))
            return oid
        inner = write(b"tree", b"100644 leaf\\0" + bytes.fromhex(write(b"blob", b"x")))
        for _ in range(60000):
            inner = write(b"tree", b"40000 d\\0" + bytes.fromhex(inner))
        print(inner)
        """
      let made = runProcessOutcome(
        python, ["-c", script, work.appendingPathComponent(".mvc/objects").path], in: work, timeout: 120)
      try #require(made.status == 0, "\(made.summary)")
      let deep = try #require(ObjectID(hex: made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
      let headID: String
      do {
        let git = try GitRepository.open(at: work.appendingPathComponent(".mvc").path)
        let head = try git.resolveCommit("HEAD")
        let info = try git.commit(head)
        var root = try git.readTree(info.tree)
        root.append(.init(name: "zz-deep", id: deep, isTree: true))
        let commit = try git.createCommit(
          tree: try git.writeTree(root), parents: [head], message: "deep",
          author: .init(name: "t", email: "t@example.com", time: 1_700_000_000, offsetMinutes: 0))
        try git.forceReference("refs/heads/deep", to: commit, message: "deep")
        headID = commit.hex
      }
      let start = Date()
      let result = runMVCOutcome(["fsck"], in: work, timeout: 300)
      print("fsck of a 60,000-deep tree: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
      #expect(result.signal == nil && !result.timedOut, "fsck: \(result.summary)")
      #expect(result.status == 0, "fsck: \(result.stdout) \(result.stderr) (\(headID))")
    }
  }

  // MARK: Damaged loose objects

  /// A loose object cut short or lying about its size, in the repository itself or in one
  /// cloned from a path: every command ends with an error naming the object, never a hang.
  /// libgit2 1.5 loops forever inflating a loose object whose zlib stream stops early
  /// (libgit2#7342) and writes out of bounds for one whose header declares fewer bytes than it
  /// holds (#7177); `LooseObjectGuard` reads every loose object before libgit2 would.
  @Test func damagedLooseObjectsEndInAnErrorNamingThem() throws {
    try withTemporaryDirectory { dir in
      let work = try Self.smallRepository(at: dir.appendingPathComponent("work"))
      let gitDirectory = work.appendingPathComponent(".mvc")
      let ids = try ["HEAD", "HEAD^{tree}", "HEAD:model/layout.json"].map {
        try Self.git(gitDirectory, ["rev-parse", $0])
      }
      func objectFile(_ id: String, in repository: URL) -> URL {
        repository.appendingPathComponent("objects/\(id.prefix(2))/\(id.dropFirst(2))")
      }
      /// Replaces the object file with `bytes`, runs `body`, and puts the original back.
      func withDamaged(_ id: String, in repository: URL, _ bytes: [UInt8], _ body: () throws -> Void) throws {
        let file = objectFile(id, in: repository)
        let original = try Data(contentsOf: file)
        try FileManager.default.removeItem(at: file)
        try Data(bytes).write(to: file)
        defer {
          try? FileManager.default.removeItem(at: file)
          try? original.write(to: file)
        }
        try body()
      }
      func expectError(_ command: [String], in folder: URL, naming id: String, _ what: String) {
        let result = runMVCOutcome(command, in: folder, timeout: 30)
        #expect(result.signal == nil && !result.timedOut, "\(what): \(command) \(result.summary)")
        #expect([1, 128].contains(result.status), "\(what): \(command) \(result.summary)")
        #expect(result.stderr.contains(id) || result.stdout.contains(id), "\(what): \(command) \(result.summary)")
      }
      for id in ids {
        let stored = Array(try Data(contentsOf: objectFile(id, in: gitDirectory)))
        var damaged: [(String, [UInt8])] = [2, 8, stored.count / 2, stored.count - 1].map {
          ("cut to \($0) of \(stored.count) bytes", Array(stored.prefix($0)))
        }
        let kind = try Self.git(gitDirectory, ["cat-file", "-t", id])
        if kind != "tree" {  // text: the content comes back whole through git's output
          let content = Array(runGit(["--git-dir=\(gitDirectory.path)", "cat-file", kind, id], in: dir).stdout.utf8)
          // The header declares one byte less than follows it, then far more than the file holds.
          for (label, declared) in [("declares one byte less", content.count - 1), ("declares 2^40 bytes", 1 << 40)] {
            damaged.append((label, storedZlib(Array("\(kind) \(declared)\0".utf8) + content, blockSize: 65_535)))
          }
        }
        for (what, bytes) in damaged {
          try withDamaged(id, in: gitDirectory, bytes) {
            // `log` reads commits and trees, not the layout blob; `status` and `fsck` read all three.
            for command in (kind == "blob" ? [] : [["log"]]) + [["status"], ["fsck"]] {
              expectError(command, in: work, naming: id, "\(id) \(what)")
            }
          }
        }
      }
      // The same damage in a repository cloned from a path: the clone is refused, nothing left.
      let bare = dir.appendingPathComponent("published.git")
      try FileManager.default.copyItem(at: gitDirectory, to: bare)  // loose objects, as mvc wrote them
      let stored = Array(try Data(contentsOf: objectFile(ids[0], in: bare)))
      try withDamaged(ids[0], in: bare, Array(stored.prefix(8))) {
        expectError(["clone", "-q", bare.path, "clone"], in: dir, naming: ids[0], "cloned commit cut to 8 bytes")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("clone").path))
      }
    }
  }

  // MARK: Names

  /// Branch, tag and remote names git gives a meaning of its own are refused, as git does.
  @Test func reservedNamesAreRefused() throws {
    try withTemporaryDirectory { dir in
      try Self.smallRepository(at: dir)
      for name in ["@", "HEAD", "FETCH_HEAD", "ORIG_HEAD", "refs/heads/x", "-x"] {
        let branch = runMVC(["branch", "--", name], in: dir)
        #expect(branch.status != 0, "branch '\(name)' was accepted")
        let tag = runMVC(["tag", "--", name], in: dir)
        #expect(tag.status != 0, "tag '\(name)' was accepted")
      }
      for name in ["-", "HEAD", "FETCH_HEAD"] {
        let remote = runMVC(["remote", "add", "--", name, "/tmp/nowhere.git"], in: dir)
        #expect(remote.status != 0, "remote '\(name)' was accepted")
      }
      let refs = runGit(["--git-dir=\(dir.path)/.mvc", "for-each-ref", "--format=%(refname)"], in: dir)
      #expect(refs.stdout == "refs/heads/main\n")
    }
  }
}
