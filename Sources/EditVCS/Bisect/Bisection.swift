import Foundation

/// What a bisection does after a mark, for the CLI to report.
public enum BisectOutcome: Sendable, Equatable {
  /// Waiting for at least one good and one bad commit.
  case waiting(needGood: Bool, needBad: Bool)
  /// This commit is checked out for testing.
  case testing(ObjectID, remaining: Int, steps: Int)
  case firstBad(ObjectID)
  case onlySkippedLeft([ObjectID])
}

public enum BisectTerm: String, Sendable {
  case good, bad, skip
}

/// Bisection state, kept in files under `.mvc/` and refs under `refs/bisect/`, as git keeps it,
/// so it survives a crash or Ctrl-C of mvc or of the evaluation program.
/// `BISECT_START` (where HEAD was) is written first and removed last.
public struct BisectState: Sendable {
  /// The branch HEAD was on, or the commit it was detached at, when the bisection started.
  public var start: String
  public var bad: ObjectID?
  public var good: [ObjectID]
  public var skipped: [ObjectID]
}

extension EditRepository {
  func bisectFile(_ name: String) -> String { (gitDirectory as NSString).appendingPathComponent(name) }

  /// The state of the running bisection, or nil.
  public func bisectState() throws -> BisectState? {
    guard let start = try? String(contentsOfFile: bisectStartPath, encoding: .utf8) else { return nil }
    let refs = try RepositoryError.wrap("reading refs/bisect") { try git.references(withPrefix: "refs/bisect/") }
    var state = BisectState(
      start: start.trimmingCharacters(in: .whitespacesAndNewlines), bad: nil, good: [], skipped: [])
    for (name, target) in refs {
      let short = String(name.dropFirst("refs/bisect/".count))
      if short == "bad" {
        state.bad = target
      } else if short.hasPrefix("good-") {
        state.good.append(target)
      } else if short.hasPrefix("skip-") {
        state.skipped.append(target)
      }
    }
    return state
  }

  func appendBisectLog(_ line: String) throws {
    let path = bisectFile("BISECT_LOG")
    let data = Data((line + "\n").utf8)
    try RepositoryError.fileSystem("write", path) {
      if let handle = FileHandle(forWritingAtPath: path) {
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
      } else {
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
      }
    }
  }

  public func bisectLog() throws -> String {
    guard isBisecting else { throw RepositoryError.noBisectInProgress }
    return (try? String(contentsOfFile: bisectFile("BISECT_LOG"), encoding: .utf8)) ?? ""
  }

  /// `mvc bisect start [--no-checkout] [BAD [GOOD...]]`.
  ///
  /// With `noCheckout` (git's `--no-checkout`), no step rewrites the working model or moves
  /// HEAD: the commit to test is recorded in `.mvc/BISECT_HEAD` instead, for a caller that
  /// moves a loaded model itself (the Python client), and `bisect reset` leaves HEAD and the
  /// working model where they are.
  public func bisectStart(bad: ObjectID?, good: [ObjectID], noCheckout: Bool = false) throws -> BisectOutcome {
    let clean = try requireCleanHead()
    let (headState, headCommit) = (clean.state, clean.commit)
    let bad = bad ?? headCommit
    try validateMarks(bad: bad, good: good)
    // BISECT_START first: from here on, every command sees a bisection in progress.
    let start = headState.branchName ?? headCommit.hex
    try RepositoryError.fileSystem("write", bisectStartPath) {
      try Data((start + "\n").utf8).write(to: URL(fileURLWithPath: bisectStartPath), options: .atomic)
    }
    try RepositoryError.fileSystem("write", bisectFile("BISECT_TERMS")) {
      try Data("bad\ngood\n".utf8).write(to: URL(fileURLWithPath: bisectFile("BISECT_TERMS")), options: .atomic)
    }
    if noCheckout { try writeBisectHead(headCommit) }
    let option = noCheckout ? "--no-checkout " : ""
    try appendBisectLog("mvc bisect start \(option)\(([bad] + good).map(\.hex).joined(separator: " "))")
    try setMark(.bad, bad)
    for g in good { try setMark(.good, g) }
    return try bisectNext()
  }

  func validateMarks(bad: ObjectID, good: [ObjectID]) throws {
    for g in good {
      if g == bad { throw RepositoryError.contradictoryBisectMarks(good: g.shortHex, bad: bad.shortHex) }
      guard try git.isAncestor(g, of: bad) else {
        throw RepositoryError.contradictoryBisectMarks(good: g.shortHex, bad: bad.shortHex)
      }
    }
  }

  func setMark(_ term: BisectTerm, _ commit: ObjectID) throws {
    let ref: String
    switch term {
    case .bad: ref = "refs/bisect/bad"
    case .good: ref = "refs/bisect/good-\(commit.hex)"
    case .skip: ref = "refs/bisect/skip-\(commit.hex)"
    }
    try RepositoryError.wrap("writing '\(ref)'") {
      try git.forceReference(ref, to: commit, message: "bisect \(term.rawValue)")
    }
    let subject = (try? commitInfo(commit).summary) ?? ""
    try appendBisectLog("# \(term.rawValue): [\(commit.hex)] \(subject)")
    try appendBisectLog("mvc bisect \(term.rawValue) \(commit.hex)")
  }

  /// `mvc bisect good|bad|skip [REV]` (REV defaults to the commit under test, i.e. HEAD).
  public func bisectMark(_ term: BisectTerm, _ commit: ObjectID?) throws -> BisectOutcome {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    let commit = try commit ?? bisectCurrent()
    switch term {
    case .good:
      if let bad = state.bad { try validateMarks(bad: bad, good: [commit]) }
    case .bad:
      try validateMarks(bad: commit, good: state.good)
    case .skip:
      break
    }
    try setMark(term, commit)
    return try bisectNext()
  }

  /// `mvc bisect next`: computes the next step and checks it out (only the tensors that differ
  /// are rewritten), or, in `--no-checkout` mode, records it in `BISECT_HEAD`.
  public func bisectNext() throws -> BisectOutcome {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    guard let bad = state.bad, !state.good.isEmpty else {
      return .waiting(needGood: state.good.isEmpty, needBad: state.bad == nil)
    }
    let step = BisectAlgorithm.next(
      graph: try bisectGraph(bad: bad), bad: bad, good: Set(state.good), skipped: Set(state.skipped),
      breakingTiesBy: { $0.hex < $1.hex })
    switch step {
    case .test(let commit, let remaining, let steps):
      try Data((commit.hex + "\n").utf8).write(
        to: URL(fileURLWithPath: bisectFile("BISECT_EXPECTED_REV")), options: .atomic)
      if isNoCheckoutBisect {
        try writeBisectHead(commit)
      } else {
        try moveWorkingModel(
          to: commit, attach: .detached(commit), force: false, expectedHead: nil,
          reflog: "bisect: checkout \(commit.hex)")
      }
      return .testing(commit, remaining: remaining, steps: steps)
    case .firstBad(let commit):
      let subject = (try? commitInfo(commit).summary) ?? ""
      try appendBisectLog("# first bad commit: [\(commit.hex)] \(subject)")
      return .firstBad(commit)
    case .onlySkippedLeft(let candidates):
      try appendBisectLog("# only skipped commits left to test")
      return .onlySkippedLeft(candidates)
    }
  }

  /// The commits still in question, newest first (`mvc bisect visualize`).
  public func bisectCandidates() throws -> [ObjectID] {
    guard let state = try bisectState(), let bad = state.bad else { return [] }
    return BisectAlgorithm.candidates(graph: try bisectGraph(bad: bad), bad: bad, good: Set(state.good))
  }

  /// Every commit reachable from `bad`, with its parents.
  func bisectGraph(bad: ObjectID) throws -> BisectGraph<ObjectID> {
    let commits = try RepositoryError.wrap("walking history") { try git.walk(from: [bad]) }
    var parents: [ObjectID: [ObjectID]] = [:]
    for id in commits { parents[id] = try commitInfo(id).parents }
    return BisectGraph(commits: commits, parents: parents)
  }

  /// `mvc bisect reset [REV]`: back to where the bisection started (or to REV), working model
  /// included; then the state is removed, `BISECT_START` last.
  public func bisectReset(to commit: ObjectID? = nil) throws {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    if isNoCheckoutBisect && commit == nil {
      // HEAD and the working model never moved.
    } else if let commit {
      try moveWorkingModel(
        to: commit, attach: .detached(commit), force: true, expectedHead: nil, reflog: "bisect reset")
    } else if let branchCommit = try branchTarget(state.start) {
      try moveWorkingModel(
        to: branchCommit, attach: .branch(name: state.start, commit: branchCommit), force: true, expectedHead: nil,
        reflog: "bisect reset: back to \(state.start)")
    } else if let id = ObjectID(hex: state.start) {
      try moveWorkingModel(to: id, attach: .detached(id), force: true, expectedHead: nil, reflog: "bisect reset")
    }
    for (name, _) in try RepositoryError.wrap("reading refs/bisect", { try git.references(withPrefix: "refs/bisect/") })
    {
      try RepositoryError.wrap("deleting '\(name)'") { try git.deleteReference(name) }
    }
    try removeBisectProbes()
    for file in ["BISECT_LOG", "BISECT_TERMS", "BISECT_EXPECTED_REV", "BISECT_HEAD"] {
      try? FileManager.default.removeItem(atPath: bisectFile(file))
    }
    try RepositoryError.fileSystem("remove", bisectStartPath) {
      try FileManager.default.removeItem(atPath: bisectStartPath)
    }
  }

  /// The largest relative update norm ‖ΔW‖_F/‖W‖_F of any commit reachable from `commit`:
  /// the built-in `bisect run --max-norm-ratio` predicate, from the stored factors alone.
  public func maxRelativeNorm(upTo commit: ObjectID) throws -> Double {
    var result = 0.0
    for summary in try log(from: commit) {
      for change in summary.record?.changes ?? [] {
        if let n = change.norms { result = max(result, n.relativeFrobenius) }
      }
    }
    return result
  }
}
