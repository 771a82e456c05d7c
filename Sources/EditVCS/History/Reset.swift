import Foundation

/// What `mvc reset` moves, as git's modes mean it when the working tree is the model and there
/// is no index.
public enum ResetMode: String, Sendable, CaseIterable {
  /// Only the branch (or detached HEAD) moves; the working model keeps the old state, which
  /// then shows as uncommitted changes.
  case soft
  /// git's default moves the branch and the index; with no index it is `soft`.
  case mixed
  /// The branch moves and the working model is rewritten to the target (journaled, like checkout).
  case hard
}

extension EditRepository {
  /// `mvc reset [--soft|--mixed|--hard] REV`: moves HEAD's branch (or detached HEAD) to
  /// `target`, writing `ORIG_HEAD` and reflog entries as git does, so the old tip stays reachable
  /// as `ORIG_HEAD` and `HEAD@{1}`. `soft` and `mixed` refuse uncommitted changes in the
  /// working model (they would be mixed with the moved-over commits' changes); `hard` discards
  /// them. `revision` is what the user typed, for the reflog line.
  @discardableResult
  public func reset(to target: ObjectID, mode: ResetMode, revision: String) throws -> CheckoutSummary? {
    let reflog = "reset: moving to \(revision)"
    guard mode == .hard else {
      let clean = try requireCleanHead()
      try RepositoryError.wrap("writing ORIG_HEAD") {
        try git.forceReference("ORIG_HEAD", to: clean.commit, message: reflog)
      }
      try advanceHead(from: clean.commit, to: target, message: reflog)
      return nil
    }
    try refuseDuringBisect()
    let state = try head()
    guard let old = state.commit else { throw RepositoryError.emptyHistory }
    let attach: HeadState = state.branchName.map { .branch(name: $0, commit: target) } ?? .detached(target)
    return try moveWorkingModel(
      to: target, attach: attach, force: true, expectedHead: state.branchName == nil ? nil : old, reflog: reflog,
      current: state, origHead: old)
  }
}
