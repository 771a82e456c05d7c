import Foundation

extension EditRepository {
  /// `mvc reflog [REF]`: where REF (default HEAD; a branch, tag or `ORIG_HEAD` by git's rules)
  /// has pointed, newest first; entry n is what `REF@{n}` resolves to.
  /// - Returns: the reference's full name and its entries (empty when it has no log).
  /// - Throws: `RepositoryError.unknownRevision` when no such reference exists.
  public func reflog(_ name: String) throws -> (reference: String, entries: [ReflogEntry]) {
    guard let full = try RepositoryError.wrap("reading '\(name)'", { try git.referenceFullName(name) }) else {
      throw RepositoryError.unknownRevision(name, commitCount: nil)
    }
    return (full, try RepositoryError.wrap("reading the log of '\(full)'") { try git.reflog(full) })
  }

  /// `log --all`: HEAD and the tip of every branch, tag and remote-tracking branch (and the
  /// bisection's marks), as git's `--all`; mvc's own bookkeeping under `refs/mvc/` is not history.
  public func allTips() throws -> [ObjectID] {
    var tips = try head().commit.map { [$0] } ?? []
    for prefix in ["refs/heads/", "refs/tags/", "refs/remotes/", "refs/bisect/"] {
      let references = try RepositoryError.wrap("listing \(prefix)") { try git.references(withPrefix: prefix) }
      tips += references.map(\.target)
    }
    var seen = Set<ObjectID>()
    tips = tips.filter { seen.insert($0).inserted }
    // Newest first, as git starts its walk (a topological walk keeps this order between tips).
    let times = try Dictionary(uniqueKeysWithValues: tips.map { ($0, try commitInfo($0).time) })
    return tips.enumerated().sorted { a, b in
      let (x, y) = (times[a.element] ?? 0, times[b.element] ?? 0)
      return x != y ? x > y : a.offset < b.offset
    }.map(\.element)
  }
}
