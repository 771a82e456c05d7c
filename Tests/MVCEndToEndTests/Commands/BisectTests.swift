import Foundation
import TestSupport
import Testing

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// A generated model with `commits` closed-form ROME edits (`mvc-demo-editor rome`), committed one
/// by one; edit `culprit` is a disabling one (key shrunk 300×, so ‖ΔW‖/‖W‖ = 3 instead of 0.01).
/// `base.safetensors` is a copy of the root; `eval.sh` runs `mvc-demo-editor eval` against it
/// and counts its runs in `steps.txt`.
private struct RomeHistory {
  var s: Scenario
  var ids: [String]  // root first: ids[i] is the commit of edit i
  var culprit: Int
  var dir: URL { s.dir }
  var base: URL { dir.appendingPathComponent("base.safetensors") }
  var model: URL { s.model }
  var stateFiles: URL { dir.appendingPathComponent("states") }
  func stateFile(_ i: Int) -> URL { stateFiles.appendingPathComponent("\(i).safetensors") }

  init(dir: URL, commits: Int, seed: UInt64, blocks: Int = 3) throws {
    s = Scenario(dir: dir, seed: seed)
    try #require(demoEditorExecutable != nil, "mvc-demo-editor is not built beside mvc")
    expectSuccess(
      runEditor(
        [
          "generate", "model.safetensors", "--blocks", "\(blocks)", "--hidden", "32",
          "--intermediate", "64", "--seed", "\(seed)",
        ],
        in: dir), "generate")
    try FileManager.default.createDirectory(
      at: dir.appendingPathComponent("states"), withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      at: s.model, to: dir.appendingPathComponent("base.safetensors"))
    try FileManager.default.copyItem(
      at: s.model, to: dir.appendingPathComponent("states/0.safetensors"))
    try s.initialize()
    var rng = SplitMix64(seed: seed)
    culprit = 5 + Int(rng.next() % UInt64(commits - 8))
    ids = []
    for i in 1...commits {
      let layer = i % blocks
      var args = [
        "rome", "model.safetensors", "--layer", "\(layer)", "--seed",
        "\(seed &* 1000 &+ UInt64(i))",
      ]
      if i == culprit { args.append("--disabling") }
      let edit = runEditor(args, in: dir)
      expectSuccess(edit, "rome edit \(i)")
      try #require(edit.status == 0)
      try s.commit("edit \(i): layer \(layer)\(i == culprit ? " (the disabling one)" : "")")
      try FileManager.default.copyItem(
        at: s.model, to: dir.appendingPathComponent("states/\(i).safetensors"))
    }
    ids = try s.commitIDs().reversed()
    try #require(ids.count == commits + 1)
    let editor = try #require(demoEditorExecutable)
    try writeScript(
      dir.appendingPathComponent("eval.sh"),
      """
      echo step >> '\(dir.path)/steps.txt'
      exec '\(editor.path)' eval '\(s.model.path)' --base '\(base.path)' --probe-seed 3 --threshold 0.5
      """)
  }

  /// `mvc-demo-editor eval` of a model file: true when good (exit 0).
  func evaluate(_ model: URL, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    let r = runEditor(
      ["eval", model.path, "--base", base.path, "--probe-seed", "3", "--threshold", "0.5"], in: dir)
    #expect(r.status == 0 || r.status == 1, "eval: \(r.stderr)", sourceLocation: sourceLocation)
    return r.status == 0
  }

  /// Expects `mvc bisect reset` to put back the newest state byte for byte and HEAD on main.
  func expectReset(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let reset = runMVC(["bisect", "reset"], in: dir)
    expectSuccess(reset, "bisect reset after \(what)", sourceLocation: sourceLocation)
    try s.expectWorkingState(
      s.states.count - 1, "after bisect reset (\(what))", sourceLocation: sourceLocation)
    #expect(
      headReference(dir) == "refs/heads/main", "HEAD after reset (\(what))",
      sourceLocation: sourceLocation)
    s.expectClean("bisect reset (\(what))", sourceLocation: sourceLocation)
  }

  /// Drives `mvc bisect good|bad|skip` from the known culprit (the test's predicate), checking
  /// that each step's working model is that commit's exact bytes. Skips up to `skips` commits
  /// that are neither the culprit nor its parent. Returns the first bad id and the marks made.
  func manualBisect(skips: Int, during: ((String) throws -> Void)? = nil) throws -> (String?, Int) {
    var result = runMVC(["bisect", "start", "HEAD", ids[0]], in: dir)
    expectSuccess(result, "bisect start")
    var marks = 0
    var skipsLeft = skips
    while marks < 40 {
      if let bad = firstBadID(result.stdout) { return (bad, marks) }
      guard let current = bracketedIDs(result.stdout).last, let index = ids.firstIndex(of: current)
      else {
        Issue.record("bisect printed no commit under test: \(result.stdout) \(result.stderr)")
        return (nil, marks)
      }
      try s.expectWorkingState(index, "bisect step at edit \(index)")
      if marks == 0 { try during?(current) }
      marks += 1
      let term: String
      if skipsLeft > 0, index != culprit, index != culprit - 1 {
        term = "skip"
        skipsLeft -= 1
      } else {
        term = index >= culprit ? "bad" : "good"
      }
      result = runMVC(["bisect", term], in: dir)
      expectSuccess(result, "bisect \(term) at edit \(index)")
    }
    Issue.record("bisection did not end after 40 marks")
    return (nil, marks)
  }
}

/// Largest |a − b| over every tensor, and the largest |b|.
private func maxAbsDifference(
  _ a: [String: (shape: [Int], values: [Float])], _ b: [String: [Double]]
) -> (Double, Double) {
  var diff = 0.0
  var scale = 0.0
  for (name, t) in a {
    guard let r = b[name], r.count == t.values.count else { return (.infinity, 0) }
    for (x, y) in zip(t.values, r) {
      diff = max(diff, abs(Double(x) - y))
      scale = max(scale, abs(y))
    }
  }
  return (diff, scale)
}

@Suite("bisect: find, reset, revert a disabling edit", .serialized)
struct BisectTests {
  /// Issue 3's "done when": 30 rank-one edits, one disabling; `bisect run` with an evaluation
  /// program, manual marks, marks with skips and `--max-norm-ratio` all name exactly that commit;
  /// reset restores byte for byte; revert undoes it and keeps every other edit.
  @Test func thirtyEditsBisectToTheDisablingEdit() throws {
    try withTemporaryDirectory { dir in
      let h = try RomeHistory(dir: dir, commits: 30, seed: 42)
      let culprit = h.culprit
      let culpritID = h.ids[culprit]
      print("bisect: disabling edit planted at position \(culprit) of 30 (\(culpritID))")
      // The predicate, checked on the saved states: good before the culprit, bad from it on.
      try #require(
        h.evaluate(h.stateFile(culprit - 1)),
        "the state before the disabling edit should evaluate good")
      try #require(!h.evaluate(h.stateFile(culprit)), "the disabling edit should evaluate bad")
      try #require(!h.evaluate(h.model), "HEAD should evaluate bad")
      #expect(h.evaluate(h.stateFile(0)))

      // mvc log --stat flags the culprit (and nothing before it) as a norm outlier.
      let stat = runMVC(["log", "--stat"], in: dir)
      expectSuccess(stat, "log --stat")
      if let at = stat.stdout.range(of: culpritID) {
        let next = h.ids.compactMap {
          stat.stdout.range(of: $0, range: at.upperBound..<stat.stdout.endIndex)?.lowerBound
        }.min()
        let block = stat.stdout[at.lowerBound..<(next ?? stat.stdout.endIndex)]
        #expect(block.contains("outlier"), "log --stat does not flag the culprit: \(block)")
        let older = stat.stdout[(next ?? stat.stdout.endIndex)...]
        #expect(!older.contains("outlier"), "log --stat flags a commit before the culprit")
      } else {
        Issue.record("log --stat does not show \(culpritID)")
      }

      // mvc plot writes an SVG that parses as XML.
      let plot = runMVC(["plot", "--out", "norms.svg", "--culprit", culpritID], in: dir)
      expectSuccess(plot, "plot")
      #if canImport(FoundationXML)
        let document = try XMLDocument(
          contentsOf: dir.appendingPathComponent("norms.svg"), options: [])
        #expect(document.rootElement()?.name == "svg" || document.rootElement()?.localName == "svg")
      #endif

      // 1. bisect run with the evaluation program.
      let start = runMVC(["bisect", "start", "HEAD", h.ids[0]], in: dir)
      expectSuccess(start, "bisect start")
      #expect(start.stdout.contains("Bisecting: "), "bisect start: \(start.stdout)")
      let evalScript = dir.appendingPathComponent("eval.sh").path
      let run = runMVC(["bisect", "run", evalScript], in: dir)
      expectSuccess(run, "bisect run")
      #expect(firstBadID(run.stdout) == culpritID, "bisect run: \(run.stdout)")
      #expect(run.stdout.contains("\(culpritID) is the first bad commit"))
      let steps =
        ((try? String(contentsOf: dir.appendingPathComponent("steps.txt"), encoding: .utf8)) ?? "")
        .split(separator: "\n").count
      print("bisect: 30-commit bisection took \(steps) evaluation steps (⌈log2 30⌉ = 5)")
      #expect(steps >= 4 && steps <= 6, "evaluation steps: \(steps)")

      // bisect log (replayable) and --json.
      let log = runMVC(["bisect", "log"], in: dir)
      expectSuccess(log, "bisect log")
      #expect(log.stdout.contains("mvc bisect bad \(culpritID)"), "bisect log: \(log.stdout)")
      #expect(
        log.stdout.contains("mvc bisect good \(h.ids[culprit - 1])"), "bisect log: \(log.stdout)")
      let logJSON = runMVC(["bisect", "log", "--json"], in: dir)
      expectSuccess(logJSON, "bisect log --json")
      let object = try #require(
        try JSONSerialization.jsonObject(with: Data(logJSON.stdout.utf8)) as? [String: Any])
      #expect(object["schema"] as? String == "mvc.bisect-log/1")
      #expect(object["bad"] as? String == culpritID)
      let good = object["good"] as? [String] ?? []
      #expect(good.contains(h.ids[0]) && good.contains(h.ids[culprit - 1]), "good: \(good)")
      #expect((object["lines"] as? [String])?.isEmpty == false)
      try h.expectReset("bisect run")

      // 2. Manual marks from the test's predicate; refusals in the middle of it.
      let (manual, marks) = try h.manualBisect(skips: 0) { current in
        let before = try Data(contentsOf: h.s.model)
        var dirty = h.s
        try dirty.edit(rank: 1)
        h.s.expectRefused(["commit", "-m", "during a bisection"], naming: ["bisect reset"])
        try before.write(to: h.s.model)
        h.s.expectRefused(["switch", "main"], naming: ["bisect reset"])
        h.s.expectRefused(["bisect", "start"], naming: ["bisect"])
        #expect(headReference(dir) == current)
      }
      #expect(manual == culpritID, "manual bisection")
      print("bisect: manual good/bad took \(marks) marks")
      try h.expectReset("manual marks")

      // 3. Manual marks with two skips reach the same answer.
      let (skipped, skippedMarks) = try h.manualBisect(skips: 2)
      #expect(skipped == culpritID, "bisection with skips")
      let skipLog = runMVC(["bisect", "log", "--json"], in: dir)
      let skipObject =
        try JSONSerialization.jsonObject(with: Data(skipLog.stdout.utf8)) as? [String: Any]
      #expect(
        (skipObject?["skipped"] as? [String])?.count == 2,
        "skipped: \(skipObject?["skipped"] ?? "nil")")
      print("bisect: with 2 skips took \(skippedMarks) marks")
      try h.expectReset("marks with skips")

      // 4. The built-in weights-only predicate.
      expectSuccess(runMVC(["bisect", "start", "HEAD", h.ids[0]], in: dir), "bisect start")
      let normRun = runMVC(["bisect", "run", "--max-norm-ratio", "0.5"], in: dir)
      expectSuccess(normRun, "bisect run --max-norm-ratio")
      #expect(firstBadID(normRun.stdout) == culpritID, "--max-norm-ratio: \(normRun.stdout)")
      try h.expectReset("--max-norm-ratio")

      // 5. Revert: the root is refused; the culprit's revert evaluates good and keeps every other edit.
      h.s.expectRefused(["revert", h.ids[0]], naming: ["root"])
      let revert = runMVC(["revert", culpritID], in: dir)
      expectSuccess(revert, "revert")
      h.s.expectClean("revert")
      #expect(h.evaluate(h.model), "the reverted model should evaluate good")
      // "History without that edit" = base + Σ_{i ≠ culprit} (state_i − state_{i−1}) in Float64
      // (rebuilt from the saved states, not by replaying the editor: a ROME edit's size depends on
      // ‖W‖, which the disabling edit changed, so later edits are not independent of it).
      var reference: [String: [Double]] = try floatTensors(h.stateFile(0)).mapValues {
        $0.values.map(Double.init)
      }
      var previous = try floatTensors(h.stateFile(0))
      for i in 1...30 {
        let state = try floatTensors(h.stateFile(i))
        if i != culprit {
          for (name, t) in state where t.values != previous[name]?.values {
            guard let p = previous[name]?.values, reference[name] != nil else { continue }
            for k in 0..<t.values.count {
              reference[name, default: []][k] += Double(t.values[k]) - Double(p[k])
            }
          }
        }
        previous = state
      }
      let (difference, scale) = maxAbsDifference(try floatTensors(h.model), reference)
      print(
        "bisect: revert vs history without the edit: max |Δ| \(difference), relative to max|W| \(difference / scale)"
      )
      #expect(
        difference <= 1e-5 * scale,
        "reverted model differs from history-without-the-edit by \(difference) (max|W| \(scale))")

      // cherry-pick brings the delta back: bad again, equal to the newest state within rounding.
      let pick = runMVC(["cherry-pick", culpritID], in: dir)
      expectSuccess(pick, "cherry-pick")
      #expect(!h.evaluate(h.model), "cherry-picking the culprit back should evaluate bad")
      let final = try floatTensors(h.stateFile(30)).mapValues { $0.values.map(Double.init) }
      let (pickDifference, pickScale) = maxAbsDifference(try floatTensors(h.model), final)
      #expect(
        pickDifference <= 1e-5 * pickScale,
        "cherry-pick differs from the newest edit state by \(pickDifference)")
      h.s.expectRefused(["cherry-pick", h.ids[0]], naming: ["root"])
    }
  }

  /// Bad marks and failing programs: clear error, exit 128, the bisection kept; reset restores.
  @Test func badMarksAndFailingProgramsKeepTheBisection() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 11)
      try s.writeModel(blocks: 2, hidden: 32, intermediate: 64)
      try s.initialize()
      try s.editAndCommit(3)
      expectSuccess(runMVC(["switch", "-c", "side"], in: dir), "switch -c side")
      try s.editAndCommit(1)
      let sideID = try s.commitIDs()[0]
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      s.states.removeLast()
      try s.editAndCommit(4)
      let ids = Array(try s.commitIDs().reversed())
      #expect(ids.count == 8)
      try s.expectWorkingState(7, "main before bisect")

      expectSuccess(runMVC(["bisect", "start", "HEAD", ids[0]], in: dir), "bisect start")
      let logBefore = runMVC(["bisect", "log"], in: dir).stdout
      s.expectRefused(["bisect", "good", sideID], naming: ["ancestor"])
      s.expectRefused(["bisect", "bad", ids[0]], naming: ["good and bad"])
      s.expectRefused(["bisect", "good", ids[7]], naming: ["good and bad"])
      s.expectRefused(["bisect", "run", "./no-such-eval.sh"], naming: ["no-such-eval.sh"])
      let killed = dir.appendingPathComponent("killed.sh")
      try writeScript(killed, "kill -9 $$")
      s.expectRefused(["bisect", "run", killed.path], naming: ["signal"])
      let abort = dir.appendingPathComponent("abort.sh")
      try writeScript(abort, "exit 200")
      s.expectRefused(["bisect", "run", abort.path], naming: ["200", "128"])
      #expect(runMVC(["bisect", "log"], in: dir).stdout == logBefore, "the bisect log changed")
      // The bisection is intact: a real program still finishes it, then reset restores. The
      // program leaves a background process behind at every step, as an evaluation that starts
      // a server may: mvc waits for the program alone, as git does, so each step finds the
      // previous step's process still running (it did not before: Foundation.Process waited
      // for every holder of the socket it watches, the left-behind process included).
      let bad = dir.appendingPathComponent("all-bad.sh")
      let pids = dir.appendingPathComponent("left-behind.pids").path
      let seen = dir.appendingPathComponent("left-behind.seen").path
      try writeScript(
        bad,
        """
        previous=$(tail -n 1 '\(pids)' 2>/dev/null)
        if [ -n "$previous" ]; then
          # Its state in /proc: an ended process may stay a zombie (Z) here, which kill -0 cannot tell.
          case $(cut -d ' ' -f 3 /proc/"$previous"/stat 2>/dev/null) in
            S | R) echo running >> '\(seen)' ;;
            *) echo ended >> '\(seen)' ;;
          esac
        fi
        sleep 10 < /dev/null > /dev/null 2>&1 &
        echo $! >> '\(pids)'
        exit 1
        """)
      defer {
        let started = (try? String(contentsOfFile: pids, encoding: .utf8)) ?? ""
        for pid in started.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
      }
      let run = runMVCOutcome(["bisect", "run", bad.path], in: dir, timeout: 90)
      expectSuccess(run.tuple, "bisect run after the failures")
      let states = ((try? String(contentsOfFile: seen, encoding: .utf8)) ?? "").split(separator: "\n")
      #expect(!states.isEmpty && states.allSatisfy { $0 == "running" }, "left-behind processes at each step: \(states)")
      #expect(
        firstBadID(run.stdout) == ids[1],
        "every commit bad: the first edit is first bad: \(run.stdout)")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      try s.expectWorkingState(7, "after bisect reset")
      #expect(headReference(dir) == "refs/heads/main")
      // Without a bisection, marks are refused.
      s.expectRefused(["bisect", "good"], naming: ["bisect start"])
    }
  }

  /// A history with a merge: the disabling edit is on the merged branch; both the evaluation
  /// program and --max-norm-ratio find it.
  @Test func bisectsAcrossAMerge() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 5)
      try #require(demoEditorExecutable != nil)
      expectSuccess(
        runEditor(
          [
            "generate", "model.safetensors", "--blocks", "2", "--hidden", "32", "--intermediate",
            "64", "--seed", "5",
          ], in: dir))
      try FileManager.default.copyItem(
        at: s.model, to: dir.appendingPathComponent("base.safetensors"))
      try s.initialize()
      var seed = 100
      func rome(_ layer: Int, disabling: Bool = false, _ s: inout Scenario) throws {
        seed += 1
        let r = runEditor(
          ["rome", "model.safetensors", "--layer", "\(layer)", "--seed", "\(seed)"]
            + (disabling ? ["--disabling"] : []), in: dir)
        expectSuccess(r, "rome")
        try s.commit("rome \(seed) layer \(layer)\(disabling ? " disabling" : "")")
      }
      for i in 0..<3 { try rome(i % 2, &s) }
      expectSuccess(runMVC(["branch", "alt"], in: dir), "branch alt")
      for i in 0..<2 { try rome(i % 2, &s) }
      expectSuccess(runMVC(["switch", "alt"], in: dir), "switch alt")
      try rome(0, &s)
      try rome(1, disabling: true, &s)
      let culpritID = try s.commitIDs()[0]
      try rome(0, &s)
      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      let merge = runMVC(["merge", "alt"], in: dir)
      expectSuccess(merge, "merge alt")
      try rome(1, &s)
      try rome(0, &s)
      let rootID = try #require(try s.commitIDs().last)
      let editor = try #require(demoEditorExecutable)
      let script = dir.appendingPathComponent("eval.sh")
      try writeScript(
        script,
        "exec '\(editor.path)' eval '\(s.model.path)' --base '\(dir.path)/base.safetensors' --probe-seed 3 --threshold 0.5"
      )
      let finalBytes = try Data(contentsOf: s.model)

      expectSuccess(runMVC(["bisect", "start", "HEAD", rootID], in: dir), "bisect start")
      let run = runMVC(["bisect", "run", script.path], in: dir)
      expectSuccess(run, "bisect run over a merge")
      #expect(firstBadID(run.stdout) == culpritID, "bisect run over a merge: \(run.stdout)")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      expectSameBytes(try Data(contentsOf: s.model), finalBytes, "after reset")

      expectSuccess(runMVC(["bisect", "start", "HEAD", rootID], in: dir), "bisect start")
      let norm = runMVC(["bisect", "run", "--max-norm-ratio", "0.5"], in: dir)
      expectSuccess(norm, "bisect run --max-norm-ratio over a merge")
      #expect(firstBadID(norm.stdout) == culpritID, "--max-norm-ratio over a merge: \(norm.stdout)")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      expectSameBytes(try Data(contentsOf: s.model), finalBytes, "after reset")
      #expect(headReference(dir) == "refs/heads/main")
    }
  }

  /// One bisect step (`mvc bisect good`, which checks out the next midpoint into the working
  /// model) against `mvc checkout -o` of that same commit, on 8 × [512, 2048]. Printed only.
  @Test func bisectStepVersusFullCheckoutTiming() throws {
    try withTemporaryDirectory { dir in
      try #require(demoEditorExecutable != nil)
      expectSuccess(
        runEditor(
          [
            "generate", "model.safetensors", "--blocks", "8", "--hidden", "512", "--intermediate",
            "2048", "--seed", "9",
          ], in: dir),
        "generate")
      var s = Scenario(dir: dir)
      try s.initialize()
      for i in 0..<6 {
        let r = runEditor(
          [
            "lowrank", "model.safetensors", "--tensor", "model.layers.\(i).mlp.down_proj.weight",
            "--seed", "\(i)",
          ], in: dir)
        expectSuccess(r, "lowrank \(i)")
        try s.commit("lowrank \(i)")
      }
      let ids = Array(try s.commitIDs().reversed())
      expectSuccess(runMVC(["bisect", "start", "HEAD", ids[0]], in: dir), "bisect start")
      let clock = ContinuousClock()
      var step: (status: Int32, stdout: String, stderr: String) = (0, "", "")
      let stepTime = clock.measure { step = runMVC(["bisect", "good"], in: dir) }
      expectSuccess(step, "bisect good")
      let target = try #require(bracketedIDs(step.stdout).last, "bisect good: \(step.stdout)")
      var checkout: (status: Int32, stdout: String, stderr: String) = (0, "", "")
      let checkoutTime = clock.measure {
        checkout = runMVC(
          ["checkout", target, "-o", dir.appendingPathComponent("out.safetensors").path], in: dir)
      }
      expectSuccess(checkout, "checkout -o")
      expectSameBytes(
        dir.appendingPathComponent("out.safetensors"), s.model, "checkout -o vs bisect step")
      print(
        "bisect: one step (mvc bisect good) \(stepTime) vs mvc checkout -o of the same commit \(checkoutTime) on 8 × [512, 2048] F32 (debug build)"
      )
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
      try s.expectWorkingState(6, "after reset")
    }
  }
}
