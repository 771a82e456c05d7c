import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

// Issue 11, items 4 and 5: files mvc reads from the working model (and the reference base) are
// opened as regular files only, and a file rewritten while mvc reads it ends in a clean error,
// never a hang or a signal.

/// What a bounded run of `mvc` ended as.
typealias BoundedRun = ProcessOutcome

/// Runs `mvc args` in `dir`, killing it (SIGKILL) after `seconds`.
func runMVCBounded(_ args: [String], in dir: URL, seconds: Double = 20) -> BoundedRun {
  runMVCOutcome(args, in: dir, timeout: seconds)
}

@Suite("files of the wrong kind")
struct SpecialFileTests {
  /// Expects a prompt, clean refusal naming `names`, with `.mvc` unchanged.
  func expectRefusedPromptly(
    _ args: [String], in s: Scenario, naming names: [String], sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let before = treeHash(of: s.repository)
    let run = runMVCBounded(args, in: s.dir)
    #expect(!run.timedOut, "\(args) hung (killed after 20 s)", sourceLocation: sourceLocation)
    #expect(run.signal == nil, "\(args) died of signal \(run.signal ?? 0)", sourceLocation: sourceLocation)
    expectFatal(run.tuple, naming: names, sourceLocation: sourceLocation)
    #expect(treeHash(of: s.repository) == before, "\(args): .mvc changed", sourceLocation: sourceLocation)
  }

  /// An initialized repository whose working model is the folder `model` of `shardCount` shards;
  /// returns the weight map (tensor → shard file).
  func shardedScenario(in dir: URL, shardCount: Int) throws -> (Scenario, [String: String]) {
    var s = Scenario(dir: dir, modelName: "model")
    let map = try writeShardedModel(
      transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 1), shardCount: shardCount, to: s.model)
    try s.initialize()
    return (s, map)
  }

  func replaceWithFIFO(_ url: URL) throws {
    try FileManager.default.removeItem(at: url)
    try #require(mkfifo(url.path, 0o644) == 0, "mkfifo: \(String(cString: strerror(errno)))")
  }

  @Test func workingModelIsAFIFO() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(1)
      try replaceWithFIFO(s.model)
      for args in [["status"], ["commit", "-m", "fifo"], ["checkout", "HEAD~1"], ["diff"]] {
        expectRefusedPromptly(args, in: s, naming: ["model.safetensors", "FIFO"])
      }
      var info = stat()
      #expect(lstat(s.model.path, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO, "the FIFO was replaced")
    }
  }

  @Test func initRefusesAFIFO() throws {
    try withTemporaryDirectory { dir in
      let model = dir.appendingPathComponent("model.safetensors")
      try #require(mkfifo(model.path, 0o644) == 0)
      let run = runMVCBounded(["init", "model.safetensors"], in: dir)
      #expect(!run.timedOut, "init hung on a FIFO")
      expectFatal(run.tuple, naming: ["model.safetensors", "FIFO"])
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent(".mvc").path), ".mvc left behind")
    }
  }

  @Test func shardIsAFIFO() throws {
    try withTemporaryDirectory { dir in
      let (s, map) = try shardedScenario(in: dir, shardCount: 3)
      let shard = try #require(Set(map.values).sorted().last)
      try replaceWithFIFO(s.model.appendingPathComponent(shard))
      for args in [["status"], ["commit", "-m", "fifo"], ["checkout", "HEAD"]] {
        expectRefusedPromptly(args, in: s, naming: [shard, "FIFO"])
      }
    }
  }

  @Test func shardIndexIsAFIFO() throws {
    try withTemporaryDirectory { dir in
      let (s, _) = try shardedScenario(in: dir, shardCount: 2)
      try replaceWithFIFO(s.model.appendingPathComponent("model.safetensors.index.json"))
      for args in [["status"], ["commit", "-m", "fifo"]] {
        expectRefusedPromptly(args, in: s, naming: ["model.safetensors.index.json", "FIFO"])
      }
    }
  }

  @Test func shardIsASymlinkOutOfTheFolder() throws {
    try withTemporaryDirectory { dir in
      let (s, map) = try shardedScenario(in: dir, shardCount: 2)
      let shard = try #require(Set(map.values).sorted().first)
      let outside = dir.appendingPathComponent("outside.safetensors")
      try FileManager.default.moveItem(at: s.model.appendingPathComponent(shard), to: outside)
      try FileManager.default.createSymbolicLink(
        atPath: s.model.appendingPathComponent(shard).path, withDestinationPath: outside.path)
      let outsideBytes = try Data(contentsOf: outside)
      for args in [["status"], ["commit", "-m", "link"], ["checkout", "HEAD"]] {
        expectRefusedPromptly(args, in: s, naming: [shard, "symbolic link"])
      }
      #expect(try Data(contentsOf: outside) == outsideBytes, "the file outside the folder changed")
    }
  }

  @Test func workingModelLinksToADevice() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try FileManager.default.removeItem(at: s.model)
      try FileManager.default.createSymbolicLink(atPath: s.model.path, withDestinationPath: "/dev/zero")
      for args in [["status"], ["commit", "-m", "zero"], ["checkout", "HEAD"]] {
        expectRefusedPromptly(args, in: s, naming: ["model.safetensors", "character device"])
      }
    }
  }

  /// The user's own top-level path may be a link to a regular file: it is followed.
  @Test func workingModelLinksToARegularFile() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let real = dir.appendingPathComponent("real.safetensors")
      try FileManager.default.moveItem(at: s.model, to: real)
      try FileManager.default.createSymbolicLink(atPath: s.model.path, withDestinationPath: real.path)
      s.expectClean("the model became a link to the same bytes")
    }
  }

  /// A repository whose root commit reads the base from `base.safetensors` beside the model
  /// (named at `init` as `baseArgument`, a path that may be a link), with one edit committed.
  func referenceScenario(_ dir: URL, baseArgument: (URL) throws -> String) throws -> (Scenario, base: URL) {
    var s = Scenario(dir: dir)
    try s.writeModel()
    let base = dir.appendingPathComponent("base.safetensors")
    try FileManager.default.copyItem(at: s.model, to: base)
    let created = runMVC(["init", "model.safetensors", "--reference-base", try baseArgument(base)], in: dir)
    expectSuccess(created, "init --reference-base")
    try #require(created.status == 0)
    s.states.append(try snapshot(s.model))
    try s.editAndCommit(1)
    return (s, base)
  }

  /// A reference base named through a link is resolved once at `init`: the repository records
  /// the real file, which later reads open without following links.
  @Test func referenceBaseNamedThroughALink() throws {
    try withTemporaryDirectory { dir in
      let (s, _) = try referenceScenario(dir) { base in
        let link = dir.appendingPathComponent("base-link.safetensors")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: base.path)
        return link.path
      }
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir), "checkout of the reference state")
      try s.expectWorkingState(0, "after checkout HEAD~1")
    }
  }

  @Test func referenceBaseIsAFIFO() throws {
    try withTemporaryDirectory { dir in
      let (s, base) = try referenceScenario(dir) { $0.path }
      try replaceWithFIFO(base)
      let before = treeHash(of: s.repository)
      let run = runMVCBounded(["checkout", "HEAD~1"], in: dir)
      #expect(!run.timedOut, "checkout hung on a FIFO reference base")
      expectFatal(run.tuple, naming: ["base.safetensors", "FIFO"])
      #expect(treeHash(of: s.repository) == before, ".mvc changed")
      try s.expectWorkingState(1, "after the refused checkout")
    }
  }
}

/// An editor rewriting the model in place (`open(path, "wb")`, then write: safetensors'
/// `save_file`) while mvc reads it.
@Suite("rewritten while read")
struct RewriteRaceTests {
  /// Rewrites `path` with `a`, `b`, `a`, … (truncate, then write in 1 MiB pieces, then a 5 ms
  /// pause) until stopped.
  final class Rewriter: Sendable {
    private let state = Mutex((stopped: false, rewrites: 0))
    private let done = DispatchSemaphore(value: 0)
    var rewrites: Int { state.withLock { $0.rewrites } }

    init(path: String, versions: [[UInt8]]) {
      Thread.detachNewThread { [self] in
        var i = 0
        while !isStopped {
          let bytes = versions[i % versions.count]
          i += 1
          let fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0o644)
          guard fd >= 0 else { continue }
          bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = 0
            while offset < raw.count {
              let n = write(fd, base + offset, min(1 << 20, raw.count - offset))
              guard n > 0 else { break }
              offset += n
            }
          }
          close(fd)
          state.withLock { $0.rewrites += 1 }
          // A short pause, as between an editor's saves, so some runs find the file whole.
          usleep(5_000)
        }
        done.signal()
      }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    /// Stops after the rewrite in progress completes.
    func stop() {
      state.withLock { $0.stopped = true }
      done.wait()
    }
  }

  struct Tally: CustomStringConvertible {
    var trials = 0
    var successes = 0
    var changedWhileRead = 0
    var otherCleanErrors = 0
    var signals = 0
    var hangs = 0
    /// The other clean errors' first lines, the temporary folder's path left out.
    var otherMessages: Set<String> = []
    var description: String {
      "\(trials) trials: \(successes) succeeded, \(changedWhileRead) 'changed while being read', "
        + "\(otherCleanErrors) other clean errors, \(signals) signals, \(hangs) hangs"
        + otherMessages.sorted().map { "\n  \($0)" }.joined()
    }
  }

  /// Two valid versions of a ~13 MiB model: the base, and the base with one low-rank edit.
  func versions() -> (a: [UInt8], b: [UInt8]) {
    var tensors = transformerFixture(blocks: 1, hidden: 512, intermediate: 1536, seed: 3)
    let a = safetensorsBytes(tensors)
    let index = tensors.firstIndex { $0.shape.count == 2 } ?? 0
    applyLowRankEdit(&tensors, index: index, rank: 2, seed: 9)
    return (a, safetensorsBytes(tensors))
  }

  /// Runs each of `commands` in turn, `trials` runs in all, while a `Rewriter` alternates the
  /// two versions; the root commit holds the base version (`committingEdit`: and HEAD the other).
  func race(
    _ commands: [[String]], trials: Int, committingEdit: Bool = false, check: (BoundedRun) -> Void
  ) throws -> Tally {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      let (a, b) = versions()
      try Data(a).write(to: s.model)
      try s.initialize()
      if committingEdit {
        try Data(b).write(to: s.model)
        try s.commit("the edit")
      }
      var tally = Tally()
      let rewriter = Rewriter(path: s.model.path, versions: [b, a])
      for trial in 0..<trials {
        let args = commands[trial % commands.count]
        let run = runMVCBounded(args, in: dir)
        tally.trials += 1
        if run.timedOut {
          tally.hangs += 1
        } else if run.signal != nil {
          tally.signals += 1
        } else if run.status == 0 {
          tally.successes += 1
          check(run)
        } else if run.status == 128, run.stderr.hasPrefix("fatal: nothing to commit") {
          tally.successes += 1  // the file held the committed bytes when read
        } else if run.status == 128, run.stderr.hasPrefix("fatal: ") {
          if run.stderr.contains("changed while being read") {
            tally.changedWhileRead += 1
          } else {
            tally.otherCleanErrors += 1
            let line = run.stderr.split(separator: "\n").first.map(String.init) ?? ""
            tally.otherMessages.insert(line.replacingOccurrences(of: dir.path + "/", with: ""))
          }
        } else {
          Issue.record("\(args): exit \(run.status), stderr: \(run.stderr)")
        }
      }
      rewriter.stop()
      // Whatever happened, the repository is sound and reads the model as it is now.
      expectSuccess(runMVC(["fsck"], in: dir), "fsck after the race")
      try Data(a).write(to: s.model)
      expectSuccess(runMVC(["status"], in: dir), "status after the race")
      return tally
    }
  }

  @Test func statusWhileTheEditorRewrites() throws {
    let tally = try race([["status"]], trials: 40) { run in
      #expect(
        run.stdout.contains("nothing to commit") || run.stdout.contains("modified"),
        "status output: \(run.stdout)")
    }
    print("race status: \(tally)")
    #expect(tally.signals == 0, "\(tally)")
    #expect(tally.hangs == 0, "\(tally)")
  }

  @Test func commitWhileTheEditorRewrites() throws {
    let tally = try race([["commit", "-m", "racing"]], trials: 40) { _ in }
    print("race commit: \(tally)")
    #expect(tally.signals == 0, "\(tally)")
    #expect(tally.hangs == 0, "\(tally)")
  }

  /// Checkout reads the working model (status, then the tensors it starts from) and rewrites it
  /// in place, while the editor rewrites it too: a clean error or a finished move, then a
  /// repository that `fsck` passes and that reads the model afterwards.
  @Test func checkoutWhileTheEditorRewrites() throws {
    let tally = try race([["checkout", "HEAD~1"], ["switch", "main"]], trials: 40, committingEdit: true) { _ in }
    print("race checkout: \(tally)")
    #expect(tally.signals == 0, "\(tally)")
    #expect(tally.hangs == 0, "\(tally)")
  }
}
