import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Bisect: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Find the commit (edit) that broke the model, by binary search.",
      discussion: """
        Each step checks out the commit that best halves the remaining candidates into the \
        working model (only the tensors that differ are rewritten), so an evaluation program \
        reads the model where it always is. State lives in .mvc/ and survives crashes; \
        'mvc bisect reset' always puts the working model and HEAD back.

          mvc bisect start HEAD v1          # bad, then good commits
          mvc bisect good | bad | skip [REV]
          mvc bisect run python eval.py model.safetensors
          mvc bisect run --max-norm-ratio 0.5     # built-in: bad when some ‖ΔW‖/‖W‖ > 0.5
          mvc bisect run --jobs 4 python eval.py {model}                  # 4 probes at once
          mvc bisect run --jobs 8 --launcher 'srun -N1 --gres=gpu:1' python eval.py {model}
          mvc bisect log; mvc bisect visualize; mvc bisect reset
        """,
      subcommands: [
        Start.self, Good.self, Bad.self, Skip.self, Next.self, Run.self, Log.self, Visualize.self, Reset.self,
      ])

    struct Start: ParsableCommand {
      static let configuration = CommandConfiguration(
        abstract: "Start a bisection: [BAD [GOOD...]] (BAD defaults to HEAD).")
      @OptionGroup var global: GlobalOptions
      @Argument(help: "The bad commit, then good commits.") var revisions: [String] = []
      @Flag(help: "Leave HEAD and the working model alone; the commit to test is in .mvc/BISECT_HEAD.")
      var noCheckout = false
      @Flag(help: "Write one JSON document (schema mvc.bisect-step/1).") var json = false

      func run() throws {
        let repository = try Session.open(global)
        let ids = try revisions.map { try repository.resolve($0) }
        let outcome = try repository.bisectStart(bad: ids.first, good: Array(ids.dropFirst()), noCheckout: noCheckout)
        try BisectReport.print(outcome, repository: repository, json: json)
      }
    }

    struct Good: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Mark a commit (default: the one under test) good.")
      @OptionGroup var global: GlobalOptions
      @Argument var revision: String?
      @Flag(help: "Write one JSON document (schema mvc.bisect-step/1).") var json = false
      func run() throws { try BisectReport.mark(.good, revision, global, json: json) }
    }

    struct Bad: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Mark a commit (default: the one under test) bad.")
      @OptionGroup var global: GlobalOptions
      @Argument var revision: String?
      @Flag(help: "Write one JSON document (schema mvc.bisect-step/1).") var json = false
      func run() throws { try BisectReport.mark(.bad, revision, global, json: json) }
    }

    struct Skip: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Skip a commit that cannot be tested.")
      @OptionGroup var global: GlobalOptions
      @Argument var revision: String?
      @Flag(help: "Write one JSON document (schema mvc.bisect-step/1).") var json = false
      func run() throws { try BisectReport.mark(.skip, revision, global, json: json) }
    }

    struct Log: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Show the marks made so far (replayable).")
      @OptionGroup var global: GlobalOptions
      @Flag(help: "Write one JSON document (schema mvc.bisect-log/1).") var json = false

      func run() throws {
        let repository = try Session.open(global)
        let text = try repository.bisectLog()
        if json {
          let state = try repository.bisectState()
          output(
            try Format.json(
              BisectLogJSON(
                start: state?.start, bad: state?.bad?.hex, good: state?.good.map(\.hex) ?? [],
                skipped: state?.skipped.map(\.hex) ?? [],
                lines: text.split(separator: "\n").map(String.init))))
        } else {
          FileHandle.standardOutput.write(Data(text.utf8))
        }
      }
    }

    struct Visualize: ParsableCommand {
      static let configuration = CommandConfiguration(
        commandName: "visualize", abstract: "List the commits still in question.",
        discussion: """
          Newest first, one line each. While a parallel 'bisect run --jobs' runs, a commit under \
          test is marked '>' (its probe folder under .mvc/bisect-probes/ holds a worktree and no \
          status yet); a skipped commit is marked 's'.
          """,
        aliases: ["view"])
      @OptionGroup var global: GlobalOptions

      func run() throws {
        let repository = try Session.open(global)
        guard let state = try repository.bisectState() else { throw RepositoryError.noBisectInProgress }
        let probes = try repository.bisectProbesInFlight()
        let skipped = Set(state.skipped)
        let marked = !probes.isEmpty || !skipped.isEmpty
        for id in try repository.bisectCandidates() {
          let line = CommitText.render(try repository.summary(of: id), oneline: true, stat: false, flags: [])
          guard marked else {
            output(line)
            continue
          }
          output((probes.contains(id) ? "> " : skipped.contains(id) ? "s " : "  ") + line)
        }
      }
    }

    struct Reset: ParsableCommand {
      static let configuration = CommandConfiguration(
        abstract: "End the bisection: back to the original HEAD (or REV), working model included.")
      @OptionGroup var global: GlobalOptions
      @Argument var revision: String?

      func run() throws {
        let repository = try Session.open(global)
        try repository.bisectReset(to: try revision.map { try repository.resolve($0) })
        if !global.quiet {
          let head = try repository.head()
          Diagnostics.printError(
            "Bisection ended; HEAD is \(head.branchName.map { "on branch '\($0)'" } ?? "at \(head.commit?.shortHex ?? "?")")"
          )
        }
      }
    }

    struct Run: ParsableCommand {
      static let configuration = CommandConfiguration(
        abstract: "Run a program at each step: exit 0 good, 125 skip, 1-127 bad, ≥128 or a signal aborts.",
        discussion: """
            mvc bisect run python eval.py model.safetensors
            mvc bisect run --max-norm-ratio 0.5

          With --jobs K, up to K commits are tested at once, each on its own copy of the model \
          in .mvc/bisect-probes/N-SHORT/model/ ({model} and $MVC_BISECT_MODEL name it): K \
          commits that split the candidates into K+1 near-equal parts, a freed slot getting the \
          most useful commit given the results so far, and a probe that can no longer change the \
          answer cancelled (scancel for srun/sbatch launchers, SIGTERM otherwise). Each probe runs \
          a wrapper, run.sh, that writes the program's real exit status to the probe folder; mvc \
          reads it from there (no status: a launcher failure, reported and not counted). Exit \
          codes >= 128 abort that probe only. Answers are marks, as 'mvc bisect good|bad|skip' \
          makes them: an interrupted run (Ctrl-C cancels its probes) resumes with 'mvc bisect run'.

            mvc bisect run --jobs 4 python eval.py {model}
            mvc bisect run --jobs 8 --launcher 'srun -N1 --gres=gpu:1' python eval.py {model}
            mvc bisect run --jobs 8 --launcher 'sbatch --wait -p gpu -o logs/%j.out' -- ./eval.sh {model}
            mvc bisect run --jobs 4 --max-norm-ratio 0.5      # every commit at once, nothing checked out
            mvc bisect run --max-norm-growth 1.05   # bad once some ‖W‖_F/‖W_root‖_F > 1.05
          """)
      @OptionGroup var global: GlobalOptions
      @Option(help: "Built-in predicate: bad when a commit so far has ‖ΔW‖_F/‖W‖_F above this.")
      var maxNormRatio: Double?
      @Option(help: "Built-in predicate: bad when some recorded edit's retention ('mvc score') is below this.")
      var minScore: Double?
      @Option(help: "Built-in predicate: bad when a probe preservation error ('mvc score') is above this.")
      var maxPreservationError: Double?
      @Option(help: "Built-in predicate: bad when some edited matrix has ‖W‖_F/‖W_root‖_F above this.")
      var maxNormGrowth: Double?

      @Option(
        help: """
          Test up to this many commits at once, each on its own copy of the model under .mvc/bisect-probes/ \
          ({model} and $MVC_BISECT_MODEL name it); with a built-in predicate, evaluate from the stored \
          factors without checking anything out.
          """)
      var jobs: Int?
      @Option(
        help: """
          With --jobs: start each probe through this command, given the probe's wrapper script as its last \
          word (e.g. 'srun -N1 --gres=gpu:1', 'sbatch --wait -p gpu').
          """)
      var launcher: String?
      @Option(
        name: .customLong("cancel"),
        help: "With --launcher: how to cancel a probe's job ({job} is its id); 'scancel {job}' for srun and sbatch.")
      var cancelCommand: String?

      var builtInCount: Int { [maxNormRatio, minScore, maxPreservationError, maxNormGrowth].compactMap { $0 }.count }
      @Argument(
        parsing: .captureForPassthrough, help: "The evaluation program and its arguments ({model}: the model to test).")
      var command: [String] = []

      func validate() throws {
        if (command.isEmpty ? 0 : 1) + builtInCount != 1 {
          throw ValidationError(
            "give one of: an evaluation program, --max-norm-ratio, --min-score, --max-preservation-error, --max-norm-growth"
          )
        }
        if let jobs, jobs < 1 || jobs > 1024 { throw ValidationError("--jobs takes 1 to 1024 probes at once") }
        if (launcher != nil || cancelCommand != nil) && (jobs == nil || command.isEmpty) {
          throw ValidationError("--launcher and --cancel go with --jobs K and an evaluation program")
        }
      }

      func run() throws {
        if let jobs {
          if command.isEmpty { return try runBuiltInAtOnce() }
          if launcher == nil {
            guard BisectReport.findExecutable(command[0], cwd: global.workingDirectory) != nil else {
              throw RepositoryError.programNotRunnable(path: command[0], reason: "no such program")
            }
          }
          var arguments = command
          if arguments.first == "--" { arguments.removeFirst() }
          return try ParallelBisectRun(
            global: global, jobs: jobs, launcher: launcher, cancelCommand: cancelCommand, command: arguments
          ).run()
        }
        var executable: URL?
        if let program = command.first {
          executable = BisectReport.findExecutable(program, cwd: global.workingDirectory)
          guard executable != nil else {
            throw RepositoryError.programNotRunnable(path: program, reason: "no such program")
          }
        }
        while true {
          // The lock is held only between steps, so the program may itself run mvc.
          let term: BisectTerm
          do {
            let repository = try Session.open(global)
            guard let state = try repository.bisectState() else { throw RepositoryError.noBisectInProgress }
            guard state.bad != nil, !state.good.isEmpty else {
              throw RepositoryError.bisectRunNeedsMarks
            }
            let current = try repository.bisectCurrent()
            if let maxNormRatio {
              let ratio = try repository.maxRelativeNorm(upTo: current)
              term = ratio > maxNormRatio ? .bad : .good
              output(String(format: "%@: max ‖ΔW‖/‖W‖ so far %.4g -> %@", current.shortHex, ratio, term.rawValue))
            } else if let maxNormGrowth {
              let growth = try repository.maxNormGrowth(at: current)
              term = growth > maxNormGrowth ? .bad : .good
              output(String(format: "%@: max ‖W‖/‖W₀‖ %.6g -> %@", current.shortHex, growth, term.rawValue))
            } else if minScore != nil || maxPreservationError != nil {
              let report = try repository.score(at: current)
              if let minScore {
                let minimum = report.minimumRetention ?? 1
                term = minimum < minScore ? .bad : .good
                output("\(current.shortHex): min retention \(String(format: "%.4f", minimum)) -> \(term.rawValue)")
              } else {
                let worst = report.preservation.map(\.error).max() ?? 0
                term = worst > (maxPreservationError ?? .infinity) ? .bad : .good
                output(
                  "\(current.shortHex): max preservation error \(String(format: "%.4g", worst)) -> \(term.rawValue)")
              }
            } else if let executable {
              output("running '\(command.joined(separator: " "))' on \(current.shortHex)")
              let model = repository.modelPath
              term = try BisectReport.runProgram(
                executable, arguments: command.dropFirst().map { $0.replacingOccurrences(of: "{model}", with: model) },
                cwd: global.workingDirectory)
            } else {
              return
            }
          }
          let repository = try Session.open(global)
          let outcome = try repository.bisectMark(term, nil)
          try BisectReport.print(outcome, repository: repository)
          switch outcome {
          case .testing: continue
          case .waiting: return
          case .firstBad: return
          case .onlySkippedLeft: throw ExitCode(1)
          }
        }
      }

      /// A built-in predicate with --jobs: every commit's value from the stored factors (the norm
      /// ratio of all commits in one pass over the history), marks recorded as `bisect good|bad`
      /// records them; neither HEAD nor the working model moves.
      func runBuiltInAtOnce() throws {
        let repository = try Session.open(global)
        guard let state = try repository.bisectState() else { throw RepositoryError.noBisectInProgress }
        guard let bad = state.bad, !state.good.isEmpty else { throw RepositoryError.bisectRunNeedsMarks }
        let norms = try maxNormRatio.map { _ in try repository.maxRelativeNorms(upTo: bad) }
        var evaluations = 0
        while true {
          let choice = try repository.bisectProbes(count: 1)
          if let conclusion = choice.conclusion {
            output("\(evaluations) commits evaluated from the stored factors")
            try BisectReport.print(try repository.bisectConclusion(), repository: repository)
            if case .onlySkippedLeft = conclusion { throw ExitCode(1) }
            return
          }
          guard let commit = choice.probes.first else { throw RepositoryError.bisectRunNeedsMarks }
          evaluations += 1
          let term: BisectTerm
          if let maxNormRatio, let ratio = norms?[commit] {
            term = ratio > maxNormRatio ? .bad : .good
            output(String(format: "%@: max ‖ΔW‖/‖W‖ so far %.4g -> %@", commit.shortHex, ratio, term.rawValue))
          } else if let maxNormGrowth {
            let growth = try repository.maxNormGrowth(at: commit)
            term = growth > maxNormGrowth ? .bad : .good
            output(String(format: "%@: max ‖W‖/‖W₀‖ %.6g -> %@", commit.shortHex, growth, term.rawValue))
          } else {
            let report = try repository.score(at: commit)
            if let minScore {
              let minimum = report.minimumRetention ?? 1
              term = minimum < minScore ? .bad : .good
              output("\(commit.shortHex): min retention \(String(format: "%.4f", minimum)) -> \(term.rawValue)")
            } else {
              let worst = report.preservation.map(\.error).max() ?? 0
              term = worst > (maxPreservationError ?? .infinity) ? .bad : .good
              output(
                "\(commit.shortHex): max preservation error \(String(format: "%.4g", worst)) -> \(term.rawValue)")
            }
          }
          try repository.bisectRecord(term, commit)
        }
      }
    }
  }
}

enum BisectReport {
  static func mark(_ term: BisectTerm, _ revision: String?, _ global: GlobalOptions, json: Bool = false) throws {
    let repository = try Session.open(global)
    let outcome = try repository.bisectMark(term, try revision.map { try repository.resolve($0) })
    try print(outcome, repository: repository, json: json)
  }

  static func print(_ outcome: BisectOutcome, repository: EditRepository, json: Bool = false) throws {
    if json {
      output(try Format.json(BisectStepJSON(outcome, noCheckout: repository.isNoCheckoutBisect)))
      return
    }
    switch outcome {
    case .waiting(let needGood, let needBad):
      output(
        "status: waiting for \(needBad ? "a bad" : "")\(needBad && needGood ? " and " : "")\(needGood ? "good" : "") commit\(needGood && needBad ? "s" : "")"
      )
    case .testing(let id, let remaining, let steps):
      output(
        "Bisecting: \(remaining) revision\(remaining == 1 ? "" : "s") left to test after this (roughly \(steps) step\(steps == 1 ? "" : "s"))"
      )
      output("[\(id.hex)] \(try repository.commitInfo(id).summary)")
    case .firstBad(let id):
      output("\(id.hex) is the first bad commit")
      let history = try repository.log(from: id)
      let flags = NormOutliers.flags(history.reversed()).filter { $0.commit == id }
      if let summary = history.first { output(CommitText.render(summary, oneline: false, stat: true, flags: flags)) }
    case .onlySkippedLeft(let ids):
      output("There are only 'skip'ped commits left to test.")
      output("The first bad commit could be any of:")
      for id in ids { output(id.hex) }
      output("We cannot bisect more!")
    }
  }

  static func findExecutable(_ program: String, cwd: String) -> URL? {
    let manager = FileManager.default
    if program.contains("/") {
      let path = program.hasPrefix("/") ? program : (cwd as NSString).appendingPathComponent(program)
      return manager.isExecutableFile(atPath: path) ? URL(fileURLWithPath: path) : nil
    }
    let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
    for dir in paths {
      let path = (String(dir) as NSString).appendingPathComponent(program)
      if manager.isExecutableFile(atPath: path) { return URL(fileURLWithPath: path) }
    }
    return nil
  }

  /// Runs the evaluation program and maps its exit as git does.
  static func runProgram(_ executable: URL, arguments: [String], cwd: String) throws -> BisectTerm {
    let status: Int32
    switch try ChildProcess.run(executable.path, arguments, in: cwd) {
    case .signaled(let signal):
      throw RepositoryError.bisectRunAborted(
        program: executable.lastPathComponent, reason: "was killed by signal \(signal)")
    case .exited(let code): status = code
    }
    switch status {
    case 0: return .good
    case 125: return .skip
    case 1..<128: return .bad
    default:
      throw RepositoryError.bisectRunAborted(
        program: executable.lastPathComponent, reason: "exited with \(status), and a code >= 128 stops the run")
    }
  }
}

struct BisectLogJSON: Encodable {
  var schema = "mvc.bisect-log/1"
  @NullWhenAbsent var start: String?
  @NullWhenAbsent var bad: String?
  var good: [String]
  var skipped: [String]
  var lines: [String]
}
