import Foundation

/// One commit as `log` and `show` present it.
public struct CommitSummary: Sendable {
  public var commit: GitRepository.Commit
  public var record: EditRecord?
  /// Branch and tag names pointing at this commit.
  public var decorations: [String]

  package init(commit: GitRepository.Commit, record: EditRecord?, decorations: [String]) {
    self.commit = commit
    self.record = record
    self.decorations = decorations
  }
}

extension EditRepository {
  /// History from `start` (HEAD when nil), newest first; `limit` caps the count.
  public func log(from start: ObjectID? = nil, limit: Int? = nil, firstParentOnly: Bool = false) throws
    -> [CommitSummary]
  {
    try log(from: [try start ?? headCommit()], limit: limit, firstParentOnly: firstParentOnly)
  }

  /// History reachable from any of `tips`, newest first: topological, then by time; with
  /// `topoOrder`, git's `--topo-order` (what `log --graph` draws).
  public func log(
    from tips: [ObjectID], limit: Int? = nil, firstParentOnly: Bool = false, topoOrder: Bool = false
  ) throws -> [CommitSummary] {
    var ids = try RepositoryError.wrap("walking history") {
      try git.walk(from: tips, firstParentOnly: firstParentOnly, byTime: !topoOrder)
    }
    if let limit { ids = Array(ids.prefix(limit)) }
    let decorations = try decorationMap()
    return try ids.map { try summary(of: $0, decorations: decorations) }
  }

  public func summary(of id: ObjectID) throws -> CommitSummary {
    try summary(of: id, decorations: decorationMap())
  }

  func summary(of id: ObjectID, decorations: [ObjectID: [String]]) throws -> CommitSummary {
    CommitSummary(
      commit: try commitInfo(id), record: try editRecord(of: contents(of: id)), decorations: decorations[id] ?? [])
  }

  func decorationMap() throws -> [ObjectID: [String]] {
    var map: [ObjectID: [String]] = [:]
    let state = try head()
    if case .detached(let id) = state { map[id, default: []].append("HEAD") }
    for branch in try branches() {
      map[branch.commit, default: []].append(branch.isCurrent ? "HEAD -> \(branch.name)" : branch.name)
    }
    for tag in try tags() { map[tag.commit, default: []].append("tag: \(tag.name)") }
    return map
  }

  /// Number of commits reachable from HEAD.
  package func commitCount() throws -> Int {
    guard let tip = try head().commit else { return 0 }
    return try RepositoryError.wrap("walking history") { try git.walk(from: [tip]).count }
  }
}
