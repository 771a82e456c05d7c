import Foundation
import TestSupport
import Testing

// `mvc bisect run --jobs K [--launcher ...]` on a 200-commit history with a planted disabling
// edit: locally, through `srun` and through `sbatch --wait` on a single-node Slurm cluster this
// test starts itself (scripts/slurm-local.sh; reported skipped, with the reason, when it cannot).

/// A 200-commit history made with `mvc commit-factors` (rank-1 updates of 1e-3 of one
/// down-projection; commit `culprit` adds a rank-1 update of norm ~40, which the evaluation,
/// `mvc-demo-editor eval` against the root model, calls bad), and an evaluation script that
/// records its start and stop (or cancellation) in `events.txt`.
private struct FactorHistory {
  static let commits = 200
  static let culprit = 137
  let dir: URL
  /// Commit ids, root first: ids[i] is commit i.
  let ids: [String]

  var events: URL { dir.appendingPathComponent("events.txt") }
  var culpritID: String { ids[Self.culprit] }

  init(dir: URL) throws {
    self.dir = dir
    let generate = runEditor(
      ["generate", "model.safetensors", "--blocks", "2", "--hidden", "32", "--intermediate", "64", "--seed", "5"],
      in: dir)
    expectSuccess(generate, "generate")
    try #require(generate.status == 0)
    try FileManager.default.copyItem(
      at: dir.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("base.safetensors"))
    try #require(runMVC(["init", "model.safetensors", "-q"], in: dir).status == 0)
    var rng = SplitMix64(seed: 16)
    let name = "model.layers.1.mlp.down_proj.weight"
    func factors(_ scale: Double) -> [FixtureTensor] {
      [
        FixtureTensor(
          name: name + ".u", shape: [32, 1], floats: (0..<32).map { _ in rng.nextGaussian() * Float(scale) }),
        FixtureTensor(
          name: name + ".v", shape: [64, 1], floats: (0..<64).map { _ in rng.nextGaussian() * Float(scale) }),
      ]
    }
    try writeSafetensors(factors(1e-3), to: dir.appendingPathComponent("small.safetensors"))
    try writeSafetensors(factors(1), to: dir.appendingPathComponent("big.safetensors"))
    for i in 1...Self.commits {
      let file = i == Self.culprit ? "big.safetensors" : "small.safetensors"
      let result = runMVC(["commit-factors", file, "-m", "edit \(i)", "-q"], in: dir)
      expectSuccess(result, "commit-factors \(i)")
      try #require(result.status == 0)
    }
    self.ids = try Scenario(dir: dir).commitIDs().reversed()
    try #require(self.ids.count == Self.commits + 1)
  }

  private init(dir: URL, ids: [String]) {
    self.dir = dir
    self.ids = ids
  }

  /// A copy of the history (repository, model, base, script) in `target`.
  func copy(to target: URL) throws -> FactorHistory {
    let copy = Process()
    copy.executableURL = URL(fileURLWithPath: "/bin/cp")
    copy.arguments = ["-a", dir.path + "/.", target.path]
    try copy.run()
    copy.waitUntilExit()
    try #require(copy.terminationStatus == 0)
    return FactorHistory(dir: target, ids: ids)
  }

  /// `eval.sh MODEL`: checks `MVC_BISECT_MODEL` is MODEL, records "start PID TIME COMMIT", sleeps
  /// `seconds` (a cancellation is recorded as a stop), evaluates the model, records "stop PID TIME
  /// STATUS". Exits 200 (≥ 128: an aborted probe) on the commits in `abortOn`.
  func writeEvaluation(seconds: Double, abortOn: [String] = []) throws {
    let editor = try #require(demoEditorExecutable)
    let aborts = abortOn.map {
      "[ \"$MVC_BISECT_COMMIT\" = \($0) ] && { echo \"stop $$ $(date +%s.%N) 200\" >> '\(events.path)'; exit 200; }"
    }
    try writeScript(
      dir.appendingPathComponent("eval.sh"),
      """
      ev='\(events.path)'
      echo "start $$ $(date +%s.%N) $MVC_BISECT_COMMIT" >> "$ev"
      trap 'echo "stop $$ $(date +%s.%N) cancelled" >> "$ev"; exit 143' TERM INT
      [ "$1" = "$MVC_BISECT_MODEL" ] || { echo "stop $$ $(date +%s.%N) 250" >> "$ev"; exit 250; }
      \(aborts.joined(separator: "\n"))
      sleep \(seconds) & wait $!
      '\(editor.path)' eval "$1" --base '\(dir.path)/base.safetensors' --threshold 0.5 > /dev/null
      s=$?
      echo "stop $$ $(date +%s.%N) $s" >> "$ev"
      exit $s
      """)
  }

  struct Event {
    var pid: Int32
    var start: Double
    var stop: Double?
    var stopStatus: String?
    var commit: String
  }

  /// The evaluations recorded in `events.txt`, by pid.
  func evaluations() -> [Event] {
    let text = (try? String(contentsOf: events, encoding: .utf8)) ?? ""
    var byPid: [Int32: Event] = [:]
    var order: [Int32] = []
    for line in text.split(separator: "\n") {
      let words = line.split(separator: " ").map(String.init)
      guard words.count == 4, let pid = Int32(words[1]), let time = Double(words[2]) else { continue }
      if words[0] == "start" {
        byPid[pid] = Event(pid: pid, start: time, stop: nil, stopStatus: nil, commit: words[3])
        order.append(pid)
      } else if words[0] == "stop" {
        byPid[pid]?.stop = time
        byPid[pid]?.stopStatus = words[3]
      }
    }
    return order.compactMap { byPid[$0] }
  }

  /// The most evaluations that ran at once (an evaluation without a stop counts as running to the end).
  func maxConcurrent() -> Int {
    var points: [(Double, Int)] = []
    for e in evaluations() {
      points.append((e.start, 1))
      points.append((e.stop ?? .infinity, -1))
    }
    points.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
    var current = 0
    var best = 0
    for (_, delta) in points {
      current += delta
      best = max(best, current)
    }
    return best
  }
}

/// ⌈log_{k+1} n⌉.
private func ceilLog(_ n: Int, base: Int) -> Int {
  var power = 1
  var result = 0
  while power < n {
    power *= base
    result += 1
  }
  return result
}

/// Whether `pid` has ended (gone, or a zombie nobody reaps: the test's own container init).
private func processEnded(_ pid: Int32) -> Bool {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
  guard let close = stat.lastIndex(of: ")") else { return true }
  let state = stat[stat.index(after: close)...].split(separator: " ").first
  return state == "Z" || state == "X"
}

/// The counts of the run's summary line ("parallel bisect: N probes started, … R rounds; …").
private func summary(_ stdout: String) -> (started: Int, recorded: Int, cancelled: Int, atOnce: Int, rounds: Int)? {
  guard let line = stdout.split(separator: "\n").first(where: { $0.hasPrefix("parallel bisect:") }) else { return nil }
  let numbers = line.split(whereSeparator: { !$0.isNumber && $0 != "." }).compactMap { Int($0) }
  guard numbers.count >= 7 else { return nil }
  return (numbers[0], numbers[1], numbers[2], numbers[5], numbers[6])
}

/// A single-node Slurm cluster started by scripts/slurm-local.sh, stopped by `stop()`.
private struct SlurmCluster {
  let dir: URL
  var conf: String { dir.appendingPathComponent("slurm.conf").path }
  static var script: URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts/slurm-local.sh")
  }

  /// Starts the cluster, or cancels the test (skipped, with the reason) when it cannot.
  static func start(in dir: URL) throws -> SlurmCluster {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let result = runProcessOutcome(
      URL(fileURLWithPath: "/bin/bash"), [script.path, "start", dir.path], in: dir, timeout: 120)
    if result.status == 77 {
      try Test.cancel(
        "cannot start a Slurm cluster here: \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
    }
    try #require(result.status == 0, "slurm-local.sh start: \(result.summary)")
    return SlurmCluster(dir: dir)
  }

  func stop() {
    _ = runProcessOutcome(
      URL(fileURLWithPath: "/bin/bash"), [Self.script.path, "stop", dir.path], in: dir, timeout: 60)
  }

  func queue() -> String {
    let squeue = runProcessOutcome(
      URL(fileURLWithPath: "/usr/bin/squeue"), ["-h", "-o", "%i %T"], in: dir, environment: ["SLURM_CONF": conf])
    return squeue.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  }
}

@Suite(.serialized) struct ParallelBisectTests {
  /// Runs `mvc bisect run --jobs 3 [--launcher]` to the end and checks the culprit, the rounds
  /// and probes against ⌈log₄ 200⌉ + 2, that at most 3 evaluations ran at once, that cancelled
  /// probes stopped, that the marks are in BISECT_LOG, and that the worktrees are gone.
  fileprivate func expectFullRun(
    _ h: FactorHistory, launcher: [String], environment: [String: String] = [:],
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let k = 3
    try h.writeEvaluation(seconds: 1)
    expectSuccess(
      runMVC(["bisect", "start", "HEAD", h.ids[0]], in: h.dir), "bisect start", sourceLocation: sourceLocation)
    let run = runMVCOutcome(
      ["bisect", "run", "--jobs", "\(k)"] + launcher + ["./eval.sh", "{model}"], in: h.dir, environment: environment,
      timeout: 300)
    #expect(run.status == 0, "\(run.summary)", sourceLocation: sourceLocation)
    #expect(
      run.stdout.contains("\(h.culpritID) is the first bad commit"), "\(run.stdout)", sourceLocation: sourceLocation)
    let counts = try #require(summary(run.stdout), "no summary line: \(run.stdout)", sourceLocation: sourceLocation)
    let bound = ceilLog(FactorHistory.commits, base: k + 1) + 2
    #expect(counts.rounds <= bound, "\(counts.rounds) rounds, bound \(bound)", sourceLocation: sourceLocation)
    #expect(counts.started <= k * bound, "\(counts.started) probes", sourceLocation: sourceLocation)
    #expect(counts.atOnce <= k, sourceLocation: sourceLocation)
    let evaluations = h.evaluations()
    // Every answer came from an evaluation; a probe cancelled while its job was still queued
    // never ran one.
    #expect(
      evaluations.count <= counts.started && evaluations.count >= counts.recorded,
      "\(evaluations.count) evaluations recorded for \(counts.started) probes, \(counts.recorded) answers",
      sourceLocation: sourceLocation)
    #expect(h.maxConcurrent() <= k, "\(h.maxConcurrent()) evaluations at once", sourceLocation: sourceLocation)
    #expect(
      !evaluations.contains { $0.stopStatus == "250" }, "{model} and MVC_BISECT_MODEL differ",
      sourceLocation: sourceLocation)
    // A cancelled probe recorded its cancellation and its processes are gone.
    for e in evaluations where e.stopStatus == "cancelled" || e.stop == nil {
      #expect(processEnded(e.pid), "cancelled evaluation \(e.pid) still runs", sourceLocation: sourceLocation)
      #expect(e.stopStatus == "cancelled", "evaluation \(e.pid) has no stop record", sourceLocation: sourceLocation)
    }
    // Every result is a mark in BISECT_LOG, and the log ends with the first bad commit.
    let log = runMVC(["bisect", "log"], in: h.dir).stdout
    let marks = log.split(separator: "\n").filter { $0.hasPrefix("mvc bisect good") || $0.hasPrefix("mvc bisect bad") }
    #expect(
      marks.count == counts.recorded + 2, "\(marks.count) marks for \(counts.recorded) results",
      sourceLocation: sourceLocation)
    #expect(log.contains("# first bad commit: [\(h.culpritID)]"), sourceLocation: sourceLocation)
    for mark in marks {
      let words = mark.split(separator: " ")
      guard let id = words.last, let index = h.ids.firstIndex(of: String(id)) else { continue }
      let expected = index >= FactorHistory.culprit ? "bad" : "good"
      #expect(words[2] == expected, "\(mark) (commit \(index))", sourceLocation: sourceLocation)
    }
    let probes = h.dir.appendingPathComponent(".mvc/bisect-probes")
    let leftModels = ((try? FileManager.default.contentsOfDirectory(atPath: probes.path)) ?? []).filter {
      FileManager.default.fileExists(atPath: probes.appendingPathComponent("\($0)/model").path)
    }
    #expect(leftModels.isEmpty, "worktrees left: \(leftModels)", sourceLocation: sourceLocation)
    expectSuccess(runMVC(["bisect", "reset"], in: h.dir), "bisect reset", sourceLocation: sourceLocation)
    #expect(!FileManager.default.fileExists(atPath: probes.path), sourceLocation: sourceLocation)
  }

  /// SIGINT while the first probes run: exit 130, every probe cancelled and stopped, the log
  /// says so, and `mvc bisect run` resumes to the culprit.
  fileprivate func expectInterruptAndResume(
    _ h: FactorHistory, launcher: [String], environment: [String: String] = [:], cluster: SlurmCluster? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    try h.writeEvaluation(seconds: 30)
    expectSuccess(
      runMVC(["bisect", "start", "HEAD", h.ids[0]], in: h.dir), "bisect start", sourceLocation: sourceLocation)
    let arguments = ["bisect", "run", "--jobs", "3"] + launcher + ["./eval.sh", "{model}"]
    let running = try startMVC(arguments, in: h.dir, environment: environment)
    let deadline = Date().addingTimeInterval(60)
    while h.evaluations().count < 3 && Date() < deadline && running.isRunning { usleep(50_000) }
    try #require(h.evaluations().count == 3, "three probes did not start", sourceLocation: sourceLocation)
    // `bisect visualize` marks the three commits under test.
    let view = runMVC(["bisect", "visualize"], in: h.dir).stdout.split(separator: "\n")
    let underTest = Set(h.evaluations().map { String($0.commit.prefix(7)) })
    let marked = Set(view.filter { $0.hasPrefix("> ") }.map { String($0.dropFirst(2).prefix(7)) })
    #expect(marked == underTest, "visualize: \(view.prefix(5))", sourceLocation: sourceLocation)
    kill(running.process.processIdentifier, SIGINT)
    let interrupted = running.finishMVC()
    #expect(interrupted.status == 130, "\(interrupted.summary)", sourceLocation: sourceLocation)
    #expect(interrupted.stdout.contains("cancelled: the run was interrupted"), sourceLocation: sourceLocation)
    // The cancelled evaluations really stopped (the 30 s sleep was cut short).
    let stopBy = Date().addingTimeInterval(15)
    while Date() < stopBy && h.evaluations().contains(where: { $0.stop == nil || !processEnded($0.pid) }) {
      usleep(100_000)
    }
    for e in h.evaluations() {
      #expect(
        e.stopStatus == "cancelled", "evaluation \(e.pid): \(e.stopStatus ?? "no stop")", sourceLocation: sourceLocation
      )
      #expect(processEnded(e.pid), "evaluation \(e.pid) still runs", sourceLocation: sourceLocation)
      #expect(
        (e.stop ?? .infinity) - e.start < 20, "evaluation \(e.pid) ran its full sleep", sourceLocation: sourceLocation)
    }
    if let cluster {
      var queue = cluster.queue()
      let queueBy = Date().addingTimeInterval(15)
      while !queue.isEmpty && Date() < queueBy {
        usleep(200_000)
        queue = cluster.queue()
      }
      #expect(queue.isEmpty, "jobs left in the queue: \(queue)", sourceLocation: sourceLocation)
    }
    let log = runMVC(["bisect", "log"], in: h.dir).stdout
    #expect(log.contains("# bisect run interrupted"), "\(log)", sourceLocation: sourceLocation)
    // Resume with a quick evaluation.
    try h.writeEvaluation(seconds: 0.2)
    let resumed = runMVCOutcome(arguments, in: h.dir, environment: environment, timeout: 300)
    #expect(resumed.status == 0, "\(resumed.summary)", sourceLocation: sourceLocation)
    #expect(resumed.stdout.contains("\(h.culpritID) is the first bad commit"), sourceLocation: sourceLocation)
    expectSuccess(runMVC(["bisect", "reset"], in: h.dir), "bisect reset", sourceLocation: sourceLocation)
  }

  @Test func localJobs() throws {
    try withTemporaryDirectory { dir in
      let template = dir.appendingPathComponent("template")
      try FileManager.default.createDirectory(at: template, withIntermediateDirectories: true)
      let h = try FactorHistory(dir: template)
      for name in ["full", "interrupt", "failures"] {
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(name), withIntermediateDirectories: true)
      }
      try expectFullRun(try h.copy(to: dir.appendingPathComponent("full")), launcher: [])
      try expectInterruptAndResume(try h.copy(to: dir.appendingPathComponent("interrupt")), launcher: [])

      // An evaluation that exits ≥ 128 on two commits: reported, not counted, the culprit still found.
      let f = try h.copy(to: dir.appendingPathComponent("failures"))
      try f.writeEvaluation(seconds: 0.1, abortOn: [f.ids[50], f.ids[100]])
      expectSuccess(runMVC(["bisect", "start", "HEAD", f.ids[0]], in: f.dir), "bisect start")
      let run = runMVC(["bisect", "run", "--jobs", "3", "./eval.sh", "{model}"], in: f.dir)
      #expect(run.status == 0, "\(run.stderr)")
      #expect(run.stdout.contains("\(f.culpritID) is the first bad commit"))
      #expect(run.stderr.contains("exited 200 (>= 128: aborted, not counted)"), "\(run.stderr)")
      let log = runMVC(["bisect", "log"], in: f.dir).stdout
      #expect(!log.contains("mvc bisect bad \(f.ids[50])") && !log.contains("mvc bisect good \(f.ids[50])"))
      #expect(log.contains("# probe") && log.contains("aborted, not counted"))
      expectSuccess(runMVC(["bisect", "reset"], in: f.dir), "bisect reset")

      // A launcher that never runs the wrapper: no status file, a launcher failure; k in a row stop
      // the run with the marks as they were.
      expectSuccess(runMVC(["bisect", "start", "HEAD", f.ids[0]], in: f.dir), "bisect start")
      let before = runMVC(["bisect", "log"], in: f.dir).stdout
      let broken = runMVCOutcome(
        ["bisect", "run", "--jobs", "2", "--launcher", "true", "./eval.sh", "{model}"], in: f.dir)
      #expect(broken.status == 128, "\(broken.summary)")
      #expect(broken.stderr.contains("no status from the wrapper"), "\(broken.stderr)")
      let after = runMVC(["bisect", "log"], in: f.dir).stdout
      #expect(after.hasPrefix(before))
      #expect(!after.dropFirst(before.count).contains("mvc bisect "), "a launcher failure was counted: \(after)")
      expectSuccess(runMVC(["bisect", "reset"], in: f.dir), "bisect reset")

      // Weight-only predicates need no worktree: every commit at once from the stored factors.
      expectSuccess(runMVC(["bisect", "start", "HEAD", f.ids[0]], in: f.dir), "bisect start")
      let head = headReference(f.dir)
      let norms = runMVCOutcome(["bisect", "run", "--jobs", "4", "--max-norm-ratio", "0.5"], in: f.dir)
      #expect(norms.status == 0, "\(norms.summary)")
      #expect(norms.stdout.contains("\(f.culpritID) is the first bad commit"), "\(norms.stdout)")
      #expect(headReference(f.dir) == head, "the built-in run moved HEAD")
      #expect(!FileManager.default.fileExists(atPath: f.dir.appendingPathComponent(".mvc/bisect-probes").path))
      expectSuccess(runMVC(["bisect", "reset"], in: f.dir), "bisect reset")
    }
  }

  @Test func slurmSrunAndSbatch() throws {
    try withTemporaryDirectory { dir in
      let cluster = try SlurmCluster.start(in: dir.appendingPathComponent("slurm"))
      defer { cluster.stop() }
      let environment = ["SLURM_CONF": cluster.conf]
      let template = dir.appendingPathComponent("template")
      try FileManager.default.createDirectory(at: template, withIntermediateDirectories: true)
      let h = try FactorHistory(dir: template)
      for name in ["srun", "sbatch", "interrupt"] {
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(name), withIntermediateDirectories: true)
      }
      try expectFullRun(
        try h.copy(to: dir.appendingPathComponent("srun")), launcher: ["--launcher", "srun -n1"],
        environment: environment)
      let sbatchDir = dir.appendingPathComponent("sbatch")
      try expectFullRun(
        try h.copy(to: sbatchDir), launcher: ["--launcher", "sbatch --wait -o \(sbatchDir.path)/slurm-%j.out"],
        environment: environment)
      #expect(cluster.queue().isEmpty, "jobs left: \(cluster.queue())")
      try expectInterruptAndResume(
        try h.copy(to: dir.appendingPathComponent("interrupt")), launcher: ["--launcher", "srun -n1"],
        environment: environment, cluster: cluster)
    }
  }
}
