import Foundation
import TestSupport
import Testing

/// push / clone / fetch / pull / fsck / gc through the `mvc` binary, over git:// (a real
/// `git daemon` on loopback) and over a plain path to a bare repository.
@Suite(.serialized) struct RemoteTests {
  typealias H = RemoteHarness
  static let t0: Int64 = 1_700_000_000

  struct History {
    var commits: [(id: String, bytes: [UInt8])] = []
  }

  /// Commit dates one second apart, so that each commit has a later date than its parent.
  static func authorDate(_ seconds: Int64) -> [String: String] { ["MVC_AUTHOR_DATE": "@\(seconds)"] }

  static func bytes(_ url: URL) throws -> [UInt8] { Array(try Data(contentsOf: url)) }

  static func head(_ root: URL) throws -> String {
    runGit(["--git-dir=\(root.path)/.mvc", "rev-parse", "HEAD"], in: root).stdout
      .trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// Edits, writes and commits once; returns the new commit and the model's bytes.
  static func commitEdit(
    _ tensors: inout [FixtureTensor], in root: URL, step: Int, sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> (String, [UInt8]) {
    applyLowRankEdit(&tensors, index: [0, 1, 3, 4][step % 4], rank: step % 3 == 0 ? 2 : 1, seed: UInt64(100 + step))
    let model = root.appendingPathComponent("model.safetensors")
    try writeSafetensors(tensors, to: model)
    let result = runMVC(
      ["commit", "-q", "-m", "edit \(step)"], in: root, environment: authorDate(t0 + Int64(step) + 1))
    #expect(result.status == 0, "commit \(step): \(result.stderr)", sourceLocation: sourceLocation)
    return (try head(root), try bytes(model))
  }

  static func expectClean(_ root: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let fsck = runMVC(["fsck", "--full"], in: root)
    #expect(fsck.status == 0, "mvc fsck --full: \(fsck.stdout) \(fsck.stderr)", sourceLocation: sourceLocation)
    #expect(fsck.stdout == "", sourceLocation: sourceLocation)
    let git = runGit(["--git-dir=\(root.path)/.mvc", "fsck", "--strict"], in: root)
    #expect(git.status == 0, "git fsck: \(git.stdout) \(git.stderr)", sourceLocation: sourceLocation)
  }

  static func seconds(since start: Date) -> String { String(format: "%.2f s", Date().timeIntervalSince(start)) }

  /// The whole round trip against `url` (a bare repository that exists and is empty).
  static func roundTrip(url: String, in dir: URL, commitCount: Int, label: String) throws {
    let work = dir.appendingPathComponent("work")
    let clone = dir.appendingPathComponent("clone")
    try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
    var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 11)
    let model = work.appendingPathComponent("model.safetensors")
    try writeSafetensors(tensors, to: model)
    #expect(runMVC(["init", "-q", "model.safetensors"], in: work, environment: authorDate(t0)).status == 0)
    var history: [(String, [UInt8])] = [(try head(work), try bytes(model))]
    for step in 0..<commitCount { history.append(try commitEdit(&tensors, in: work, step: step)) }

    #expect(runMVC(["remote", "add", "origin", url], in: work).status == 0)
    let listed = runMVC(["remote", "-v"], in: work)
    #expect(listed.stdout == "origin\t\(url) (fetch)\norigin\t\(url) (push)\n")

    let pushStart = Date()
    let push = runMVC(["push"], in: work)
    let pushTime = seconds(since: pushStart)
    try #require(push.status == 0, "push: \(push.stderr)")
    #expect(!push.stderr.contains("warning:"))

    let cloneStart = Date()
    let cloned = runMVC(["clone", url, clone.path], in: dir)
    let cloneTime = seconds(since: cloneStart)
    try #require(cloned.status == 0, "clone: \(cloned.stderr)")
    #expect(try head(clone) == history.last?.0)
    // The clone's config says what init's does; each commit carries its own format.
    let configFormat = runGit(["config", "-f", ".mvc/config", "mvc.formatversion"], in: clone).stdout
    #expect(configFormat.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
    let cloneModel = clone.appendingPathComponent("model.safetensors")
    #expect(try bytes(cloneModel) == history.last?.1)

    let checkoutStart = Date()
    for (id, expected) in history {
      let result = runMVC(["checkout", "-q", id], in: clone)
      #expect(result.status == 0, "checkout \(id): \(result.stderr)")
      #expect(try bytes(cloneModel) == expected, "commit \(id) differs in the clone")
    }
    let checkoutTime = seconds(since: checkoutStart)
    #expect(runMVC(["checkout", "-q", "main"], in: clone).status == 0)

    // Two more commits at origin, then a fast-forward pull.
    for step in commitCount..<(commitCount + 2) { history.append(try commitEdit(&tensors, in: work, step: step)) }
    #expect(runMVC(["push", "-q"], in: work).status == 0)
    let pullStart = Date()
    let pull = runMVC(["pull"], in: clone)
    let pullTime = seconds(since: pullStart)
    #expect(pull.status == 0, "pull: \(pull.stderr)")
    #expect(pull.stderr.contains("Fast-forward"))
    #expect(try head(clone) == history.last?.0)
    #expect(try bytes(cloneModel) == history.last?.1)
    #expect(runMVC(["status"], in: clone).stdout.contains("nothing to commit"))
    let again = runMVC(["pull"], in: clone)
    #expect(again.status == 0 && again.stderr.contains("Already up to date"))

    let fsckStart = Date()
    try expectClean(work)
    try expectClean(clone)
    let fsckTime = seconds(since: fsckStart)

    // gc: no growth on disk, and everything still checks out.
    let gc = runMVC(["gc", "-q"], in: clone)
    #expect(gc.status == 0, "gc: \(gc.stderr)")
    let figures = gc.stdout.split(separator: " ").compactMap { Int($0) }
    try #require(figures.count == 2, "gc output: \(gc.stdout)")
    #expect(figures[1] <= figures[0], "gc grew .mvc from \(figures[0]) to \(figures[1]) bytes")
    let gcWork = runMVC(["gc", "-q"], in: work)
    #expect(gcWork.status == 0, "gc: \(gcWork.stderr)")
    for (id, expected) in [history[0], history[history.count / 2], history[history.count - 1]] {
      #expect(runMVC(["checkout", "-q", id], in: clone).status == 0)
      #expect(try bytes(cloneModel) == expected)
    }
    #expect(runMVC(["checkout", "-q", "main"], in: clone).status == 0)
    try expectClean(clone)
    try expectClean(work)

    // Diverged histories: pull refuses and points at merge; push is rejected.
    _ = try commitEdit(&tensors, in: work, step: 90)
    #expect(runMVC(["push", "-q"], in: work).status == 0)
    var other = tensors
    let before = try bytes(cloneModel)
    _ = try commitEdit(&other, in: clone, step: 91)
    let diverged = runMVC(["pull"], in: clone)
    #expect(diverged.status == 128)
    #expect(diverged.stderr.hasPrefix("fatal: "))
    #expect(diverged.stderr.contains("mvc merge"))
    #expect(try bytes(cloneModel) != before)  // the clone's own commit stays
    let rejected = runMVC(["push"], in: clone)
    #expect(rejected.status == 128)
    #expect(rejected.stderr.hasPrefix("fatal: failed to push"), "\(rejected.stderr)")
    let rebase = runMVC(["pull", "--rebase"], in: clone)
    #expect(rebase.status == 0, "pull --rebase: \(rebase.stderr)")
    #expect(runMVC(["push", "-q"], in: clone).status == 0)

    print(
      "[\(label)] \(commitCount + 1) commits, model \(history[0].1.count) bytes: push \(pushTime), clone \(cloneTime), "
        + "\(history.count - 2) checkouts in the clone \(checkoutTime), pull \(pullTime), fsck --full + git fsck ×2 \(fsckTime); "
        + "gc .mvc \(figures[0]) -> \(figures[1]) bytes on disk")
  }

  @Test(
    .enabled(
      if: RemoteHarness.gitDaemonUnavailableReason == nil,
      Comment(rawValue: RemoteHarness.gitDaemonUnavailableReason ?? "")))
  func roundTripOverGitDaemon() throws {
    try withTemporaryDirectory { dir in
      let served = dir.appendingPathComponent("srv")
      try FileManager.default.createDirectory(at: served, withIntermediateDirectories: true)
      #expect(
        runGit(["init", "-q", "--bare", served.appendingPathComponent("models.git").path], in: dir).status == 0)
      let daemon = try H.startGitDaemon(basePath: served, probe: "models.git")
      defer { daemon.stop() }
      try Self.roundTrip(url: daemon.url("models.git"), in: dir, commitCount: 20, label: "git://")
    }
  }

  @Test func roundTripThroughABareRepositoryPath() throws {
    try withTemporaryDirectory { dir in
      let bare = dir.appendingPathComponent("origin.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      try Self.roundTrip(url: bare.path, in: dir, commitCount: 6, label: "path")
    }
  }

  @Test func pullRefusesUncommittedChangesAndRemoteErrorsNameTheRemote() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      var tensors = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 5)
      try writeSafetensors(tensors, to: work.appendingPathComponent("model.safetensors"))
      #expect(runMVC(["init", "-q", "model.safetensors"], in: work).status == 0)
      let bare = dir.appendingPathComponent("o.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      #expect(runMVC(["remote", "add", "origin", bare.path], in: work).status == 0)
      #expect(runMVC(["push", "-q"], in: work).status == 0)
      let clone = dir.appendingPathComponent("c")
      #expect(runMVC(["clone", "-q", bare.path, clone.path], in: dir).status == 0)
      _ = try Self.commitEdit(&tensors, in: work, step: 1)
      #expect(runMVC(["push", "-q"], in: work).status == 0)

      var local = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 5)
      applyLowRankEdit(&local, index: 1, rank: 1, seed: 77)
      let cloneModel = clone.appendingPathComponent("model.safetensors")
      try writeSafetensors(local, to: cloneModel)
      let dirty = try Self.bytes(cloneModel)
      let refused = runMVC(["pull"], in: clone)
      #expect(refused.status == 128)
      #expect(refused.stderr.hasPrefix("fatal: "))
      #expect(try Self.bytes(cloneModel) == dirty)

      let missing = runMVC(["push", "nowhere"], in: work)
      #expect(missing.status == 128 && missing.stderr.hasPrefix("fatal: no such remote 'nowhere'"))
      let duplicate = runMVC(["remote", "add", "origin", "/x"], in: work)
      #expect(duplicate.status == 128 && duplicate.stderr.contains("already exists"))
      #expect(runMVC(["remote", "add", "dead", dir.appendingPathComponent("none.git").path], in: work).status == 0)
      let unreachable = runMVC(["fetch", "dead"], in: work)
      #expect(unreachable.status == 128)
      #expect(unreachable.stderr.contains("none.git"), "\(unreachable.stderr)")
      #expect(runMVC(["remote", "remove", "dead"], in: work).status == 0)
      #expect(runMVC(["remote"], in: work).stdout == "origin\n")
      let occupied = runMVC(["clone", bare.path, clone.path], in: dir)
      #expect(occupied.status == 128 && occupied.stderr.contains("already exists"))
    }
  }

  /// Diverged histories: plain pull refuses and points at merge; --rebase replays the local
  /// commit's delta on top of the remote's, keeping both edits.
  @Test func pullRebaseReplaysLocalCommitsOntoTheRemote() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      var tensors = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 5)
      try writeSafetensors(tensors, to: work.appendingPathComponent("model.safetensors"))
      #expect(runMVC(["init", "-q", "model.safetensors"], in: work).status == 0)
      let bare = dir.appendingPathComponent("o.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      #expect(runMVC(["remote", "add", "origin", bare.path], in: work).status == 0)
      #expect(runMVC(["push", "-q"], in: work).status == 0)
      let clone = dir.appendingPathComponent("c")
      #expect(runMVC(["clone", "-q", bare.path, clone.path], in: dir).status == 0)
      _ = try Self.commitEdit(&tensors, in: work, step: 4)  // tensor 0
      #expect(runMVC(["push", "-q"], in: work).status == 0)
      var theirs = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 5)
      _ = try Self.commitEdit(&theirs, in: clone, step: 5)  // tensor 1, on the clone
      let diverged = runMVC(["pull"], in: clone)
      #expect(diverged.status == 128 && diverged.stderr.contains("diverged"), "\(diverged.stderr)")
      let rebased = runMVC(["pull", "--rebase"], in: clone)
      #expect(rebased.status == 0, "\(rebased.stderr)")
      let log = runMVC(["log", "--oneline"], in: clone).stdout.split(separator: "\n")
      #expect(log.count == 3)  // base, the remote's edit, the replayed local edit
      #expect(log.first?.hasSuffix("edit 5") == true)
      // Each edit touched its own tensor, so the rebased model holds both exactly.
      let model = try readSafetensorsFixture(clone.appendingPathComponent("model.safetensors")).tensors
      for (index, expected) in [(0, tensors[0]), (1, theirs[1])] {
        let got = model[index].floats
        let want = expected.floats
        let worst = zip(got, want).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 1e-6, "tensor \(expected.name): max |Δ| \(worst)")
      }
      try Self.expectClean(clone)
    }
  }

  @Test func pushWarnsWhenTheBaseIsStoredByReference() throws {
    try withTemporaryDirectory { dir in
      let work = dir.appendingPathComponent("work")
      try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
      let fixture = transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 2)
      try writeSafetensors(fixture, to: work.appendingPathComponent("model.safetensors"))
      try writeSafetensors(fixture, to: dir.appendingPathComponent("base.safetensors"))
      let base = dir.appendingPathComponent("base.safetensors").path
      #expect(runMVC(["init", "-q", "model.safetensors", "--reference-base", base], in: work).status == 0)
      let bare = dir.appendingPathComponent("o.git")
      #expect(runGit(["init", "-q", "--bare", bare.path], in: dir).status == 0)
      #expect(runMVC(["remote", "add", "origin", bare.path], in: work).status == 0)
      let push = runMVC(["push", "-q"], in: work)
      #expect(push.status == 0)
      #expect(push.stderr.hasPrefix("warning: the base model is stored by reference"), "\(push.stderr)")
    }
  }

  @Test func fsckReportsAMissingObjectAndExitsOne() throws {
    try withTemporaryDirectory { dir in
      var tensors = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 9)
      try writeSafetensors(tensors, to: dir.appendingPathComponent("model.safetensors"))
      #expect(runMVC(["init", "-q", "model.safetensors"], in: dir).status == 0)
      _ = try Self.commitEdit(&tensors, in: dir, step: 0)
      try Self.expectClean(dir)
      // Remove the blob of the edited tensor's u.zst from the newest commit.
      let blob = runGit(
        ["--git-dir=.mvc", "rev-parse", "HEAD:tensors/model.layers.0.mlp.up_proj.weight/u.zst"], in: dir
      ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
      let path = dir.appendingPathComponent(".mvc/objects/\(blob.prefix(2))/\(blob.dropFirst(2))")
      try FileManager.default.removeItem(at: path)
      let fsck = runMVC(["fsck", "--full"], in: dir)
      #expect(fsck.status == 1)
      #expect(fsck.stdout.contains(blob), "\(fsck.stdout)")
    }
  }
}
