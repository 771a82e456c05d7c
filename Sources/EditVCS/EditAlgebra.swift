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
      throw RepositoryError.invalidArgument("cannot revert the root commit \(source.shortHex): it is the base model")
    }
    let message = "Revert \"\(info.summary)\"\n\nThis reverts commit \(source.hex).\n"
    return try replay(source, sign: -1, message: message, method: "revert")
  }

  /// `mvc cherry-pick REV`.
  public func cherryPick(_ source: ObjectID) throws -> CommitResult {
    let info = try commitInfo(source)
    guard info.parents.first != nil else {
      throw RepositoryError.invalidArgument("cannot cherry-pick the root commit \(source.shortHex): it is the base model")
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
        throw RepositoryError.invalidArgument(
          "commit \(source.shortHex) \(a == nil ? "removes" : "adds") tensor '\(name)'; replaying added or removed tensors is not supported")
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
          throw RepositoryError.invalidArgument("tensor '\(name)' is \(beforeState.dtype.rawValue): only float tensors can be replayed")
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
    try refuseDuringBisect()
    let headState = try head()
    guard let parent = headState.commit else { throw RepositoryError.emptyHistory }
    let working = try WorkingModel(path: modelPath)
    let status = try status(of: working, against: parent, head: headState)
    guard status.isClean else { throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name)) }
    let planned = try plannedChanges(of: source, sign: sign)
    let headContents = try contents(of: parent)
    for change in planned where headContents.tensorTrees[change.name] == nil {
      throw RepositoryError.invalidArgument("tensor '\(change.name)' changed by \(source.shortHex) is not in HEAD")
    }
    guard !planned.isEmpty else { throw RepositoryError.nothingToCommit }
    return try commitChanges(planned, message: message, method: method, details: ["source": source.hex], parent: parent)
  }
}

/// One tensor's difference between two states of the model.
public struct TensorDiff: Sendable {
  public var name: String
  /// `modified`, `added`, `removed`.
  public var change: String
  public var dtype: DType
  public var shape: [Int]
  /// Numerical rank of the difference; nil when it is not low-rank (or not a float matrix).
  public var rank: Int?
  public var frobenius: Double?
  public var spectral: Double?
  /// ‖W_from‖_F, for ratios.
  public var weightFrobenius: Double?
}

extension EditRepository {
  /// `mvc diff [A] [B]`: tensors that differ between commit `from` and commit `to`, or the
  /// working model when `to` is nil, with the rank and norms of each difference.
  public func diff(from: ObjectID, to: ObjectID?) throws -> [TensorDiff] {
    let fromHashes = try tensorHashes(at: from)
    let working = to == nil ? try WorkingModel(path: modelPath) : nil
    let toHashes: [String: String] =
      try to.map { try tensorHashes(at: $0) } ?? working.map { try workingHashes($0) } ?? [:]
    var result: [TensorDiff] = []
    for name in Set(fromHashes.keys).union(toHashes.keys).sorted() {
      guard fromHashes[name] != toHashes[name] else { continue }
      let fromState = try contents(of: from).tensorTrees[name].map { try storedState($0, tensor: name).state }
      if fromHashes[name] == nil || toHashes[name] == nil {
        let shape: [Int]
        let dtype: DType
        if let fromState {
          (shape, dtype) = (fromState.shape, fromState.dtype)
        } else if let to, let tree = try contents(of: to).tensorTrees[name] {
          let s = try storedState(tree, tensor: name).state
          (shape, dtype) = (s.shape, s.dtype)
        } else if let working, let (_, info) = working.location(of: name) {
          (shape, dtype) = (info.shape, info.dtype)
        } else {
          continue
        }
        result.append(TensorDiff(name: name, change: fromHashes[name] == nil ? "added" : "removed", dtype: dtype, shape: shape))
        continue
      }
      guard let fromState else { continue }
      var entry = TensorDiff(name: name, change: "modified", dtype: fromState.dtype, shape: fromState.shape)
      let (rows, cols) = TensorMath.matrixShape(fromState.shape)
      if fromState.dtype.isEditableFloat, rows >= 2, cols >= 2 {
        let old = try materialize(name, at: from)
        let newBytes: [UInt8]
        if let to {
          newBytes = try materialize(name, at: to)
        } else if let working, let bytes = try working.read(name) {
          newBytes = bytes
        } else {
          continue
        }
        let count = rows * cols
        let delta = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { delta.deallocate() }
        let measured = try newBytes.withUnsafeBytes { n in
          try old.withUnsafeBytes { o in
            try TensorMath.difference(new: n, old: o, dtype: fromState.dtype, count: count, into: delta)
          }
        }
        entry.weightFrobenius = measured.oldFrobenius
        entry.frobenius = DenseNorms.frobenius(delta, count: count)
        if measured.allFinite, let factors = try Factorization.lowRank(
          of: delta, rows: rows, cols: cols, noiseRMS: measured.noiseRMS, maxRank: max(1, count / (rows + cols) / 2))
        {
          entry.rank = factors.rank
          entry.spectral = factors.singularValues.first ?? 0
        }
      }
      result.append(entry)
    }
    return result
  }
}

extension EditRepository {
  /// Replays the current branch's commits since its merge base with `onto` on top of `onto`
  /// (each commit's delta as factors, like cherry-pick, with its message and recorded keys),
  /// then moves the branch there (`pull --rebase`). On failure the branch and the working
  /// model go back to where they were.
  /// - Returns: the new tip and how many commits were replayed.
  public func rebase(onto: ObjectID) throws -> (tip: ObjectID, replayed: Int) {
    try refuseDuringBisect()
    let headState = try head()
    guard let branch = headState.branchName, let local = headState.commit else {
      throw RepositoryError.invalidArgument("rebase needs HEAD on a branch with commits")
    }
    let working = try WorkingModel(path: modelPath)
    let status = try status(of: working, against: local, head: headState)
    guard status.isClean else { throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name)) }
    guard let base = try RepositoryError.wrap("finding the merge base", { try git.mergeBase(local, onto) }) else {
      throw RepositoryError.invalidArgument("the histories share no commit; nothing to rebase onto")
    }
    let commits = try RepositoryError.wrap("walking history") { try git.walk(from: [local], hiding: [base], reverse: true) }
    for id in commits where try commitInfo(id).parents.count > 1 {
      throw RepositoryError.invalidArgument("commit \(id.shortHex) is a merge; rebasing merges is not supported, use 'mvc merge'")
    }
    try moveWorkingModel(to: onto, attach: .detached(onto), force: false, expectedHead: nil, reflog: "rebase: start onto \(onto.hex)")
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
      try RepositoryError.wrap("moving HEAD") { try git.setHead(branch: branch) }
    } catch {
      try? moveWorkingModel(
        to: local, attach: .branch(name: branch, commit: local), force: true, expectedHead: nil, reflog: "rebase: abort")
      throw error
    }
    return (tip, commits.count)
  }
}
