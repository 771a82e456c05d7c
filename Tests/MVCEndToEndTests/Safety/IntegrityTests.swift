import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

// Issue 11, items 6-8: the stat cache vouches only for bytes mvc saw, a full `.mvc` leaves HEAD
// and the model consistent, and a journal or HEAD that cannot be used gives a clear error.

/// A repository with commits on `main`, a branch `alt`, and each commit's model bytes.
private struct History {
  var states: [String: [UInt8]] = [:]
  /// `main`'s commits, oldest first.
  var main: [String] = []
  var alt = ""

  static func make(in dir: URL, blocks: Int = 2, hidden: Int = 32, intermediate: Int = 96) throws -> History {
    var history = History()
    var tensors = transformerFixture(blocks: blocks, hidden: hidden, intermediate: intermediate, seed: 31)
    let model = dir.appendingPathComponent("model.safetensors")
    try writeSafetensors(tensors, to: model)
    #expect(runMVC(["init", "-q", "model.safetensors"], in: dir).status == 0)
    let root = try RemoteTests.head(dir)
    history.states[root] = Array(try Data(contentsOf: model))
    history.main.append(root)
    for step in 0..<5 {
      let (id, bytes) = try RemoteTests.commitEdit(&tensors, in: dir, step: step)
      history.states[id] = bytes
      history.main.append(id)
    }
    #expect(runMVC(["switch", "-q", "-c", "alt", "HEAD~2"], in: dir).status == 0)
    var alt = transformerFixture(blocks: blocks, hidden: hidden, intermediate: intermediate, seed: 31)
    for step in 0..<3 {
      applyLowRankEdit(&alt, index: [0, 1, 3, 4][step % 4], rank: step % 3 == 0 ? 2 : 1, seed: UInt64(100 + step))
    }
    let (altID, altBytes) = try RemoteTests.commitEdit(&alt, in: dir, step: 7)
    history.states[altID] = altBytes
    history.alt = altID
    #expect(runMVC(["switch", "-q", "main"], in: dir).status == 0)
    return history
  }
}

private func branchTip(_ dir: URL, _ branch: String) throws -> String {
  runGit(["--git-dir=\(dir.path)/.mvc", "rev-parse", "refs/heads/\(branch)"], in: dir).stdout
    .trimmingCharacters(in: .whitespacesAndNewlines)
}

private func expectNoTypeDump(_ text: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
  #expect(
    !text.contains("GitError(") && !text.contains("Optional("), "\(what): \(text)", sourceLocation: sourceLocation)
}

@Suite("journal and HEAD errors")
struct JournalErrorTests {

  /// A journal naming a commit that does not exist: every command says so (naming the journal,
  /// with a hint), and `fsck` still runs and reports it.
  @Test func journalNamingAMissingCommit() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let journal = dir.appendingPathComponent(".mvc/mvc-journal.json")
      let missing = String(repeating: "ab", count: 20)
      try Data(#"{"operation":"checkout","target":"\#(missing)","branch":"main"}"#.utf8).write(to: journal)
      let status = runMVC(["status"], in: dir)
      #expect(status.status == 128, "status: \(status.stderr)")
      #expect(status.stderr.hasPrefix("fatal: ") && status.stderr.contains("mvc-journal.json"), "\(status.stderr)")
      #expect(status.stderr.contains("\nhint: "), "\(status.stderr)")
      expectNoTypeDump(status.stderr, "status")
      let fsck = runMVC(["fsck"], in: dir)
      #expect(fsck.status == 1, "fsck exit \(fsck.status): \(fsck.stderr)")
      #expect(fsck.stdout.contains("mvc-journal.json") && fsck.stdout.contains(missing), "fsck: \(fsck.stdout)")
      expectNoTypeDump(fsck.stdout + fsck.stderr, "fsck")
      #expect(try branchTip(dir, "main") == history.main.last)
      // Discarding it as the hint says makes the repository usable again.
      try FileManager.default.removeItem(at: journal)
      #expect(runMVC(["checkout", "-q", "--force", "HEAD"], in: dir).status == 0)
      #expect(runMVC(["fsck"], in: dir).status == 0)
    }
  }

  /// A garbage `.mvc/HEAD` fails `fsck` (naming HEAD), and other commands say what is wrong.
  @Test func garbageHeadIsReported() throws {
    try withTemporaryDirectory { dir in
      _ = try History.make(in: dir)
      try Data("this is not a ref\n".utf8).write(to: dir.appendingPathComponent(".mvc/HEAD"))
      let fsck = runMVC(["fsck"], in: dir)
      #expect(fsck.status != 0, "fsck passed a garbage HEAD: \(fsck.stdout) \(fsck.stderr)")
      #expect((fsck.stdout + fsck.stderr).contains("HEAD"), "fsck: \(fsck.stdout) \(fsck.stderr)")
      expectNoTypeDump(fsck.stdout + fsck.stderr, "fsck")
      let status = runMVC(["status"], in: dir)
      #expect(status.status == 128 && status.stderr.contains("HEAD"), "status: \(status.stderr)")
      expectNoTypeDump(status.stderr, "status")
    }
  }

  /// An old-format journal (no recorded start) whose target is an ancestor of the branch would
  /// move `main` back and orphan commits: refused, `main` unchanged, `fsck` reports it.
  @Test func journalMovingTheBranchBackwardsIsRefused() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let tip = history.main[history.main.count - 1]
      let back = history.main[history.main.count - 5]
      let journal = dir.appendingPathComponent(".mvc/mvc-journal.json")
      try Data(#"{"operation":"checkout","target":"\#(back)","branch":"main"}"#.utf8).write(to: journal)
      let status = runMVC(["status"], in: dir)
      #expect(status.status == 128, "status exit \(status.status): \(status.stdout) \(status.stderr)")
      #expect(status.stderr.contains("mvc-journal.json") && status.stderr.contains("\nhint: "), "\(status.stderr)")
      #expect(try branchTip(dir, "main") == tip, "main moved back")
      let fsck = runMVC(["fsck"], in: dir)
      #expect(fsck.status == 1 && fsck.stdout.contains("mvc-journal.json"), "fsck: \(fsck.stdout) \(fsck.stderr)")
      // A new-format journal whose recorded start is not where the branch is: refused too.
      let other = history.main[1]
      try Data(#"{"operation":"commit","target":"\#(back)","branch":"main","branch_from":"\#(other)"}"#.utf8)
        .write(to: journal)
      let again = runMVC(["status"], in: dir)
      #expect(again.status == 128 && again.stderr.contains("mvc-journal.json"), "\(again.stderr)")
      #expect(try branchTip(dir, "main") == tip, "main moved back")
    }
  }

  /// A first-format journal (no recorded start) that moves the branch forward, to a descendant
  /// (an interrupted fast-forward), is still completed.
  @Test func firstFormatJournalMovingForwardIsCompleted() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let tip = history.main[history.main.count - 1]
      let parent = history.main[history.main.count - 2]
      #expect(
        runGit(["--git-dir=\(dir.path)/.mvc", "update-ref", "refs/heads/main", parent], in: dir).status == 0)
      let journal = dir.appendingPathComponent(".mvc/mvc-journal.json")
      try Data(#"{"operation":"checkout","target":"\#(tip)","branch":"main"}"#.utf8).write(to: journal)
      let status = runMVC(["status"], in: dir)
      #expect(status.status == 0 && status.stdout.contains("nothing to commit"), "\(status.stdout) \(status.stderr)")
      #expect(try branchTip(dir, "main") == tip)
      #expect(Array(try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))) == history.states[tip])
      #expect(!FileManager.default.fileExists(atPath: journal.path))
    }
  }

  /// A new-format journal recording the move from the branch's tip (an interrupted commit that
  /// normalizes the model) is completed: the branch moves from that tip to the target.
  @Test func journalFromTheCurrentTipIsCompleted() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let tip = history.main[history.main.count - 1]
      let parent = history.main[history.main.count - 2]
      // Pretend the branch still pointed at the parent when the command died.
      #expect(runGit(["--git-dir=\(dir.path)/.mvc", "update-ref", "refs/heads/main", parent], in: dir).status == 0)
      let journal = dir.appendingPathComponent(".mvc/mvc-journal.json")
      try Data(
        #"{"operation":"commit","target":"\#(tip)","branch":"main","format":2,"head_from":"\#(parent)","branch_from":"\#(parent)"}"#
          .utf8
      )
      .write(to: journal)
      let status = runMVC(["status"], in: dir)
      #expect(status.status == 0, "\(status.stderr)")
      #expect(status.stdout.contains("nothing to commit"), "\(status.stdout)")
      #expect(try branchTip(dir, "main") == tip)
      #expect(Array(try Data(contentsOf: dir.appendingPathComponent("model.safetensors"))) == history.states[tip])
    }
  }
}

// MARK: Full disk on .mvc

/// Why a tmpfs cannot be mounted here (not root, no permission), or nil when it can.
let tmpfsUnavailableReason: String? = {
  let probe = FileManager.default.temporaryDirectory.appendingPathComponent("mvc-tmpfs-probe-\(UUID().uuidString)")
  try? FileManager.default.createDirectory(at: probe, withIntermediateDirectories: true)
  defer { try? FileManager.default.removeItem(at: probe) }
  let mount = URL(fileURLWithPath: "/bin/mount")
  // Run from the probe's parent: a umount whose working directory is the mount point fails as
  // busy, and every test run left a tmpfs mounted (381 of them here before this was fixed).
  let parent = probe.deletingLastPathComponent()
  let result = runProcessOutcome(mount, ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe.path], in: parent)
  guard result.status == 0 else {
    return "cannot mount a tmpfs (needs root): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
  }
  let unmounted = runProcessOutcome(URL(fileURLWithPath: "/bin/umount"), [probe.path], in: parent)
  guard unmounted.status == 0 else {
    return "cannot unmount the probe tmpfs: \(unmounted.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
  }
  return nil
}()

/// Fills the file system of `directory` with a file of its own, leaving `free` bytes available.
private func fill(_ directory: URL, leaving free: Int) throws -> URL {
  var info = statvfs()
  try #require(statvfs(directory.path, &info) == 0)
  let available = Int(info.f_bavail) * Int(info.f_frsize)
  let filler = directory.appendingPathComponent("filler")
  let fd = open(filler.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  try #require(fd >= 0)
  defer { close(fd) }
  if available > free { try #require(posix_fallocate(fd, 0, off_t(available - free)) == 0) }
  return filler
}

@Suite(.serialized) struct FullDiskTests {

  /// What one trial left: the command's result, and HEAD and the model right after it.
  struct Outcome {
    var result: (status: Int32, stdout: String, stderr: String)
    var journalLeft: Bool
  }

  /// Copies `template` to `work` with its `.mvc` on a fresh tmpfs of the repository's size plus
  /// 1 MiB, runs `body` with the mount point, and unmounts.
  static func withRepositoryOnTmpfs(
    _ template: URL, at work: URL, scratch: URL, _ body: (URL) throws -> Void
  ) throws {
    try? FileManager.default.removeItem(at: work)
    try FileManager.default.copyItem(at: template, to: work)
    let mount = work.appendingPathComponent(".mvc")
    let saved = scratch.appendingPathComponent("saved-mvc")
    try? FileManager.default.removeItem(at: saved)
    try FileManager.default.moveItem(at: mount, to: saved)
    try FileManager.default.createDirectory(at: mount, withIntermediateDirectories: true)
    let used = (FileManager.default.subpaths(atPath: saved.path) ?? []).reduce(0) { sum, path in
      let attributes = try? FileManager.default.attributesOfItem(atPath: saved.appendingPathComponent(path).path)
      return sum + ((attributes?[.size] as? Int) ?? 0) + 4096
    }
    let mounted = runProcessOutcome(
      URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=\(used + (1 << 20))", "tmpfs", mount.path],
      in: scratch)
    try #require(mounted.status == 0, "mount: \(mounted.stderr)")
    defer { _ = runProcessOutcome(URL(fileURLWithPath: "/bin/umount"), [mount.path], in: scratch) }
    #expect(
      runProcessOutcome(URL(fileURLWithPath: "/bin/cp"), ["-a", saved.path + "/.", mount.path], in: scratch).status == 0
    )
    try body(mount)
  }

  /// After a trial: a failure either left the old state or says the journal finishes it;
  /// a command on the still-full disk fails clearly or works; once space is freed the next
  /// command finishes any journal, and HEAD and the model are one state (old or target).
  fileprivate static func check(
    _ outcome: Outcome, _ what: String, in work: URL, filler: URL, before: String, target: String,
    history: History, sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> String {
    let model = work.appendingPathComponent("model.safetensors")
    let result = outcome.result
    expectNoTypeDump(result.stderr, what, sourceLocation: sourceLocation)
    var kind: String
    if result.status == 0 {
      kind = "succeeded"
      let head = try RemoteTests.head(work)
      let bytes = Array(try Data(contentsOf: model))
      #expect(
        head == target && bytes == history.states[target], "\(what): exit 0 but inconsistent",
        sourceLocation: sourceLocation)
    } else if outcome.journalLeft {
      kind = "failed, finished by the next command"
      #expect(
        result.stderr.hasPrefix("fatal: ") && result.stderr.contains("mvc-journal.json"),
        "\(what): journal left, error does not say so: \(result.stderr)", sourceLocation: sourceLocation)
    } else {
      kind = "failed, old state kept"
      #expect(result.stderr.hasPrefix("fatal: "), "\(what): \(result.stderr)", sourceLocation: sourceLocation)
      let head = try RemoteTests.head(work)
      let bytes = Array(try Data(contentsOf: model))
      #expect(
        head == before && bytes == history.states[before],
        "\(what): failed but changed HEAD or the model: \(result.stderr)", sourceLocation: sourceLocation)
      let created = runGit(["--git-dir=\(work.path)/.mvc", "show-ref", "refs/heads/fresh"], in: work)
      #expect(created.status != 0, "\(what): a failed switch -c left its branch", sourceLocation: sourceLocation)
    }
    let fullStatus = runMVC(["status"], in: work)
    expectNoTypeDump(fullStatus.stderr, "\(what): status on a full disk", sourceLocation: sourceLocation)
    try FileManager.default.removeItem(at: filler)
    let status = runMVC(["status"], in: work)
    #expect(
      status.status == 0 && status.stdout.contains("nothing to commit"),
      "\(what): status after freeing space: \(status.stdout) \(status.stderr)", sourceLocation: sourceLocation)
    let head = try RemoteTests.head(work)
    #expect(head == before || head == target, "\(what): HEAD \(head)", sourceLocation: sourceLocation)
    #expect(
      Array(try Data(contentsOf: model)) == history.states[head], "\(what): model is not HEAD's state",
      sourceLocation: sourceLocation)
    let fsck = runMVC(["fsck"], in: work)
    #expect(
      fsck.status == 0 && fsck.stdout.isEmpty, "\(what): fsck \(fsck.stdout) \(fsck.stderr)",
      sourceLocation: sourceLocation)
    #expect(try branchTip(work, "main") == history.main.last, "\(what): main moved", sourceLocation: sourceLocation)
    if result.status != 0 {
      let line = String(result.stderr.prefix { $0 != "\n" }).replacingOccurrences(of: work.path, with: "")
      kind +=
        ": "
        + line.replacingOccurrences(of: #"mvc-tmp-[0-9a-z-]+"#, with: "mvc-tmp-*", options: .regularExpression)
        .replacingOccurrences(of: #"holds [0-9a-f]{7}"#, with: "holds <target>", options: .regularExpression)
    }
    return kind
  }

  fileprivate static func operations(_ history: History) -> [(name: String, command: [String], target: String)] {
    [
      ("checkout", ["checkout", "-q", history.main[2]], history.main[2]),
      ("switch", ["switch", "-q", "alt"], history.alt),
      ("switch -c", ["switch", "-q", "-c", "fresh", history.main[1]], history.main[1]),
    ]
  }

  /// A repository with a history in `root/template`, copied to `root/work` for each trial.
  fileprivate static func template(in root: URL) throws -> (template: URL, history: History, work: URL) {
    let template = root.appendingPathComponent("template")
    try FileManager.default.createDirectory(at: template, withIntermediateDirectories: true)
    return (template, try History.make(in: template), root.appendingPathComponent("work"))
  }

  /// `.mvc` on a real size-limited tmpfs, filled beforehand to leave 0 B to 256 KiB free (the
  /// journal's reserve is ~80 KiB here: below it the move stops before the model is touched).
  @Test(.enabled(if: tmpfsUnavailableReason == nil, "\(tmpfsUnavailableReason ?? "")"))
  func checkoutAndSwitchOnAFullRepositoryDisk() throws {
    try withTemporaryDirectory { root in
      let (template, history, work) = try Self.template(in: root)
      var outcomes: [String: Int] = [:]
      for operation in Self.operations(history) {
        for free in [0, 4096, 16384, 65536, 262144] {
          try Self.withRepositoryOnTmpfs(template, at: work, scratch: root) { mount in
            let before = try RemoteTests.head(work)
            let filler = try fill(mount, leaving: free)
            let result = runMVC(operation.command, in: work)
            let left = FileManager.default.fileExists(atPath: mount.appendingPathComponent("mvc-journal.json").path)
            let kind = try Self.check(
              Outcome(result: result, journalLeft: left), "\(operation.name) with \(free) B free", in: work,
              filler: filler, before: before, target: operation.target, history: history)
            outcomes[kind, default: 0] += 1
          }
        }
      }
      print("[full disk, filled before] \(outcomes.values.reduce(0, +)) trials: \(outcomes.sorted { $0.key < $1.key })")
    }
  }

  /// `.mvc` on a real tmpfs that fills up completely while the command is paused before each
  /// of its I/O events in turn (writes to the model, the journal, the refs): every point of the
  /// move leaves the old state or one the next command completes, and the error says which.
  @Test(.enabled(if: tmpfsUnavailableReason == nil, "\(tmpfsUnavailableReason ?? "")"))
  func diskFillingUpAtEveryIOEventOfAMove() throws {
    try withTemporaryDirectory { root in
      let (template, history, work) = try Self.template(in: root)
      var outcomes: [String: Int] = [:]
      for operation in Self.operations(history) {
        var index = 1
        var finished = false
        while !finished && index < 80 {
          try Self.withRepositoryOnTmpfs(template, at: work, scratch: root) { mount in
            let before = try RemoteTests.head(work)
            let running = try startMVC(
              operation.command, in: work, environment: ["MVC_IO_PAUSE": "any:\(index):0.3"])
            var filler: URL?
            while running.isRunning {
              if filler == nil, running.stderrSoFar.contains("mvc: paused before") {
                filler = try fill(mount, leaving: 0)
              }
              usleep(2_000)
            }
            let outcome = running.finishMVC()
            let stderr = outcome.stderr
              .split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.hasPrefix("mvc: paused before") }
              .joined(separator: "\n")
            guard let filler else {
              finished = true
              return
            }
            let left = FileManager.default.fileExists(atPath: mount.appendingPathComponent("mvc-journal.json").path)
            let kind = try Self.check(
              Outcome(result: (outcome.status, "", stderr), journalLeft: left),
              "\(operation.name), disk filled before I/O event \(index)", in: work, filler: filler, before: before,
              target: operation.target, history: history)
            outcomes[kind, default: 0] += 1
          }
          index += 1
        }
      }
      print(
        "[full disk, filled mid-move] \(outcomes.values.reduce(0, +)) trials: \(outcomes.sorted { $0.key < $1.key })")
    }
  }
}

// MARK: Races and forged caches

@Suite(.serialized) struct StatCacheIntegrityTests {

  /// After an editor renamed its file over the model during a command: `status` is never clean
  /// while the model is not HEAD's state, and `checkout HEAD -o` writes HEAD's exact bytes.
  /// Returns the outcome's description and whether it is good.
  fileprivate static func judge(
    _ result: (status: Int32, stdout: String, stderr: String), in dir: URL, history: History, editor: [UInt8],
    _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> (kind: String, ok: Bool) {
    let model = dir.appendingPathComponent("model.safetensors")
    expectNoTypeDump(result.stderr, what, sourceLocation: sourceLocation)
    let head = try RemoteTests.head(dir)
    let bytes = Array(try Data(contentsOf: model))
    let status = runMVC(["status"], in: dir)
    let clean = status.status == 0 && status.stdout.contains("nothing to commit")
    let isHeads = bytes == history.states[head]
    let owner = isHeads ? "HEAD's" : bytes == editor ? "editor's" : "neither"
    var ok = !clean || isHeads
    #expect(ok, "\(what): status is clean but the model is \(owner)", sourceLocation: sourceLocation)
    let out = dir.appendingPathComponent("out.safetensors")
    try? FileManager.default.removeItem(at: out)
    let checkout = runMVC(["checkout", "-q", "HEAD", "-o", out.path], in: dir)
    let outOK = checkout.status == 0 && (try? Data(contentsOf: out)).map(Array.init) == history.states[head]
    #expect(
      outOK, "\(what): checkout HEAD -o did not write HEAD's bytes: \(checkout.stderr)", sourceLocation: sourceLocation)
    ok = ok && outOK
    let error = result.status == 0 ? "" : " (\(result.stderr.prefix { $0 != "\n" }.prefix(70))…)"
    return ("exit \(result.status)\(error), model \(owner), status \(clean ? "clean" : "changed")", ok)
  }

  /// Renames a freshly written different model over the working model at random moments during
  /// `checkout`/`switch` (30 trials, seeded delays of 0-120 ms).
  @Test func editorRenamingOverTheModelDuringCheckout() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir, blocks: 4, hidden: 96, intermediate: 288)
      let model = dir.appendingPathComponent("model.safetensors")
      var foreign = transformerFixture(blocks: 4, hidden: 96, intermediate: 288, seed: 31)
      for index in 0..<foreign.count { applyLowRankEdit(&foreign, index: index, rank: 1, seed: UInt64(7000 + index)) }
      let staging = dir.appendingPathComponent("editor.safetensors")
      try writeSafetensors(foreign, to: staging)
      let foreignBytes = Array(try Data(contentsOf: staging))
      var rng = SplitMix64(seed: 1111)
      let trials = 30
      var bad = 0
      var outcomes: [String: Int] = [:]
      for trial in 0..<trials {
        let from = trial % 2 == 0 ? history.main.last ?? "" : history.alt
        let reset = runMVC(["checkout", "-q", "--force", from], in: dir)
        #expect(reset.status == 0, "trial \(trial): checkout --force: \(reset.stderr)")
        try writeSafetensors(foreign, to: staging)
        let command =
          trial % 3 == 2
          ? ["switch", "-q", trial % 2 == 0 ? "alt" : "main"]
          : ["checkout", "-q", trial % 2 == 0 ? history.alt : history.main[2]]
        let running = try startMVC(command, in: dir)
        usleep(useconds_t(rng.next() % 120_000))
        rename(staging.path, model.path)
        running.process.waitUntilExit()
        let (kind, ok) = try Self.judge(
          running.finishMVC().tuple, in: dir, history: history, editor: foreignBytes, "trial \(trial) \(command)")
        if !ok { bad += 1 }
        outcomes[kind, default: 0] += 1
      }
      print("[editor race] \(trials) trials, \(bad) bad; outcomes: \(outcomes.sorted { $0.key < $1.key })")
    }
  }

  /// The same editor, deterministically: `checkout` and `switch` are paused before each of their
  /// I/O events in turn (`MVC_IO_PAUSE`), and there the editor renames its file over the model,
  /// or writes into the model in place (same inode, the last 64 bytes).
  @Test(arguments: ["rename", "write in place"])
  func editorAtEveryIOEvent(_ mode: String) throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let model = dir.appendingPathComponent("model.safetensors")
      var foreign = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 31)
      for index in 0..<foreign.count { applyLowRankEdit(&foreign, index: index, rank: 1, seed: UInt64(8000 + index)) }
      let staging = dir.appendingPathComponent("editor.safetensors")
      try writeSafetensors(foreign, to: staging)
      let foreignBytes = Array(try Data(contentsOf: staging))
      let operations: [(from: String, command: [String])] = [
        (history.main.last ?? "", ["checkout", "-q", history.main[2]]),
        ("main", ["switch", "-q", "alt"]),
        (history.main.last ?? "", ["checkout", "-q", "--force", history.alt]),
      ]
      /// What the editor does while mvc is paused; true when done.
      func act() -> Bool {
        guard mode == "write in place" else { return rename(staging.path, model.path) == 0 }
        let fd = open(model.path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return false }
        let garbage = [UInt8](repeating: 0x7F, count: 64)
        return pwrite(fd, garbage, garbage.count, off_t(info.st_size) - 64) == 64
      }
      var trials = 0
      var bad = 0
      var outcomes: [String: Int] = [:]
      for operation in operations {
        for index in 1..<60 {
          #expect(runMVC(["checkout", "-q", "--force", operation.from], in: dir).status == 0)
          try writeSafetensors(foreign, to: staging)
          let running = try startMVC(operation.command, in: dir, environment: ["MVC_IO_PAUSE": "any:\(index):0.2"])
          var acted = false
          while running.isRunning {
            if !acted, running.stderrSoFar.contains("mvc: paused before") { acted = act() }
            usleep(2_000)
          }
          let outcome = running.finishMVC()
          guard acted else { break }
          trials += 1
          let stderr = outcome.stderr
            .split(separator: "\n").filter { !$0.hasPrefix("mvc: paused before") }.joined(separator: "\n")
          let (kind, ok) = try Self.judge(
            (outcome.status, "", stderr), in: dir, history: history,
            editor: foreignBytes, "\(operation.command), editor (\(mode)) before I/O event \(index)")
          if !ok { bad += 1 }
          outcomes[kind, default: 0] += 1
        }
      }
      print(
        "[editor (\(mode)) at every I/O event] \(trials) trials, \(bad) bad; outcomes: \(outcomes.sorted { $0.key < $1.key })"
      )
    }
  }

  /// A hand-edited stat cache claiming HEAD's hashes for an edited model (stat records made to
  /// match): `checkout HEAD -o` still writes HEAD's exact bytes, a checkout never writes
  /// unverified bytes, and `checkout --force HEAD` (which rehashes) repairs the model.
  @Test func forgedStatCache() throws {
    try withTemporaryDirectory { dir in
      let history = try History.make(in: dir)
      let model = dir.appendingPathComponent("model.safetensors")
      let tip = history.main.last ?? ""
      #expect(runMVC(["status"], in: dir).status == 0)
      let cacheURL = dir.appendingPathComponent(".mvc/mvc-index.json")
      let honest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: cacheURL)) as? [String: Any])
      var tensors = try readSafetensorsFixture(model).tensors
      applyLowRankEdit(&tensors, index: 1, rank: 2, seed: 4242)
      applyLowRankEdit(&tensors, index: 3, rank: 1, seed: 4243)
      try writeSafetensors(tensors, to: model)
      let edited = Array(try Data(contentsOf: model))
      var info = stat()
      try #require(stat(model.path, &info) == 0)
      var forged = honest
      forged["files"] = [
        [
          "path": model.path, "inode": Int(info.st_ino), "byte_count": Int(info.st_size),
          "mtime_ns": Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec),
          "ctime_ns": Int(info.st_ctim.tv_sec) * 1_000_000_000 + Int(info.st_ctim.tv_nsec),
        ]
      ]
      forged["written_at_ns"] = (Int(Date().timeIntervalSince1970) + 5) * 1_000_000_000
      try JSONSerialization.data(withJSONObject: forged).write(to: cacheURL)
      let out = dir.appendingPathComponent("out.safetensors")
      let result = runMVC(["checkout", "-q", "HEAD", "-o", out.path], in: dir)
      #expect(result.status == 0, "\(result.stderr)")
      #expect(
        (try? Data(contentsOf: out)).map(Array.init) == history.states[tip], "checkout HEAD -o copied unverified bytes")
      #expect(Array(try Data(contentsOf: model)) == edited, "-o changed the working model")
      // A checkout to another commit starts rebuilds from the edited bytes the cache vouches
      // for; their results fail verification and are rebuilt from the repository alone (no
      // "repository damaged" error). Tensors the cache says are already right are kept, as git
      // keeps files its index vouches for.
      let move = runMVC(["checkout", "-q", history.main[3]], in: dir)
      #expect(move.status == 0, "checkout with a forged cache: \(move.stderr)")
      let repair = runMVC(["checkout", "-q", "--force", "HEAD"], in: dir)
      #expect(repair.status == 0, "\(repair.stderr)")
      let head = try RemoteTests.head(dir)
      #expect(
        Array(try Data(contentsOf: model)) == history.states[head], "checkout --force HEAD did not repair the model")
      let status = runMVC(["status"], in: dir)
      #expect(status.stdout.contains("nothing to commit"), "\(status.stdout)")
    }
  }
}
