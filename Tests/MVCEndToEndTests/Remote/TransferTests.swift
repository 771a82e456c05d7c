import Foundation
import TestSupport
import Testing

/// The packs mvc writes itself (gc, and push / fetch / clone with a bare repository on this
/// machine): git reads them (`git verify-pack`, `git fsck`, a plain `git clone`), they hold no
/// deltas, a transfer copies only what the other side lacks, and everything checks out bytes-equal.
@Suite(.serialized) struct TransferTests {
  typealias R = RemoteTests

  /// `git verify-pack -v` of every pack in `gitDirectory`: (objects, deltified objects).
  static func packContents(_ gitDirectory: URL, in dir: URL) throws -> (objects: Int, deltas: Int, packs: Int) {
    let packDirectory = gitDirectory.appendingPathComponent("objects/pack")
    let indexes = try FileManager.default.contentsOfDirectory(atPath: packDirectory.path).filter {
      $0.hasSuffix(".idx")
    }
    var objects = 0
    var deltas = 0
    for index in indexes {
      let verify = runGit(["verify-pack", "-v", packDirectory.appendingPathComponent(index).path], in: dir)
      #expect(verify.status == 0, "git verify-pack \(index): \(verify.stderr)")
      for line in verify.stdout.split(separator: "\n") {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        guard fields.count >= 5, fields[0].count == 40 else { continue }
        objects += 1
        // A deltified entry lists its depth and base after size, packed size and offset.
        if fields.count >= 7 { deltas += 1 }
      }
    }
    return (objects, deltas, indexes.count)
  }

  static func looseObjectCount(_ gitDirectory: URL) -> Int {
    let objects = gitDirectory.appendingPathComponent("objects")
    let fanouts = (try? FileManager.default.contentsOfDirectory(atPath: objects.path)) ?? []
    return fanouts.filter { $0.count == 2 }.reduce(0) { total, fanout in
      total
        + ((try? FileManager.default.contentsOfDirectory(atPath: objects.appendingPathComponent(fanout).path))?.count
          ?? 0)
    }
  }

  /// A repository with `commits` edits and an annotated tag; returns each commit and its bytes.
  static func makeHistory(in work: URL, commits: Int) throws -> (
    history: [(String, [UInt8])], tensors: [FixtureTensor]
  ) {
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 21)
    let model = work.appendingPathComponent("model.safetensors")
    try writeSafetensors(tensors, to: model)
    #expect(runMVC(["init", "-q", "model.safetensors"], in: work, environment: R.authorDate(R.t0)).status == 0)
    var history: [(String, [UInt8])] = [(try R.head(work), try R.bytes(model))]
    for step in 0..<commits {
      history.append(try R.commitEdit(&tensors, in: work, step: step))
      if step == 0 { #expect(runMVC(["tag", "-m", "first edit", "v1"], in: work).status == 0) }
    }
    return (history, tensors)
  }

  @Test func gcWritesOneUndeltifiedPackThatGitReadsAndClones() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      let (history, _) = try Self.makeHistory(in: work, commits: 4)
      let gitDirectory = work.appendingPathComponent(".mvc")
      let loose = Self.looseObjectCount(gitDirectory)
      #expect(loose > 0)

      let gc = runMVC(["gc"], in: work)
      #expect(gc.status == 0, "gc: \(gc.stderr)")
      let packed = try Self.packContents(gitDirectory, in: dir)
      #expect(packed.packs == 1)
      #expect(packed.deltas == 0, "mvc's packs hold whole objects")
      #expect(packed.objects == loose, "every reachable object is in the pack, and only those")
      #expect(Self.looseObjectCount(gitDirectory) == 0)
      try R.expectClean(work)

      // A second gc rewrites the same pack and leaves one.
      #expect(runMVC(["gc", "-q"], in: work).status == 0)
      #expect(try Self.packContents(gitDirectory, in: dir).packs == 1)

      let model = work.appendingPathComponent("model.safetensors")
      for (id, expected) in history {
        #expect(runMVC(["checkout", "-q", id], in: work).status == 0)
        #expect(try R.bytes(model) == expected, "commit \(id) after gc")
      }
      #expect(runMVC(["checkout", "-q", "main"], in: work).status == 0)

      // Plain git clones the packed repository and finds it whole.
      let plain = dir.appendingPathComponent("plain.git")
      let cloned = runGit(["clone", "-q", "--bare", gitDirectory.path, plain.path], in: dir)
      #expect(cloned.status == 0, "git clone: \(cloned.stderr)")
      let fsck = runGit(["--git-dir=\(plain.path)", "fsck", "--strict"], in: dir)
      #expect(fsck.status == 0, "git fsck of the clone: \(fsck.stdout) \(fsck.stderr)")
      let tag = runGit(["--git-dir=\(plain.path)", "cat-file", "-t", "v1"], in: dir)
      #expect(tag.stdout == "tag\n")
    }
  }

  /// Loose object files: id → size in bytes.
  static func looseObjects(_ gitDirectory: URL) -> [String: Int] {
    let objects = gitDirectory.appendingPathComponent("objects")
    var out: [String: Int] = [:]
    for fanout in (try? FileManager.default.contentsOfDirectory(atPath: objects.path)) ?? [] where fanout.count == 2 {
      let folder = objects.appendingPathComponent(fanout)
      for file in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
        let size = try? FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent(file).path)[.size]
        out[fanout + file] = (size as? Int) ?? 0
      }
    }
    return out
  }

  /// The `.pack` files of `gitDirectory`, sorted.
  static func packNames(_ gitDirectory: URL) -> [String] {
    let folder = gitDirectory.appendingPathComponent("objects/pack").path
    return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".pack") }
      .sorted()
  }

  static let gitUnavailableReason: String? =
    runGit(["--version"], in: URL(fileURLWithPath: "/")).status == 0 ? nil : "git is not installed"

  /// The default gc leaves large loose blobs loose and packs the rest; `--full` packs all. After
  /// either, every commit checks out to its committed bytes, git and mvc fsck are clean, the
  /// repository clones, and a second gc changes nothing.
  @Test(.enabled(if: gitUnavailableReason == nil, Comment(rawValue: gitUnavailableReason ?? "")))
  func gcKeepsLargeLooseBlobsAndPacksTheSmallOnes() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      // 512×128 F32 tensors: 256 KiB each, their chunks above the 16 KiB threshold set below;
      // and one of 2 MiB, above the 1 MiB at which a clone stores a blob loose.
      var tensors = transformerFixture(blocks: 2, hidden: 128, intermediate: 512, seed: 5)
      var rng = SplitMix64(seed: 6)
      tensors.append(
        FixtureTensor(name: "lm_head.weight", shape: [1024, 512], floats: rng.gaussianArray(count: 1 << 19)))
      let model = work.appendingPathComponent("model.safetensors")
      try writeSafetensors(tensors, to: model)
      #expect(runMVC(["init", "-q", "model.safetensors"], in: work, environment: R.authorDate(R.t0)).status == 0)
      var history: [(String, [UInt8])] = [(try R.head(work), try R.bytes(model))]
      for step in 0..<3 { history.append(try R.commitEdit(&tensors, in: work, step: step)) }
      #expect(runMVC(["tag", "-m", "last edit", "v1"], in: work).status == 0)
      let gitDirectory = work.appendingPathComponent(".mvc")
      #expect(runGit(["--git-dir=\(gitDirectory.path)", "config", "mvc.gcBigObjectBytes", "16k"], in: dir).status == 0)
      let before = Self.looseObjects(gitDirectory)
      let large = before.filter { $0.value >= 16 << 10 }
      try #require(large.count >= 4 && large.count < before.count, "large and small loose objects: \(before.count)")
      let huge = before.filter { $0.value >= 1 << 20 }
      try #require(!huge.isEmpty, "a blob of at least 1 MiB")

      /// `mvc clone` of `source` into `name`: the last commit's model, and the blobs of at
      /// least 1 MiB stored loose, byte for byte as mvc writes them.
      func expectClone(of source: String, into name: String, _ what: String) throws {
        let clone = dir.appendingPathComponent(name)
        let cloned = runMVC(["clone", "-q", source, clone.path], in: dir)
        #expect(cloned.status == 0, "clone \(what): \(cloned.stderr)")
        #expect(try R.bytes(clone.appendingPathComponent("model.safetensors")) == history.last?.1)
        #expect(Self.looseObjects(clone.appendingPathComponent(".mvc")) == huge, "clone \(what)")
      }

      func expectWhole(_ what: String) throws {
        for (id, expected) in history {
          #expect(runMVC(["checkout", "-q", id], in: work).status == 0)
          #expect(try R.bytes(model) == expected, "commit \(id) after \(what)")
        }
        #expect(runMVC(["checkout", "-q", "main"], in: work).status == 0)
        try R.expectClean(work)
        let fsck = runGit(["--git-dir=\(gitDirectory.path)", "fsck", "--full", "--strict"], in: dir)
        #expect(fsck.status == 0, "git fsck --full after \(what): \(fsck.stdout) \(fsck.stderr)")
        try expectClone(of: gitDirectory.path, into: "clone-\(what)", "after \(what)")
        let plain = dir.appendingPathComponent("plain-\(what).git")
        let plainClone = runGit(["clone", "-q", "--bare", gitDirectory.path, plain.path], in: dir)
        #expect(plainClone.status == 0, "git clone after \(what): \(plainClone.stderr)")
      }

      // The size rule: the large blobs stay loose, byte for byte the same files; the rest is one pack.
      let gc = runMVC(["gc", "--json"], in: work)
      try #require(gc.status == 0, "gc: \(gc.stderr)")
      let summary = try JSONSchemaTests.object(gc.stdout)
      #expect(summary["kept_loose_object_count"] as? Int == large.count)
      #expect(summary["kept_loose_object_bytes"] as? Int == large.values.reduce(0, +))
      #expect(summary["packed_object_count"] as? Int == before.count - large.count)
      #expect(summary["big_object_bytes"] as? Int == 16 << 10 && summary["full"] as? Bool == false)
      #expect(Self.looseObjects(gitDirectory) == large)
      let packed = try Self.packContents(gitDirectory, in: dir)
      #expect(packed.packs == 1 && packed.objects == before.count - large.count && packed.deltas == 0)
      try expectWhole("gc")

      // Stable: a second gc writes the same pack and keeps the same files.
      let packs = Self.packNames(gitDirectory)
      #expect(runMVC(["gc", "-q"], in: work).status == 0)
      #expect(Self.packNames(gitDirectory) == packs)
      #expect(Self.looseObjects(gitDirectory) == large)

      // One more edit: its small objects and the earlier pack (small objects only, however
      // large: it has more than the threshold's 16 KiB) are merged into one pack; the large
      // blobs stay loose.
      let smallPack = gitDirectory.appendingPathComponent("objects/pack/\(try #require(packs.first))")
      #expect(try FileManager.default.attributesOfItem(atPath: smallPack.path)[.size] as? Int ?? 0 >= 16 << 10)
      history.append(try R.commitEdit(&tensors, in: work, step: 3))
      let added = Self.looseObjects(gitDirectory).filter { large[$0.key] == nil }
      #expect(!added.isEmpty && added.values.allSatisfy { $0 < 16 << 10 }, "a rank-one edit adds small objects")
      let merged = try JSONSchemaTests.object(runMVC(["gc", "--json"], in: work).stdout)
      #expect(merged["packed_object_count"] as? Int == before.count - large.count + added.count)
      #expect(merged["removed_pack_count"] as? Int == 1 && merged["kept_pack_count"] as? Int == 0)
      #expect(Self.looseObjects(gitDirectory) == large)
      #expect(try Self.packContents(gitDirectory, in: dir).packs == 1)
      let total = before.count + added.count

      // A push to a path writes one pack of everything: a repository others fetch from serves a
      // pack's entries as they are, where git's upload-pack would deflate loose objects again.
      let bare = dir.appendingPathComponent("origin.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      #expect(runMVC(["remote", "add", "origin", bare.path], in: work).status == 0)
      let push = runMVC(["push", "-q"], in: work)
      try #require(push.status == 0, "push: \(push.stderr)")
      #expect(Self.looseObjects(bare).isEmpty)
      let remotePack = try Self.packContents(bare, in: dir)
      #expect(remotePack.packs == 1 && remotePack.objects == total && remotePack.deltas == 0)
      let remoteFsck = runGit(["--git-dir=\(bare.path)", "fsck", "--full", "--strict"], in: dir)
      #expect(remoteFsck.status == 0, "git fsck of the remote: \(remoteFsck.stdout) \(remoteFsck.stderr)")
      try expectClone(of: bare.path, into: "clone-remote", "of the remote (blobs ≥ 1 MiB from a pack)")

      // --full: everything in one pack, nothing loose; again stable.
      let full = try JSONSchemaTests.object(runMVC(["gc", "--full", "--json"], in: work).stdout)
      #expect(full["full"] as? Bool == true && full["big_object_bytes"] is NSNull)
      #expect(full["packed_object_count"] as? Int == total)
      #expect(Self.looseObjects(gitDirectory).isEmpty)
      let all = try Self.packContents(gitDirectory, in: dir)
      #expect(all.packs == 1 && all.objects == total && all.deltas == 0)
      let fullPacks = Self.packNames(gitDirectory)
      #expect(runMVC(["gc", "-q", "--full"], in: work).status == 0)
      #expect(Self.packNames(gitDirectory) == fullPacks)
      // The default after --full: the large pack stays as it is, nothing is written.
      let after = try JSONSchemaTests.object(runMVC(["gc", "--json"], in: work).stdout)
      #expect(after["packed_object_count"] as? Int == 0 && after["kept_pack_count"] as? Int == 1)
      #expect(Self.packNames(gitDirectory) == fullPacks)
      try expectWhole("full")

      // A threshold that is not a byte count is refused, not guessed.
      #expect(
        runGit(["--git-dir=\(gitDirectory.path)", "config", "mvc.gcBigObjectBytes", "lots"], in: dir).status == 0)
      let refused = runMVC(["gc"], in: work)
      #expect(refused.status == 128 && refused.stderr.contains("mvc.gcBigObjectBytes"), "\(refused.stderr)")
      #expect(refused.stderr.contains("hint: "), "\(refused.stderr)")
    }
  }

  /// gc hashes each object as it packs it: a damaged loose blob stops it before anything is
  /// deleted, and the message names the object.
  @Test func gcRefusesADamagedLooseObjectAndDeletesNothing() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      // 128×512 F32 tensors: chunks above the 64 KiB at which blobs are stored uncompressed.
      let tensors = transformerFixture(blocks: 1, hidden: 128, intermediate: 512, seed: 3)
      try writeSafetensors(tensors, to: work.appendingPathComponent("model.safetensors"))
      #expect(runMVC(["init", "-q", "model.safetensors"], in: work).status == 0)
      let gitDirectory = work.appendingPathComponent(".mvc")
      let objects = gitDirectory.appendingPathComponent("objects")
      var largest: (path: String, size: Int) = ("", 0)
      for fanout in try FileManager.default.contentsOfDirectory(atPath: objects.path) where fanout.count == 2 {
        for file in try FileManager.default.contentsOfDirectory(atPath: objects.appendingPathComponent(fanout).path) {
          let path = objects.appendingPathComponent("\(fanout)/\(file)").path
          let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
          if size > largest.size { largest = (path, size) }
        }
      }
      try #require(largest.size >= 64 << 10, "a stored large blob to damage")
      var bytes = try Data(contentsOf: URL(fileURLWithPath: largest.path))
      bytes[largest.size / 2] ^= 0x5A
      try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: largest.path)
      try bytes.write(to: URL(fileURLWithPath: largest.path))
      let before = Self.looseObjectCount(gitDirectory)

      let gc = runMVC(["gc"], in: work)
      #expect(gc.status == 128)
      #expect(gc.stderr.hasPrefix("fatal: "), "\(gc.stderr)")
      #expect(gc.stderr.contains("does not hash to its id"), "\(gc.stderr)")
      #expect(Self.looseObjectCount(gitDirectory) == before)
      let packs =
        (try? FileManager.default.contentsOfDirectory(atPath: objects.appendingPathComponent("pack").path)) ?? []
      #expect(packs.isEmpty, "no pack and no temporary file left: \(packs)")
    }
  }

  @Test func localPushAndPullCopyOnlyWhatTheOtherSideLacks() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      var (history, tensors) = try Self.makeHistory(in: work, commits: 3)
      let bare = dir.appendingPathComponent("origin.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      #expect(runMVC(["remote", "add", "origin", "file://\(bare.path)"], in: work).status == 0)
      let push = runMVC(["push"], in: work)
      try #require(push.status == 0, "push: \(push.stderr)")
      let first = try Self.packContents(bare, in: dir)
      #expect(first.packs == 1 && first.deltas == 0)
      #expect(first.objects == Self.looseObjectCount(work.appendingPathComponent(".mvc")))
      let tag = runGit(["--git-dir=\(bare.path)", "cat-file", "-t", "refs/tags/v1"], in: dir)
      #expect(tag.stdout == "tag\n", "the annotated tag object went too")

      let clone = dir.appendingPathComponent("clone")
      let cloned = runMVC(["clone", "-q", bare.path, clone.path], in: dir)
      try #require(cloned.status == 0, "clone: \(cloned.stderr)")
      #expect(try R.head(clone) == history.last?.0)
      #expect(try R.bytes(clone.appendingPathComponent("model.safetensors")) == history.last?.1)
      let clonePack = try Self.packContents(clone.appendingPathComponent(".mvc"), in: dir)
      #expect(clonePack.objects == first.objects && clonePack.deltas == 0)

      // One more commit: the second push and the pull carry that commit's few objects only.
      history.append(try R.commitEdit(&tensors, in: work, step: 3))
      let newObjects = Self.looseObjectCount(work.appendingPathComponent(".mvc")) - first.objects
      #expect(newObjects > 0)
      #expect(runMVC(["push", "-q"], in: work).status == 0)
      let second = try Self.packContents(bare, in: dir)
      #expect(second.packs == 2)
      #expect(second.objects - first.objects == newObjects)
      let pull = runMVC(["pull"], in: clone)
      #expect(pull.status == 0, "pull: \(pull.stderr)")
      #expect(try R.bytes(clone.appendingPathComponent("model.safetensors")) == history.last?.1)
      #expect(try Self.packContents(clone.appendingPathComponent(".mvc"), in: dir).objects == second.objects)
      try R.expectClean(clone)
      let fsck = runGit(["--git-dir=\(bare.path)", "fsck", "--strict"], in: dir)
      #expect(fsck.status == 0, "git fsck of the remote: \(fsck.stderr)")

      // Nothing new: push and fetch copy nothing.
      #expect(runMVC(["push", "-q"], in: work).status == 0)
      #expect(runMVC(["fetch", "-q"], in: clone).status == 0)
      #expect(try Self.packContents(bare, in: dir).packs == 2)
      #expect(try Self.packContents(clone.appendingPathComponent(".mvc"), in: dir).packs == 2)
    }
  }

  /// A repository packed by mvc's gc, pushed over git:// (libgit2's packbuilder and git's
  /// receive-pack) and cloned back over git:// (git's upload-pack, libgit2's indexer).
  @Test(
    .enabled(
      if: RemoteHarness.gitDaemonUnavailableReason == nil,
      Comment(rawValue: RemoteHarness.gitDaemonUnavailableReason ?? "")))
  func packedRepositoryRoundTripsOverGitDaemon() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      let (history, _) = try Self.makeHistory(in: work, commits: 3)
      #expect(runMVC(["gc", "-q"], in: work).status == 0)
      let served = dir.appendingPathComponent("srv")
      try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
      #expect(runGit(["init", "-q", "--bare", served.appendingPathComponent("m.git").path], in: dir).status == 0)
      let daemon = try RemoteHarness.startGitDaemon(basePath: served, probe: "m.git")
      defer { daemon.stop() }
      #expect(runMVC(["remote", "add", "origin", daemon.url("m.git")], in: work).status == 0)
      let push = runMVC(["push", "-q"], in: work)
      try #require(push.status == 0, "push: \(push.stderr)")
      let clone = dir.appendingPathComponent("clone")
      let cloned = runMVC(["clone", "-q", daemon.url("m.git"), clone.path], in: dir)
      try #require(cloned.status == 0, "clone: \(cloned.stderr)")
      let model = clone.appendingPathComponent("model.safetensors")
      for (id, expected) in history {
        #expect(runMVC(["checkout", "-q", id], in: clone).status == 0)
        #expect(try R.bytes(model) == expected, "commit \(id) in the git:// clone")
      }
      try R.expectClean(clone)
    }
  }
}
