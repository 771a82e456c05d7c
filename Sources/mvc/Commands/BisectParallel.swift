import ArgumentParser
import EditVCS
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Set by SIGINT/SIGTERM during a parallel `bisect run`; the scheduler loop polls it.
nonisolated(unsafe) private var parallelRunInterrupted: sig_atomic_t = 0

/// `mvc bisect run --jobs K [--launcher CMD] PROGRAM ARGS...`: up to K probes at once, each on its
/// own materialized copy of the model, dispatched asynchronously: a freed slot gets the commit
/// most useful given the results so far and the probes still in flight, and a probe whose commit
/// is no longer a candidate is cancelled (through `scancel` for Slurm launchers, and a SIGTERM to
/// its process group).
///
/// Each probe lives in `.mvc/bisect-probes/N-SHORT/`: `model/` (the worktree), `run.sh` (the
/// wrapper the launcher runs: it runs the program and writes its exit status to `status`),
/// `output.log` (the launcher's output), `job` (the Slurm job id, when there is one). The
/// program's answer is read from `status` only; no `status` means the launcher failed. The
/// worktree is removed as soon as the probe ends; the folder goes with `mvc bisect reset`.
struct ParallelBisectRun {
  var global: GlobalOptions
  var jobs: Int
  var launcher: String?
  var cancelCommand: String?
  var command: [String]

  /// One probe in flight.
  final class Probe {
    let number: Int
    let commit: ObjectID
    let folder: String
    let pid: pid_t
    let started: Date
    /// The scheduling round: one more than the largest round of the probes whose result was in
    /// before this one started (the critical path, counted in evaluations). The run's rounds
    /// are the largest round of a probe that answered (cancelled probes do not count).
    let round: Int
    var cancelled: Date?
    var signalled = false
    var killed = false

    init(number: Int, commit: ObjectID, folder: String, pid: pid_t, started: Date, round: Int) {
      self.number = number
      self.commit = commit
      self.folder = folder
      self.pid = pid
      self.started = started
      self.round = round
    }

    var statusPath: String { (folder as NSString).appendingPathComponent("status") }
    var outputPath: String { (folder as NSString).appendingPathComponent("output.log") }
    var modelFolder: String { (folder as NSString).appendingPathComponent("model") }

    /// The Slurm job id: written by the wrapper when it runs, or printed by sbatch/srun while queued.
    var jobID: String? {
      if let text = try? String(contentsOfFile: (folder as NSString).appendingPathComponent("job"), encoding: .utf8),
        let id = text.split(whereSeparator: \.isWhitespace).first
      {
        return String(id)
      }
      guard let output = try? String(contentsOfFile: outputPath, encoding: .utf8) else { return nil }
      for line in output.split(separator: "\n") {
        let words = line.split(separator: " ")
        if line.hasPrefix("Submitted batch job"), let id = words.last, Int(id) != nil { return String(id) }
        if line.hasPrefix("srun: job"), words.count > 2, Int(words[2]) != nil { return String(words[2]) }
      }
      return nil
    }
  }

  /// What a run did, printed at its end (and read by tests and the benchmark).
  struct Statistics {
    var started = 0
    var recorded = 0
    var cancelled = 0
    var failed = 0
    var unneeded = 0
    var maxInFlight = 0
    var rounds = 0
  }

  /// Checks the marks, creates `.mvc/bisect-probes/` (emptied of an earlier run's folders) and
  /// logs the run; the repository (and its lock) is released on return.
  func prepare() throws -> String {
    let setup = try Session.open(global)
    guard let state = try setup.bisectState() else { throw RepositoryError.noBisectInProgress }
    guard state.bad != nil, !state.good.isEmpty else { throw RepositoryError.bisectRunNeedsMarks }
    let probeRoot = setup.bisectProbeDirectory
    try Self.fileOperation("create", probeRoot) {
      try FileManager.default.createDirectory(atPath: probeRoot, withIntermediateDirectories: true)
    }
    let launcherText = launcher.map { " --launcher '\($0)'" } ?? ""
    try setup.appendBisectComment("bisect run --jobs \(jobs)\(launcherText): \(command.joined(separator: " "))")
    return probeRoot
  }

  func run() throws {
    let probeRoot = try prepare()
    // One parallel run at a time (the repository lock is held only between steps).
    let lockPath = (probeRoot as NSString).appendingPathComponent("run.lock")
    let lockFD = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard lockFD >= 0, flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
      throw RepositoryError.bisectRunAborted(
        program: command.first ?? "mvc", reason: "cannot start: another 'mvc bisect run' holds '\(lockPath)'")
    }
    defer { close(lockFD) }
    // Folders of an earlier, interrupted run: their results were not recorded, so they go.
    for name in (try? FileManager.default.contentsOfDirectory(atPath: probeRoot)) ?? [] where name != "run.lock" {
      try? FileManager.default.removeItem(atPath: (probeRoot as NSString).appendingPathComponent(name))
    }
    let cancel = cancelCommand ?? Self.defaultCancelCommand(launcher)

    parallelRunInterrupted = 0
    // A parent may have started mvc with these blocked (the mask survives exec).
    var unblock = sigset_t()
    sigemptyset(&unblock)
    sigaddset(&unblock, SIGINT)
    sigaddset(&unblock, SIGTERM)
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    signal(SIGINT) { _ in parallelRunInterrupted = 1 }
    signal(SIGTERM) { _ in parallelRunInterrupted = 1 }
    defer {
      signal(SIGINT, SIG_DFL)
      signal(SIGTERM, SIG_DFL)
    }

    let runStart = Date()
    var running: [Probe] = []
    var stopping: [Probe] = []  // cancelled, waiting for the launcher to exit
    var draining: [Probe] = []  // answered, the launcher not yet exited
    var failed: Set<ObjectID> = []
    var failedInARow = 0
    var finishedRounds: [(at: Date, round: Int)] = []
    var stats = Statistics()
    var needChoice = true
    var settleUntil = Date.distantPast
    var stoppingBefore = 0
    var number = 0

    func finish(_ probe: Probe) {
      try? FileManager.default.removeItem(atPath: probe.modelFolder)
    }

    func cancelProbe(_ probe: Probe, why: String) {
      guard probe.cancelled == nil else { return }
      probe.cancelled = Date()
      // Through the scheduler when it has the job (the launcher then exits as the job ends, so
      // the slot frees only once the probe has stopped); a SIGTERM to the launcher's process
      // group otherwise, and as a fallback 20 s later.
      var throughScheduler = false
      if let cancel, let job = probe.jobID {
        throughScheduler = Self.runShell(cancel.replacingOccurrences(of: "{job}", with: job)) == 0
      }
      if !throughScheduler {
        kill(-probe.pid, SIGTERM)
        probe.signalled = true
      }
      output("probe \(probe.number) [\(probe.commit.shortHex)] cancelled: \(why)")
      stats.cancelled += 1
    }

    /// Cancels everything in flight and waits (bounded) for the launchers to exit.
    func stopAll(why: String) {
      for probe in running { cancelProbe(probe, why: why) }
      stopping += running
      running = []
      // Launchers whose probe has answered: their job is over, only the launcher is left.
      for probe in draining {
        kill(-probe.pid, SIGTERM)
        probe.cancelled = Date()
        probe.signalled = true
      }
      stopping += draining
      draining = []
      let deadline = Date().addingTimeInterval(10)
      while !stopping.isEmpty {
        stopping.removeAll { probe in
          var status: Int32 = 0
          let done = waitpid(probe.pid, &status, WNOHANG) == probe.pid
          if done { finish(probe) }
          return done
        }
        if Date() > deadline {
          for probe in stopping where !probe.killed {
            kill(-probe.pid, probe.signalled ? SIGKILL : SIGTERM)
            probe.killed = probe.signalled
            probe.signalled = true
          }
        }
        if Date() > deadline.addingTimeInterval(15) { break }
        usleep(50_000)
      }
    }

    func summary() -> String {
      let wall = Date().timeIntervalSince(runStart)
      return String(
        format:
          "parallel bisect: %d probes started, %d results recorded, %d cancelled, %d failed, %d unneeded; at most %d at once; %d rounds; %.1f s",
        stats.started, stats.recorded, stats.cancelled, stats.failed, stats.unneeded, stats.maxInFlight, stats.rounds,
        wall)
    }

    while true {
      if parallelRunInterrupted != 0 {
        stopAll(why: "the run was interrupted")
        if let repository = try? Session.open(global) {
          try? repository.appendBisectComment("bisect run interrupted; \(stats.recorded) results recorded so far")
        }
        output(summary())
        Diagnostics.printError(
          "Interrupted: the marks so far are kept; 'mvc bisect run' resumes, 'mvc bisect log' shows them")
        throw ExitCode(130)
      }

      // Reap the probes that ended.
      var ended: [(Probe, Int32)] = []
      running.removeAll { probe in
        var status: Int32 = 0
        if waitpid(probe.pid, &status, WNOHANG) == probe.pid {
          ended.append((probe, status))
          return true
        }
        // The wrapper's status is the answer: a launcher that polls (sbatch --wait checks every
        // few seconds) is left to exit on its own, without holding a slot.
        guard FileManager.default.fileExists(atPath: probe.statusPath) else { return false }
        ended.append((probe, -1))
        draining.append(probe)
        return true
      }
      draining.removeAll { probe in
        var status: Int32 = 0
        return waitpid(probe.pid, &status, WNOHANG) == probe.pid
      }
      stopping.removeAll { probe in
        var status: Int32 = 0
        let done = waitpid(probe.pid, &status, WNOHANG) == probe.pid
        if done { finish(probe) }
        return done
      }
      for probe in stopping where !probe.killed && Date().timeIntervalSince(probe.cancelled ?? Date()) > 20 {
        kill(-probe.pid, probe.signalled ? SIGKILL : SIGTERM)
        probe.killed = probe.signalled
        probe.signalled = true
      }
      if !ended.isEmpty {
        let repository = try Session.open(global)
        var candidates = try repository.bisectProbes(count: 0).candidates
        for (probe, launcherStatus) in ended {
          defer { finish(probe) }
          finishedRounds.append((Date(), probe.round))
          stats.rounds = max(stats.rounds, probe.round)
          let elapsed = String(format: "%.1f s", Date().timeIntervalSince(probe.started))
          let text = try? String(contentsOfFile: probe.statusPath, encoding: .utf8)
          guard let text, let code = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            let launcherExit = Self.describe(launcherStatus)
            stats.failed += 1
            failedInARow += 1
            failed.insert(probe.commit)
            let message =
              "probe \(probe.number) [\(probe.commit.shortHex)]: no status from the wrapper (launcher \(launcherExit)): launcher failure, not counted"
            Diagnostics.printError(message + Self.tail(of: probe.outputPath))
            try repository.appendBisectComment(message)
            continue
          }
          if code >= 128 {
            stats.failed += 1
            failedInARow += 1
            failed.insert(probe.commit)
            let message =
              "probe \(probe.number) [\(probe.commit.shortHex)]: '\(command[0])' exited \(code) (>= 128: aborted, not counted)"
            Diagnostics.printError(message + Self.tail(of: probe.outputPath))
            try repository.appendBisectComment(message)
            continue
          }
          failedInARow = 0
          let term: BisectTerm = code == 0 ? .good : code == 125 ? .skip : .bad
          guard candidates.contains(probe.commit) else {
            stats.unneeded += 1
            output(
              "probe \(probe.number) [\(probe.commit.shortHex)] \(term.rawValue) after \(elapsed): no longer needed")
            continue
          }
          do {
            try repository.bisectRecord(term, probe.commit)
          } catch RepositoryError.contradictoryBisectMarks(let good, let bad) {
            // A bad answer on another branch than a good mark: mvc's marks need every good commit
            // to be an ancestor of the bad one (as 'mvc bisect bad' does), so this one is not kept.
            stats.failed += 1
            failed.insert(probe.commit)
            let message =
              "probe \(probe.number) [\(probe.commit.shortHex)] \(term.rawValue): not recorded, good \(good) is not an ancestor of \(bad)"
            Diagnostics.printError(message)
            try repository.appendBisectComment(message)
            continue
          }
          stats.recorded += 1
          output("probe \(probe.number) [\(probe.commit.shortHex)] \(term.rawValue) (exit \(code)) after \(elapsed)")
          candidates = try repository.bisectProbes(count: 0).candidates
        }
        // Results of probes started together come together: while others run, wait a moment (a
        // tenth of the typical probe, at most 1 s) so the next choice sees them all.
        let durations = ended.map { Date().timeIntervalSince($0.0.started) }
        if !running.isEmpty {
          settleUntil = Date().addingTimeInterval(min(1, 0.1 * (durations.sorted()[durations.count / 2])))
        }
        needChoice = true
      }
      if stopping.count != stoppingBefore { needChoice = true }
      stoppingBefore = stopping.count

      if needChoice && Date() >= settleUntil {
        needChoice = false
        let repository = try Session.open(global)
        // A cancelled probe holds its slot until its launcher has exited (the job really ended).
        let free = max(0, jobs - running.count - stopping.count)
        var choice = try repository.bisectProbes(
          count: free, pending: running.map(\.commit), excluded: failed)
        if let conclusion = choice.conclusion {
          stopAll(why: "the bisection is over")
          let outcome = try repository.bisectConclusion()
          output(summary())
          try BisectReport.print(outcome, repository: repository)
          if case .onlySkippedLeft = conclusion { throw ExitCode(1) }
          if case .waiting = conclusion { throw RepositoryError.bisectRunNeedsMarks }
          return
        }
        // Probes that can no longer change the answer.
        let obsolete = running.filter { !choice.candidates.contains($0.commit) }
        if !obsolete.isEmpty {
          for probe in obsolete { cancelProbe(probe, why: "its commit is no longer a candidate") }
          running.removeAll { probe in obsolete.contains { $0 === probe } }
          stopping += obsolete
          choice = try repository.bisectProbes(
            count: max(0, jobs - running.count - stopping.count), pending: running.map(\.commit), excluded: failed)
        }
        if failedInARow >= jobs {
          stopAll(why: "probes keep failing")
          output(summary())
          throw RepositoryError.bisectRunAborted(
            program: command[0], reason: "failed \(failedInARow) times in a row (see above); the marks so far are kept")
        }
        if running.isEmpty && choice.probes.isEmpty {
          output(summary())
          throw RepositoryError.bisectRunAborted(
            program: command[0],
            reason:
              "failed on every commit left to test (\(failed.map(\.shortHex).sorted().joined(separator: ", "))); the marks so far are kept"
          )
        }
        for commit in choice.probes {
          number += 1
          let folder = (probeRoot as NSString).appendingPathComponent("\(number)-\(commit.shortHex)")
          try Self.fileOperation("create", folder) {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
          }
          let model = try repository.materializeProbe(
            commit, into: (folder as NSString).appendingPathComponent("model"))
          let script = try writeWrapper(folder: folder, commit: commit, model: model)
          let pid = try spawnProbe(script: script, folder: folder)
          let now = Date()
          let round = 1 + (finishedRounds.map(\.round).max() ?? 0)
          running.append(Probe(number: number, commit: commit, folder: folder, pid: pid, started: now, round: round))
          stats.started += 1
          stats.maxInFlight = max(stats.maxInFlight, running.count)
          output(
            "probe \(number) [\(commit.shortHex)] started (\(running.count) of \(jobs) running; \(choice.candidates.count) candidates, at most \(choice.largestPart) left after the probes in flight)"
          )
        }
      }
      usleep(50_000)
    }
  }

  /// `scancel {job}` for a Slurm launcher (`srun`, `sbatch`, possibly after `env` or a path).
  static func defaultCancelCommand(_ launcher: String?) -> String? {
    guard let launcher else { return nil }
    let words = launcher.split(whereSeparator: \.isWhitespace).map { ($0 as NSString).lastPathComponent }
    return words.contains("srun") || words.contains("sbatch") ? "scancel {job}" : nil
  }

  /// The wrapper a launcher runs: the program with `{model}` replaced, its real exit status
  /// written to `status` (atomically), which is all mvc reads.
  func writeWrapper(folder: String, commit: ObjectID, model: String) throws -> String {
    let arguments = command.map { Self.quote($0.replacingOccurrences(of: "{model}", with: model)) }
    let status = (folder as NSString).appendingPathComponent("status")
    let script = """
      #!/bin/sh
      # mvc bisect run: probe of \(commit.hex). mvc reads the program's exit status from 'status' only.
      probe=\(Self.quote(folder))
      if [ -n "${SLURM_JOB_ID:-}" ]; then echo "$SLURM_JOB_ID" > "$probe/job"; fi
      MVC_BISECT_MODEL=\(Self.quote(model))
      MVC_BISECT_COMMIT=\(commit.hex)
      MVC_BISECT_PROBE="$probe"
      export MVC_BISECT_MODEL MVC_BISECT_COMMIT MVC_BISECT_PROBE
      cd \(Self.quote(global.workingDirectory)) || exit 126
      \(arguments.joined(separator: " ")) < /dev/null
      status=$?
      echo "$status" > \(Self.quote(status)).tmp && mv \(Self.quote(status)).tmp \(Self.quote(status))
      exit "$status"

      """
    let path = (folder as NSString).appendingPathComponent("run.sh")
    try Self.fileOperation("write", path) {
      try Data(script.utf8).write(to: URL(fileURLWithPath: path))
      try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
    }
    return path
  }

  /// Starts `sh run.sh` (or the launcher with the script as its last word) in a process group of
  /// its own, output into `output.log`, so a cancel reaches every process it started.
  func spawnProbe(script: String, folder: String) throws -> pid_t {
    let cd = "cd \(Self.quote(global.workingDirectory)) || exit 126; "
    let shellCommand = cd + (launcher.map { "\($0) \(Self.quote(script))" } ?? "exec /bin/sh \(Self.quote(script))")
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    posix_spawnattr_setpgroup(&attributes, 0)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGINT)
    sigaddset(&defaults, SIGTERM)
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    let log = (folder as NSString).appendingPathComponent("output.log")
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    let argv = ["/bin/sh", "-c", shellCommand]
    var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for pointer in cArguments { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, "/bin/sh", &actions, &attributes, &cArguments, environ)
    guard result == 0 else {
      throw RepositoryError.programNotRunnable(path: "/bin/sh", reason: String(cString: strerror(result)))
    }
    return pid
  }

  /// Runs a short shell command (the cancel command) and waits for it.
  static func runShell(_ text: String) -> Int32 {
    switch try? ChildProcess.run("/bin/sh", ["-c", text], in: "/", silent: true) {
    case .exited(let code): return code
    case .signaled, nil: return -1
    }
  }

  static func fileOperation(_ operation: String, _ path: String, _ body: () throws -> Void) throws {
    do { try body() } catch {
      throw RepositoryError.cannotAccess(path: path, operation: operation, reason: error.localizedDescription)
    }
  }

  static func quote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

  static func describe(_ status: Int32) -> String {
    let signal = status & 0x7f
    if signal == 0 { return "exited \((status >> 8) & 0xff)" }
    return "killed by signal \(signal)"
  }

  /// The last lines of a probe's output, for a failure report.
  static func tail(of path: String) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8), !text.isEmpty else { return "" }
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false).suffix(6)
    return "\n  " + lines.joined(separator: "\n  ")
  }
}
