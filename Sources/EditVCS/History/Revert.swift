import Apply
import DeltaStore
import Foundation

/// Revert and cherry-pick work on the stored factors: the new commit's delta is exactly
/// ∓U·Vᵀ of the source commit (plus, for densely stored changes, the dense difference).
///
/// For sequential edits, later edits were computed against a model that held the reverted
/// one, so a revert is "the history minus REV's delta", not a replay of the later edits
/// without it. The source commit's residual (rounding, ~1 ulp) is not replayed.
extension EditRepository {
  /// `mvc revert REV`.
  public func revert(_ source: ObjectID) throws -> CommitResult {
    let info = try commitInfo(source)
    guard info.parents.first != nil else {
      throw RepositoryError.rootCommit(operation: "revert", commit: source.shortHex)
    }
    let message = "Revert \"\(info.summary)\"\n\nThis reverts commit \(source.hex).\n"
    return try replay(source, sign: -1, message: message, method: "revert")
  }

  /// `mvc cherry-pick REV`.
  public func cherryPick(_ source: ObjectID) throws -> CommitResult {
    let info = try commitInfo(source)
    guard info.parents.first != nil else {
      throw RepositoryError.rootCommit(operation: "cherry-pick", commit: source.shortHex)
    }
    let message = info.message.trimmingCharacters(in: .newlines) + "\n\n(cherry picked from commit \(source.hex))\n"
    return try replay(source, sign: 1, message: message, method: "cherry-pick")
  }

  /// The changes `source` made relative to its first parent, scaled by `sign`.
  func plannedChanges(of source: ObjectID, sign: Float) throws -> [PlannedChange] {
    let info = try commitInfo(source)
    guard let sourceParent = info.parents.first else { return [] }
    let after = try contents(of: source)
    let before = try contents(of: sourceParent)
    var planned: [PlannedChange] = []
    for name in Set(after.tensorTrees.keys).union(before.tensorTrees.keys).sorted() {
      let a = after.tensorTrees[name]
      let b = before.tensorTrees[name]
      if a == b { continue }
      guard let a, let b else {
        throw RepositoryError.tensorAddedOrRemoved(
          tensor: name, change: a == nil ? "removed" : "added", revisions: "commit \(source.shortHex)",
          operation: "a replayed commit")
      }
      let state = try storedState(a, tensor: name)
      if state.state.kind == .lowRank {
        let f = try factors(of: state, tensor: name)
        planned.append(PlannedChange(name: name, change: .factors(u: f.u.map { $0 * sign }, v: f.v, rank: f.rank)))
      } else {
        let newBytes = try materialize(name, at: source)
        let oldBytes = try materialize(name, at: sourceParent)
        let beforeState = try storedState(b, tensor: name).state
        guard beforeState.dtype.isEditableFloat else {
          throw RepositoryError.notAFloatTensor(
            tensor: name, dtype: beforeState.dtype.rawValue, operation: "replayed")
        }
        var difference = newBytes.withUnsafeBytes { n in
          oldBytes.withUnsafeBytes { o in
            TensorMath.denseDifference(n, o, dtype: beforeState.dtype, count: beforeState.elementCount)
          }
        }
        if sign < 0 { for i in difference.indices { difference[i] = -difference[i] } }
        planned.append(PlannedChange(name: name, change: .dense(difference)))
      }
    }
    return planned
  }

  func replay(_ source: ObjectID, sign: Float, message: String, method: String) throws -> CommitResult {
    let parent = try requireCleanHead().commit
    let planned = try plannedChanges(of: source, sign: sign)
    let headContents = try contents(of: parent)
    for change in planned where headContents.tensorTrees[change.name] == nil {
      throw RepositoryError.tensorNotInCommit(tensor: change.name, revision: "HEAD")
    }
    guard !planned.isEmpty else { throw RepositoryError.nothingToCommit }
    return try commitChanges(planned, message: message, method: method, details: ["source": source.hex], parent: parent)
  }
}
