import Foundation

/// HEAD and the working model as an operation that writes on top of HEAD finds them: HEAD has a
/// commit, and the working model holds exactly its state.
struct CleanHead {
  var state: HeadState
  var commit: ObjectID
  var working: WorkingModel
}

extension EditRepository {
  /// The checks every operation that moves HEAD on top of the working model makes first
  /// (commit --delta, edit, merge, revert, cherry-pick, rebase, reset, bisect start): no
  /// bisection is running, HEAD has a commit, and the working model has no uncommitted change.
  /// - Throws: `RepositoryError.bisectInProgress`, `.emptyHistory` or `.uncommittedChanges`.
  func requireCleanHead() throws -> CleanHead {
    try refuseDuringBisect()
    let state = try head()
    guard let commit = state.commit else { throw RepositoryError.emptyHistory }
    let working = try WorkingModel(path: modelPath)
    let status = try status(of: working, against: commit, head: state)
    guard status.isClean else { throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name)) }
    return CleanHead(state: state, commit: commit, working: working)
  }
}
