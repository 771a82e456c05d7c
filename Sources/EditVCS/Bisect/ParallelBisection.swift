import Foundation

/// What a parallel bisection tests next (`mvc bisect run --jobs K`, `mvc bisect next --jobs K`).
public struct BisectProbeChoice: Sendable {
  /// The commits to test, oldest first; empty when every useful commit is already in flight.
  public var probes: [ObjectID]
  /// The commits still in question (git's candidates: ancestors of bad, not of any good).
  public var candidates: Set<ObjectID>
  /// The largest part of the candidates the probes (new and pending) can leave.
  public var largestPart: Int
  /// The end of the bisection (first bad commit, only skipped left, or waiting for marks); nil
  /// while commits are left to test.
  public var conclusion: BisectOutcome?
}

extension EditRepository {
  /// `.mvc/bisect-probes/`: one folder per probe of a parallel `bisect run` (its worktree, the
  /// wrapper script, the status the wrapper writes). Removed by `bisect reset`.
  public var bisectProbeDirectory: String { bisectFile("bisect-probes") }

  /// The commits to test in parallel with `pending` (in flight), chosen so that with them the
  /// candidates split into near-equal parts (see `BisectAlgorithm.probes`); nothing moves.
  /// `excluded` are commits not to propose again (probes that failed in this run).
  public func bisectProbes(count: Int, pending: [ObjectID] = [], excluded: Set<ObjectID> = []) throws
    -> BisectProbeChoice
  {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    guard let bad = state.bad, !state.good.isEmpty else {
      return BisectProbeChoice(
        probes: [], candidates: [], largestPart: 0,
        conclusion: .waiting(needGood: state.good.isEmpty, needBad: state.bad == nil))
    }
    let graph = try bisectGraph(bad: bad)
    let good = Set(state.good)
    let skipped = Set(state.skipped)
    let candidates = Set(BisectAlgorithm.candidates(graph: graph, bad: bad, good: good))
    let step = BisectAlgorithm.next(
      graph: graph, bad: bad, good: good, skipped: skipped, breakingTiesBy: { $0.hex < $1.hex })
    switch step {
    case .firstBad(let id):
      return BisectProbeChoice(probes: [], candidates: candidates, largestPart: 1, conclusion: .firstBad(id))
    case .onlySkippedLeft(let ids):
      return BisectProbeChoice(
        probes: [], candidates: candidates, largestPart: ids.count, conclusion: .onlySkippedLeft(ids))
    case .test:
      let plan = BisectAlgorithm.probes(
        graph: graph, bad: bad, good: good, skipped: skipped, pending: pending, excluded: excluded, count: count,
        breakingTiesBy: { $0.hex < $1.hex })
      return BisectProbeChoice(
        probes: plan.probes, candidates: candidates, largestPart: plan.largestPart, conclusion: nil)
    }
  }

  /// Records a probe's answer exactly as `mvc bisect good|bad|skip REV` does (refs/bisect/*,
  /// BISECT_LOG) without computing or checking out the next step.
  public func bisectRecord(_ term: BisectTerm, _ commit: ObjectID) throws {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    switch term {
    case .good: if let bad = state.bad { try validateMarks(bad: bad, good: [commit]) }
    case .bad: try validateMarks(bad: commit, good: state.good)
    case .skip: break
    }
    try setMark(term, commit)
  }

  /// The bisection's end, logged as `bisect next` logs it, or `.testing` (nothing checked out)
  /// while commits are left to test.
  public func bisectConclusion() throws -> BisectOutcome {
    guard let state = try bisectState() else { throw RepositoryError.noBisectInProgress }
    guard let bad = state.bad, !state.good.isEmpty else {
      return .waiting(needGood: state.good.isEmpty, needBad: state.bad == nil)
    }
    let step = BisectAlgorithm.next(
      graph: try bisectGraph(bad: bad), bad: bad, good: Set(state.good), skipped: Set(state.skipped),
      breakingTiesBy: { $0.hex < $1.hex })
    if case .test(let id, let remaining, let steps) = step { return .testing(id, remaining: remaining, steps: steps) }
    return try bisectNext()
  }

  /// Appends `# text` to BISECT_LOG (a comment: what a parallel run did that is not a mark).
  public func appendBisectComment(_ text: String) throws {
    try appendBisectLog("# " + text.replacingOccurrences(of: "\n", with: " "))
  }

  /// The commits whose probe is running: a folder `N-SHORT/` under `.mvc/bisect-probes/` with a
  /// worktree (`model/`) and no `status` yet.
  public func bisectProbesInFlight() throws -> Set<ObjectID> {
    let manager = FileManager.default
    let root = bisectProbeDirectory
    var result: Set<ObjectID> = []
    for name in (try? manager.contentsOfDirectory(atPath: root)) ?? [] {
      let folder = (root as NSString).appendingPathComponent(name)
      guard let dash = name.firstIndex(of: "-"),
        manager.fileExists(atPath: (folder as NSString).appendingPathComponent("model")),
        !manager.fileExists(atPath: (folder as NSString).appendingPathComponent("status")),
        let id = try? resolve(String(name[name.index(after: dash)...]))
      else { continue }
      result.insert(id)
    }
    return result
  }

  /// Removes `.mvc/bisect-probes/` and every probe worktree in it.
  public func removeBisectProbes() throws {
    let path = bisectProbeDirectory
    guard FileManager.default.fileExists(atPath: path) else { return }
    try RepositoryError.fileSystem("remove", path) { try FileManager.default.removeItem(atPath: path) }
  }

  /// Writes `commit`'s model into `folder` (created), as `checkout -o` does, reusing the working
  /// model's unchanged tensors: a single-file model as `folder/model.safetensors` beside its side
  /// files, a sharded one as the folder itself. Returns the path a loader is given.
  public func materializeProbe(_ commit: ObjectID, into folder: String) throws -> String {
    if try isSharded(commit) {
      try materialize(commit, to: folder, intoFolder: true)
      return folder
    }
    try materialize(commit, to: folder, intoFolder: true)
    return (folder as NSString).appendingPathComponent("model.safetensors")
  }

  /// The `bisect run --max-norm-ratio` predicate for every commit reachable from `bad` at once:
  /// the largest ‖ΔW‖_F/‖W‖_F of any commit reachable from it, in one pass over the history
  /// (each commit's own largest ratio, then the maximum over its parents, oldest first).
  public func maxRelativeNorms(upTo bad: ObjectID) throws -> [ObjectID: Double] {
    let history = try log(from: bad)
    var own: [ObjectID: Double] = [:]
    var parents: [ObjectID: [ObjectID]] = [:]
    for summary in history {
      own[summary.commit.id] = (summary.record?.changes ?? []).compactMap { $0.norms?.relativeFrobenius }.max() ?? 0
      parents[summary.commit.id] = summary.commit.parents
    }
    let graph = BisectGraph(commits: history.map(\.commit.id), parents: parents)
    var result: [ObjectID: Double] = [:]
    for id in graph.topologicalOrder.reversed() {
      result[id] = (parents[id] ?? []).reduce(own[id] ?? 0) { max($0, result[$1] ?? 0) }
    }
    return result
  }
}
