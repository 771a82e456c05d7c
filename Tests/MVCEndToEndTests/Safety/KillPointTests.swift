import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Kills mvc at every write, fsync and rename of its I/O layer (`MVC_IO_PAUSE=any:N:30` stops it
/// just before the N-th event; the test SIGKILLs it there), for commit, in-place checkout, switch,
/// a bisect step and gc. Afterwards the next command must succeed, `mvc fsck` be clean, HEAD be
/// the old or the new commit and the working model be exactly what that state says.
@Suite(.serialized) struct KillPointTests {

  struct Template {
    let dir: URL
    var states: [String: [UInt8]] = [:]
    var edited: [UInt8] = []
  }

  /// A repository with 7 commits on main, a branch `alt`, and an uncommitted edit.
  static func makeTemplate(in dir: URL) throws -> Template {
    var t = Template(dir: dir)
    var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 31)
    let model = dir.appendingPathComponent("model.safetensors")
    try writeSafetensors(tensors, to: model)
    #expect(runMVC(["init", "-q", "model.safetensors"], in: dir).status == 0)
    t.states[try RemoteTests.head(dir)] = Array(try Data(contentsOf: model))
    for step in 0..<6 {
      let (id, bytes) = try RemoteTests.commitEdit(&tensors, in: dir, step: step)
      t.states[id] = bytes
    }
    #expect(runMVC(["switch", "-q", "-c", "alt", "HEAD~2"], in: dir).status == 0)
    var alt = tensors
    let (altID, altBytes) = try RemoteTests.commitEdit(&alt, in: dir, step: 7)
    t.states[altID] = altBytes
    #expect(runMVC(["switch", "-q", "main"], in: dir).status == 0)
    applyLowRankEdit(&tensors, index: 1, rank: 1, seed: 999)
    try writeSafetensors(tensors, to: model)
    t.edited = Array(try Data(contentsOf: model))
    return t
  }

  static func copy(_ from: URL, to: URL) throws {
    try? FileManager.default.removeItem(at: to)
    try FileManager.default.copyItem(at: from, to: to)
  }

  /// Runs `arguments` paused before I/O event `index` and kills it there; with `index` 0, kills
  /// it after `delay` seconds instead (for writes that go through libgit2, which mvc cannot
  /// hook). Returns false when the command finished first (no more kill points).
  static func killAt(_ index: Int, _ arguments: [String], in dir: URL, delay: Double = 0) throws -> Bool {
    var environment = ["MVC_AUTHOR_DATE": "1700000100"]
    if index > 0 { environment["MVC_IO_PAUSE"] = "any:\(index):30" }
    let running = try startMVC(arguments, in: dir, environment: environment)
    if index == 0 {
      usleep(useconds_t(delay * 1_000_000))
      guard running.isRunning else { return false }
      running.kill()
      _ = running.finish()
      return true
    }
    if running.waitForStderr(containing: "mvc: paused before") {
      running.kill()
      _ = running.finish()
      return true
    }
    guard running.isRunning else { return false }
    running.kill()
    _ = running.finish()
    Issue.record("mvc \(arguments) neither paused nor finished within 20 s")
    return false
  }

  @Test func everyIOEventOfEveryCommandIsASafeKillPoint() throws {
    try withTemporaryDirectory { root in
      let templateDir = root.appendingPathComponent("template")
      try FileManager.default.createDirectory(at: templateDir, withIntermediateDirectories: true)
      let template = try Self.makeTemplate(in: templateDir)
      let work = root.appendingPathComponent("work")
      let operations: [(name: String, setup: [[String]], command: [String])] = [
        ("commit", [], ["commit", "-q", "-m", "killed commit"]),
        ("checkout", [["checkout", "-q", "--force", "main"]], ["checkout", "-q", "HEAD~2"]),
        ("switch", [["checkout", "-q", "--force", "main"]], ["switch", "-q", "alt"]),
        ("reset --hard", [["checkout", "-q", "--force", "main"]], ["reset", "-q", "--hard", "HEAD~3"]),
        (
          "bisect step", [["checkout", "-q", "--force", "main"], ["bisect", "start", "main", "main~6"]],
          ["bisect", "good"]
        ),
        ("gc", [], ["gc"]),
      ]
      var tried = 0
      var survived = 0
      var rng = SplitMix64(seed: 77)
      for operation in operations {
        var index = 1
        var delayedRuns = 0
        while index < 200 {
          try Self.copy(templateDir, to: work)
          for step in operation.setup {
            #expect(runMVC(step, in: work).status == 0, "\(operation.name) setup \(step)")
          }
          let before = try RemoteTests.head(work)
          if index > 0 {
            guard try Self.killAt(index, operation.command, in: work) else {
              // No hooked event left: commit and gc write through libgit2; kill those at
              // seeded random moments instead.
              if index == 1 { index = 0 } else { break }
              continue
            }
          } else {
            delayedRuns += 1
            if delayedRuns > 10 { break }
            let delay = Double(rng.next() % 400) / 1000
            guard try Self.killAt(0, operation.command, in: work, delay: delay) else { continue }
          }
          tried += 1
          let model = work.appendingPathComponent("model.safetensors")
          let status = runMVC(["status"], in: work)
          #expect(status.status == 0, "\(operation.name) killed at event \(index): status: \(status.stderr)")
          let head = try RemoteTests.head(work)
          let bytes = Array(try Data(contentsOf: model))
          var ok = status.status == 0
          if operation.name == "commit" || operation.name == "gc" {
            // Neither touches the model: it is the user's edit either way; a commit's HEAD is
            // the old commit or the new one.
            ok = ok && bytes == template.edited
            if head != before {
              let newest = runMVC(["log", "-n", "1", "--oneline"], in: work).stdout
              ok = ok && newest.contains("killed commit")
            }
          } else {
            ok = ok && template.states[head] == bytes
          }
          let fsck = runMVC(["fsck"], in: work)
          ok = ok && fsck.status == 0 && fsck.stdout.isEmpty
          #expect(ok, "\(operation.name) killed before I/O event \(index): HEAD \(head), fsck \(fsck.stdout)")
          if ok { survived += 1 }
          if index > 0 { index += 1 }
        }
        print("[kill points] \(operation.name): \(index > 0 ? "\(index - 1) I/O events" : "random-delay kills")")
      }
      print(
        "[kill points] \(tried) kill points tried (every write/fsync/rename of commit, checkout, switch, reset --hard, bisect step, gc), \(survived) survived"
      )
    }
  }
}
