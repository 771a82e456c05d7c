import Foundation
import TestSupport
import Testing

/// What a git user types and scripts against: `log --oneline` is one line per commit, `help`
/// fails on an unknown command, `reset` and `reflog` behave as git's, `log --all --graph` draws
/// what git draws.
@Suite("git's CLI contract")
struct GitContractTests {
  /// Short ids, newest first, from `mvc log --json`.
  static func shortIDs(_ s: Scenario, _ revision: String? = nil) throws -> [String] {
    try s.commitIDs(revision).map { String($0.prefix(7)) }
  }

  @Test func onelineIsOneLinePerCommitEvenWhenAnEditIsFlagged() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let tensor = try #require(try s.matrixNames().first)
      for i in 1...4 {
        try LowRankEditor.edit(try s.file(holding: tensor), tensor: tensor, rank: 1, rng: &s.rng)
        _ = try s.commit("edit \(i)")
      }
      // ~1000× the others' ‖ΔW‖_F: a disabling edit, flagged.
      try LowRankEditor.edit(try s.file(holding: tensor), tensor: tensor, rank: 1, rng: &s.rng, scale: 10)
      _ = try s.commit("edit 5: disabling")

      let oneline = runMVC(["log", "--oneline"], in: dir)
      expectSuccess(oneline, "log --oneline")
      let lines = oneline.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
      #expect(lines.count == 6, "log --oneline: \(oneline.stdout)")
      // `awk '{print $1}'` gives the short ids, and nothing else is printed.
      #expect(lines.map { String($0.split(separator: " ")[0]) } == (try Self.shortIDs(s)))
      #expect(!oneline.stdout.contains("outlier"), "log --oneline: \(oneline.stdout)")

      // The flag is still where a reader looks: the default format, --stat, show and --json.
      let tip = try #require(try s.commitIDs().first)
      for args in [["log", "-n", "1"], ["log", "--stat", "-n", "1"], ["show"]] {
        let result = runMVC(args, in: dir)
        expectSuccess(result, args.joined(separator: " "))
        #expect(result.stdout.contains(" ! outlier: '\(tensor)'"), "\(args): \(result.stdout)")
      }
      let commits = try #require(try s.logJSON()["commits"] as? [[String: Any]])
      let ratio = (commits.first?["changes"] as? [[String: Any]])?.first?["outlier_ratio"] as? Double
      #expect((ratio ?? 0) > 10, "outlier_ratio of \(tip): \(String(describing: ratio))")
    }
  }

  @Test func helpOnAnUnknownCommandFailsAsGitsDoes() throws {
    try withTemporaryDirectory { dir in
      for args in [["help", "nosuch"], ["help", "bisect", "nosuch"]] {
        let result = runMVC(args, in: dir)
        #expect(result.status == 129, "\(args): exit \(result.status)")
        #expect(result.stdout.isEmpty, "\(args): \(result.stdout)")
        #expect(
          result.stderr == "mvc: 'nosuch' is not an mvc command. See 'mvc --help'.\n", "\(args): \(result.stderr)")
      }
      let known = runMVC(["help", "bisect", "run"], in: dir)
      expectSuccess(known, "help bisect run")
      #expect(known.stdout.hasPrefix("OVERVIEW: Run a program at each step"), "\(known.stdout)")
      let reset = runMVC(["help", "reset"], in: dir)
      expectSuccess(reset, "help reset")
      #expect(reset.stdout.contains("--hard"), "\(reset.stdout)")
    }
  }

  /// The test: a `reset --hard` to an old commit loses the tip from the branch, the
  /// reflog still has it, and `reset --hard HEAD@{1}` brings it back bit for bit.
  @Test func resetHardIsUndoneThroughTheReflog() throws {
    try withTemporaryDirectory { dir in
      let (s, ids) = try Self.history(in: dir, edits: 3)
      let tip = ids[0]

      let reset = runMVC(["reset", "--hard", "HEAD~2"], in: dir)
      expectSuccess(reset, "reset --hard HEAD~2")
      #expect(reset.stdout == "HEAD is now at \(ids[2].prefix(7)) \(try Self.subject(s, ids[2]))\n")
      try s.expectWorkingState(1, "after reset --hard HEAD~2")
      s.expectClean("reset --hard")
      #expect(try s.commitIDs() == Array(ids[2...]), "the branch did not move back")
      let origHead = try String(contentsOf: s.repository.appendingPathComponent("ORIG_HEAD"), encoding: .utf8)
      #expect(origHead == tip + "\n")

      let reflog = runMVC(["reflog"], in: dir)
      expectSuccess(reflog, "reflog")
      let lines = reflog.stdout.split(separator: "\n").map(String.init)
      #expect(lines.count == 5, "reflog: \(reflog.stdout)")
      #expect(lines.first == "\(ids[2].prefix(7)) HEAD@{0}: reset: moving to HEAD~2")
      #expect(lines.dropFirst().first?.hasPrefix("\(tip.prefix(7)) HEAD@{1}: commit: edit 3") == true, "\(lines)")
      #expect(lines.last == "\(ids[3].prefix(7)) HEAD@{4}: init: base model")
      // The same log as git reads it.
      if gitExecutable != nil {
        let git = runGit(["--git-dir=.mvc", "reflog"], in: dir)
        #expect(git.stdout == reflog.stdout, "git reflog: \(git.stdout)")
      }
      let branchLog = runMVC(["reflog", "main"], in: dir)
      #expect(branchLog.stdout.hasPrefix("\(ids[2].prefix(7)) main@{0}: reset: moving to HEAD~2\n"))

      let back = runMVC(["reset", "--hard", "HEAD@{1}"], in: dir)
      expectSuccess(back, "reset --hard HEAD@{1}")
      try s.expectWorkingState(3, "after reset --hard HEAD@{1}")
      #expect(try s.commitIDs() == ids)
      s.expectClean("reset --hard HEAD@{1}")
      #expect(runMVC(["log", "-n", "1", "--oneline", "HEAD@{99}"], in: dir).status == 128)
    }
  }

  @Test func resetSoftMovesTheBranchOnlyAndMixedRefusesChanges() throws {
    try withTemporaryDirectory { dir in
      var (s, ids) = try Self.history(in: dir, edits: 2)
      let modelBefore = try snapshot(s.model)

      let soft = runMVC(["reset", "--soft", "HEAD~1"], in: dir)
      expectSuccess(soft, "reset --soft")
      #expect(soft.stdout.isEmpty)
      #expect(try s.commitIDs() == Array(ids[1...]))
      #expect(try snapshot(s.model) == modelBefore, "reset --soft rewrote the working model")
      let status = try JSONSchemaTests.document(["status", "--json"], in: dir)
      #expect(status["clean"] as? Bool == false, "the undone commit's change should show as uncommitted")
      #expect(
        try String(contentsOf: s.repository.appendingPathComponent("ORIG_HEAD"), encoding: .utf8) == ids[0] + "\n")

      // git's default (--mixed): with no index, a soft reset; it refuses to mix changes in.
      let refused = s.expectRefused(["reset", "HEAD~1"], naming: ["uncommitted changes"])
      #expect(
        refused.stderr.contains(
          "hint: commit them ('mvc commit -m ...') first, or discard them with 'mvc reset --hard HEAD~1'"),
        "\(refused.stderr)")
      s.expectRefused(["reset", "--soft", "HEAD~1"], naming: ["uncommitted changes"])

      // Committing again gives the same tree back (the same change, recommitted).
      _ = try s.commit("again")
      let again = try s.commitIDs()
      #expect(again.count == ids.count && again[1] == ids[1])
      expectSuccess(runMVC(["reset", "--mixed", "HEAD~1"], in: dir), "reset --mixed")
      #expect(try s.commitIDs() == Array(ids[1...]))
      // --hard with no revision: back to HEAD, the change discarded.
      expectSuccess(runMVC(["reset", "--hard"], in: dir), "reset --hard")
      try s.expectWorkingState(1, "after reset --hard")
      s.expectClean("reset --hard")
      let usage = runMVC(["reset", "--soft", "--hard", "HEAD"], in: dir)
      #expect(usage.status == 129, "--soft --hard: exit \(usage.status)")
    }
  }

  @Test func mergeAndFastForwardWriteOrigHead() throws {
    try withTemporaryDirectory { dir in
      var (s, ids) = try Self.history(in: dir, edits: 1)
      let before = ids[0]
      expectSuccess(runMVC(["switch", "-c", "alt"], in: dir), "switch -c alt")
      try s.editAndCommit(1)
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      expectSuccess(runMVC(["merge", "alt"], in: dir), "merge alt (fast-forward)")
      let orig = try String(contentsOf: s.repository.appendingPathComponent("ORIG_HEAD"), encoding: .utf8)
      #expect(orig == before + "\n")
      let reflog = runMVC(["reflog", "-n1"], in: dir)
      #expect(reflog.stdout.hasSuffix("HEAD@{0}: merge alt: Fast-forward\n"), "\(reflog.stdout)")
      #expect(reflog.stdout.split(separator: "\n").count == 1)
      // ORIG_HEAD is a revision: back to before the merge.
      expectSuccess(runMVC(["reset", "--hard", "ORIG_HEAD"], in: dir), "reset --hard ORIG_HEAD")
      #expect(try s.commitIDs().first == before)
      try s.expectWorkingState(1, "after reset --hard ORIG_HEAD")
    }
  }

  /// `log --all` reaches the other branch; `--graph` draws the merge as git draws it.
  @Test func logAllAndGraphDrawAMergeAsGitDoes() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let names = try s.matrixNames()
      var date = 1_700_000_000
      func commit(_ message: String, tensor: String) throws {
        date += 60
        try LowRankEditor.edit(try s.file(holding: tensor), tensor: tensor, rank: 1, rng: &s.rng)
        expectSuccess(
          runMVC(["commit", "-m", message], in: dir, environment: ["MVC_AUTHOR_DATE": String(date)]), message)
      }
      func merge(_ branch: String) {
        date += 60
        expectSuccess(
          runMVC(["merge", branch], in: dir, environment: ["MVC_AUTHOR_DATE": String(date)]), "merge \(branch)")
      }
      /// What git itself draws for `args`, trailing blanks trimmed (nil without git).
      func gitDraws(_ args: [String]) -> [String]? {
        guard gitExecutable != nil else { return nil }
        return runGit(["--git-dir=.mvc", "log", "--decorate"] + args, in: dir).stdout.split(separator: "\n").map {
          $0.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        }
      }
      try commit("edit 1", tensor: names[0])
      expectSuccess(runMVC(["switch", "-c", "alt"], in: dir), "switch -c alt")
      try commit("alt edit", tensor: names[1])
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      try commit("main edit", tensor: names[2])

      let mainOnly = runMVC(["log", "--oneline"], in: dir).stdout
      #expect(!mainOnly.contains("alt edit"))
      let all = runMVC(["log", "--all", "--oneline"], in: dir)
      expectSuccess(all, "log --all")
      #expect(all.stdout.split(separator: "\n").count == 4 && all.stdout.contains("(alt) alt edit"), "\(all.stdout)")

      merge("alt")
      let ids = try Self.shortIDs(s)
      let graph = runMVC(["log", "--graph", "--oneline"], in: dir)
      expectSuccess(graph, "log --graph --oneline")
      let alt = try #require(try Self.shortIDs(s, "alt").first)
      let mainEdit = try #require(ids.first { $0 != ids[0] && $0 != alt })
      #expect(
        graph.stdout.split(separator: "\n").map(String.init) == [
          "*   \(ids[0]) (HEAD -> main) Merge 'alt' (strategy sum)",
          "|\\",
          "| * \(alt) (alt) alt edit",
          "* | \(mainEdit) main edit",
          "|/",
          "* \(ids[ids.count - 2]) edit 1",
          "* \(ids[ids.count - 1]) base model",
        ], "log --graph --oneline:\n\(graph.stdout)")
      if let git = gitDraws(["--graph", "--oneline"]) {
        #expect(git == graph.stdout.split(separator: "\n").map(String.init), "git log --graph: \(git)")
      }
      // The full format keeps the graph's columns on every line of a commit.
      let full = runMVC(["log", "--graph", "-n", "2"], in: dir).stdout.split(
        separator: "\n", omittingEmptySubsequences: false)
      #expect(full.first == "*   commit \(try #require(try s.commitIDs().first)) (HEAD -> main)", "\(full)")
      #expect(full.dropFirst().first?.hasPrefix("|\\  Merge: ") == true, "\(full)")
      #expect(full.dropFirst(2).first?.hasPrefix("| | Author: ") == true, "\(full)")

      // A newer branch off an old commit: --all starts from the newest tip, as git does.
      expectSuccess(runMVC(["switch", "-c", "side", "HEAD~2"], in: dir), "switch -c side")
      try commit("side edit", tensor: names[0])
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      let allGraph = runMVC(["log", "--all", "--graph", "--oneline"], in: dir).stdout.split(separator: "\n")
      #expect(allGraph.count == 10 && allGraph.first?.hasSuffix("(side) side edit") == true, "\(allGraph)")
      #expect(allGraph.dropFirst().first?.hasPrefix("| *   ") == true, "\(allGraph)")
      if let git = gitDraws(["--all", "--graph", "--oneline"]) {
        #expect(git == allGraph.map(String.init), "git log --all --graph: \(git)")
      }

      // Five branches, three merges: lines that join across another column move one column a
      // row and cross it (`|/|`), as git draws them.
      expectSuccess(runMVC(["switch", "-c", "b2", "main~2"], in: dir), "switch -c b2")
      try commit("b2 one", tensor: names[1])
      try commit("b2 two", tensor: names[0])
      expectSuccess(runMVC(["switch", "-c", "b3", "HEAD~1"], in: dir), "switch -c b3")
      try commit("b3 one", tensor: names[1])
      expectSuccess(runMVC(["switch", "side"], in: dir), "switch side")
      merge("b3")
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      merge("b2")
      merge("side")
      let big = runMVC(["log", "--all", "--graph", "--oneline"], in: dir).stdout.split(separator: "\n").map(String.init)
      #expect(big.contains("|/|") || big.contains("| |/|"), "\(big)")
      #expect(big.filter { $0.contains("*") }.count == 12, "\(big)")
      if let git = gitDraws(["--all", "--graph", "--oneline"]) { #expect(git == big, "git log --all --graph: \(git)") }
      let fullGraph = runMVC(["log", "--graph"], in: dir).stdout.split(separator: "\n").filter { !$0.contains("Date:") }
      if let git = gitDraws(["--graph"]) {
        // The same graph beside every line (mvc writes ISO dates).
        #expect(git.filter { !$0.contains("Date:") && !$0.isEmpty } == fullGraph.map(String.init), "\(git)")
      }
    }
  }

  /// A repository in `dir/src` with the base and one commit, to clone from (`src/.mvc`).
  static func origin(in dir: URL) throws -> Scenario {
    let source = dir.appendingPathComponent("src")
    try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
    return try history(in: source, edits: 1).0
  }

  /// A repository in `dir`: the base and `edits` commits, and their ids, newest first.
  static func history(in dir: URL, edits: Int) throws -> (Scenario, [String]) {
    var s = Scenario(dir: dir)
    try s.writeModel()
    try s.initialize()
    try s.editAndCommit(edits)
    return (s, try s.commitIDs())
  }

  /// `clone` takes the options every command takes (`GlobalOptions`), not copies of them.
  @Test func cloneTakesTheGlobalOptions() throws {
    try withTemporaryDirectory { dir in
      let s = try Self.origin(in: dir)
      let elsewhere = dir.appendingPathComponent("elsewhere")
      try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
      // -C names the folder the URL and the destination are relative to; -q silences progress.
      let clone = runMVC(["clone", "-q", "-C", dir.path, "src/.mvc", "copy"], in: elsewhere)
      expectSuccess(clone, "clone -q -C")
      #expect(clone.stdout.isEmpty && clone.stderr.isEmpty, "clone -q printed: \(clone.stdout) \(clone.stderr)")
      let copy = dir.appendingPathComponent("copy")
      try s.expectState(of: copy.appendingPathComponent("model.safetensors"), equals: s.states[1], "clone")
      let quiet = runMVC(["clone", "--quiet", "src/.mvc", "quiet"], in: dir)
      expectSuccess(quiet, "clone --quiet")
      #expect(quiet.stderr.isEmpty, "\(quiet.stderr)")
      let help = runMVC(["clone", "--help"], in: dir)
      #expect(help.stdout.components(separatedBy: "Run as if mvc was started in").count == 2, "\(help.stdout)")
    }
  }

  /// `.mvc` is bare, where git keeps no reflogs by default: mvc sets `core.logAllRefUpdates` at
  /// init, and on the first open of a repository made before (a value the user set is kept).
  @Test func reflogsAreKeptAlsoInRepositoriesMadeBefore() throws {
    try withTemporaryDirectory { dir in
      guard gitExecutable != nil else { return }
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      #expect(runGit(["--git-dir=.mvc", "config", "core.logAllRefUpdates"], in: dir).stdout == "always\n")
      // As a repository from before: no setting, no logs.
      expectSuccess(runGit(["--git-dir=.mvc", "config", "--unset", "core.logAllRefUpdates"], in: dir), "unset")
      try FileManager.default.removeItem(at: s.repository.appendingPathComponent("logs"))
      try s.editAndCommit(1)
      #expect(runGit(["--git-dir=.mvc", "config", "core.logAllRefUpdates"], in: dir).stdout == "always\n")
      let tip = try #require(try s.commitIDs().first)
      let reflog = runMVC(["reflog"], in: dir)
      #expect(reflog.stdout == "\(tip.prefix(7)) HEAD@{0}: commit: \(try Self.subject(s, tip))\n", "\(reflog.stdout)")
      // Tags and branches are logged too (git logs them only in non-bare repositories).
      expectSuccess(runMVC(["tag", "v1"], in: dir), "tag")
      expectSuccess(runMVC(["branch", "alt"], in: dir), "branch")
      #expect(runMVC(["reflog", "v1"], in: dir).stdout == "\(tip.prefix(7)) v1@{0}: tag: v1\n")
      #expect(runMVC(["reflog", "alt"], in: dir).stdout.hasPrefix("\(tip.prefix(7)) alt@{0}: branch: created from "))

      // A user's own setting stays.
      expectSuccess(runGit(["--git-dir=.mvc", "config", "core.logAllRefUpdates", "false"], in: dir), "set false")
      expectSuccess(runMVC(["status"], in: dir), "status")
      #expect(runGit(["--git-dir=.mvc", "config", "core.logAllRefUpdates"], in: dir).stdout == "false\n")
    }
  }

  static func subject(_ s: Scenario, _ id: String) throws -> String {
    let commits = try #require(try s.logJSON(id)["commits"] as? [[String: Any]])
    return try #require(commits.first?["summary"] as? String)
  }

  /// `pull` (a fast-forward, git's merge) and `pull --rebase` leave where HEAD was in
  /// `ORIG_HEAD`, as git does, so `reset --hard ORIG_HEAD` undoes them.
  @Test func pullAndPullRebaseWriteOrigHead() throws {
    try withTemporaryDirectory { dir in
      var origin = try Self.origin(in: dir)
      expectSuccess(runMVC(["clone", "-q", "src/.mvc", "copy"], in: dir), "clone")
      var copy = Scenario(dir: dir.appendingPathComponent("copy"), seed: 99)
      copy.states = [try snapshot(copy.model)]
      let cloned = try #require(try copy.commitIDs().first)

      try origin.editAndCommit(1)
      expectSuccess(runMVC(["pull", "-q"], in: copy.dir), "pull")
      let orig = { try String(contentsOf: copy.repository.appendingPathComponent("ORIG_HEAD"), encoding: .utf8) }
      #expect(try orig() == cloned + "\n")
      #expect(
        runMVC(["reflog", "-n", "1"], in: copy.dir).stdout.hasSuffix("HEAD@{0}: pull: fast-forward to origin/main\n"))

      // Diverged: the local commit is replayed on origin's new tip.
      try origin.editAndCommit(1)
      try copy.editAndCommit(1)
      let local = try #require(try copy.commitIDs().first)
      let rebase = runMVC(["pull", "--rebase"], in: copy.dir)
      expectSuccess(rebase, "pull --rebase")
      #expect(try orig() == local + "\n")
      #expect(try copy.commitIDs().first != local)
      expectSuccess(runMVC(["reset", "--hard", "ORIG_HEAD"], in: copy.dir), "reset --hard ORIG_HEAD")
      #expect(try copy.commitIDs().first == local)
      try copy.expectWorkingState(1, "after undoing pull --rebase")
    }
  }

  /// A `reset --hard` killed mid-move is finished by the next command, and the branch it moved
  /// back is still recoverable: `ORIG_HEAD` and the reflog record the old tip.
  @Test func anInterruptedResetIsFinishedWithItsOrigHeadAndReflog() throws {
    try withTemporaryDirectory { dir in
      let (s, ids) = try Self.history(in: dir, edits: 3)
      // Write 1 is the journal; the harness kills mvc while it waits before write 2, the first
      // write to the model.
      let killed = runMVCOutcome(
        ["reset", "--hard", "HEAD~3"], in: dir, environment: ["MVC_IO_PAUSE": "write:2:30"], timeout: 4)
      #expect(killed.timedOut, "reset was not killed mid-move: exit \(killed.status), \(killed.stderr)")
      #expect(FileManager.default.fileExists(atPath: s.repository.appendingPathComponent("mvc-journal.json").path))

      s.expectClean("the interrupted reset, finished")
      try s.expectWorkingState(0, "after the interrupted reset")
      #expect(try s.commitIDs() == [ids[3]])
      let orig = try String(contentsOf: s.repository.appendingPathComponent("ORIG_HEAD"), encoding: .utf8)
      #expect(orig == ids[0] + "\n")
      let reflog = runMVC(["reflog", "-n", "2"], in: dir).stdout
      #expect(
        reflog == "\(ids[3].prefix(7)) HEAD@{0}: recover: finish interrupted reset: moving to HEAD~3\n"
          + "\(ids[0].prefix(7)) HEAD@{1}: commit: \(try Self.subject(s, ids[0]))\n", "\(reflog)")
      expectSuccess(runMVC(["reset", "--hard", "ORIG_HEAD"], in: dir), "reset --hard ORIG_HEAD")
      try s.expectWorkingState(3, "back at the old tip")
    }
  }
}
