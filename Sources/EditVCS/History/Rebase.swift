import Apply
import DeltaStore
import Foundation

extension EditRepository {
  /// Replays the current branch's commits since its merge base with `onto` on top of `onto`
  /// (each commit's delta as factors, like cherry-pick, with its message and recorded keys),
  /// then moves the branch there (`pull --rebase`). On failure the branch and the working
  /// model go back to where they were.
  /// - Returns: the new tip and how many commits were replayed.
  package func rebase(onto: ObjectID) throws -> (tip: ObjectID, replayed: Int) {
    let clean = try requireCleanHead()
    guard let branch = clean.state.branchName else {
      throw RepositoryError.detachedHead(operation: "rebase")
    }
    let local = clean.commit
    guard let base = try RepositoryError.wrap("finding the merge base", { try git.mergeBase(local, onto) }) else {
      throw RepositoryError.unrelatedHistories(revision: onto.shortHex, operation: "rebase")
    }
    let commits = try RepositoryError.wrap("walking history") {
      try git.walk(from: [local], hiding: [base], reverse: true)
    }
    for id in commits where try commitInfo(id).parents.count > 1 {
      throw RepositoryError.mergeCommitInRange(commit: id.shortHex, operation: "rebase")
    }
    try moveWorkingModel(
      to: onto, attach: .detached(onto), force: false, expectedHead: nil,
      reflog: "rebase (start): checkout \(onto.hex)",
      origHead: local)
    var tip = onto
    do {
      for id in commits {
        let info = try commitInfo(id)
        let planned = try plannedChanges(of: id, sign: 1)
        let editData = try git.readTree(info.tree).filter { $0.name == TreeEntryName.editData }
        let record = try editRecord(of: contents(of: id))
        let result = try commitChanges(
          planned, message: info.message, method: record?.method ?? "rebase",
          details: (record?.details ?? [:]).merging(["rebased_from": id.hex]) { $1 }, parent: tip,
          extraEntries: editData)
        tip = result.commit
      }
      try RepositoryError.wrap("moving '\(branch)'") {
        try git.updateReference("refs/heads/" + branch, to: tip, expected: local, message: "rebase: onto \(onto.hex)")
      }
      try RepositoryError.wrap("moving HEAD") {
        try git.setHead(branch: branch, message: "rebase (finish): returning to refs/heads/\(branch)")
      }
    } catch {
      _ = try? moveWorkingModel(
        to: local, attach: .branch(name: branch, commit: local), force: true, expectedHead: nil, reflog: "rebase: abort"
      )
      throw error
    }
    return (tip, commits.count)
  }
}
