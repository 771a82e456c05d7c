import Apply
import DeltaStore
import Foundation

/// One tensor's change to commit: exact factors, or a dense difference in Float64.
struct PlannedChange {
  enum Change {
    /// Float32 factors, stored as given (recompressed only when wider than the matrix).
    case factors(u: [Float], v: [Float], rank: Int)
    case dense([Double])
    /// A solver's Float64 factors (`mvc edit`, merge `resolve`): rank ≥ 2 is recompressed in
    /// Float64 to orthogonal, SVD-ordered Float32 factors at its numerical rank, or to `dense`.
    case exactFactors(u: [Double], v: [Double], rank: Int)
  }
  var name: String
  var change: Change
}

extension EditRepository {
  /// Commits the given changes on top of `parent` and moves the working model there.
  /// Shared by `--delta`, revert and cherry-pick. Factor changes follow the canonical rule
  /// with no residual (the new state *is* the rule's result); dense changes store new bytes.
  /// `origHead` is written to `ORIG_HEAD` as HEAD moves (a merge, as git does).
  func commitChanges(
    _ deltas: [PlannedChange], message: String, method: String, details: [String: String]?,
    parent: ObjectID, mergedParents: [ObjectID] = [], extraEntries: [GitRepository.TreeEntry] = [],
    origHead: ObjectID? = nil
  ) throws -> CommitResult {
    let parentContents = try contents(of: parent)
    var trees = parentContents.tensorTrees
    var changes: [EditRecord.TensorChange] = []
    // Callers commit on a clean working model at `parent`, so it holds each tensor's parent state:
    // start from its bytes (hashes from the stat cache) rather than replay the chain from the last
    // full state or snapshot, which costs one rank-r pass per earlier edit. The rebuilt bytes are
    // verified against the state's hash either way.
    let working = try? WorkingModel(path: modelPath)
    let workingHashes = working.flatMap { try? self.workingHashes($0) } ?? [:]
    // The new bytes computed here are the ones the working model gets (verified against their
    // hash as they are written), not rebuilt a second time by the move: up to the size of the
    // largest changed tensor is kept for it, so memory stays within the move's own budget.
    var prepared: [String: CurrentBytes] = [:]
    var preparedBudget = 0
    for delta in deltas {
      if let info = working?.location(of: delta.name)?.info { preparedBudget = max(preparedBudget, info.byteCount) }
    }
    for (i, delta) in deltas.enumerated() {
      report("applying", i, deltas.count)
      guard let tree = parentContents.tensorTrees[delta.name] else {
        throw RepositoryError.deltaMismatch(file: "-", tensor: delta.name, detail: "is not in the parent commit")
      }
      let state = try storedState(tree, tensor: delta.name).state
      let (rows, cols) = TensorMath.matrixShape(state.shape)
      let current =
        workingHashes[delta.name] == state.hash ? try working?.currentBytes(of: delta.name, hash: state.hash) : nil
      var bytes = try materialize(delta.name, at: parent, current: current)
      let weightNorm = try bytes.withUnsafeBytes {
        try TensorMath.frobenius($0, dtype: state.dtype, count: rows * cols)
      }
      switch try storedForm(of: delta.change, rows: rows, cols: cols, tensor: delta.name) {
      case .factors(let u, let v, let rank):
        bytes.withUnsafeMutableBytes { raw in
          u.withUnsafeBufferPointer { up in
            v.withUnsafeBufferPointer { vp in
              CanonicalRule.apply(
                to: raw, storage: .init(state.dtype), rows: rows, cols: cols, u: up, v: vp, rank: rank)
            }
          }
        }
        let hash = bytes.withUnsafeBytes { ContentHash.of($0).description }
        if hash == state.hash { continue }  // a zero (or sub-ulp) delta changes nothing
        let norms = try factorNorms(u, v, rows: rows, cols: cols, rank: rank, weightFrobenius: weightNorm)
        let written = try writeLowRankState(
          name: delta.name, dtype: state.dtype, shape: state.shape, shard: state.shard, hash: hash,
          parentHash: state.hash, rows: rows, cols: cols, rank: rank, u: u, v: v, residual: nil,
          approximate: false, norms: norms)
        bytes.withUnsafeBytes {
          saveKeyframeIfDue(
            delta.name, bytes: $0, state: written.state,
            factors: DecodedFactors(u: u, v: v, rows: rows, cols: cols, rank: rank),
            ownBytes: written.storedByteCount, parent: parent)
        }
        if bytes.count <= preparedBudget {
          preparedBudget -= bytes.count
          prepared[delta.name] = CurrentBytes(hash: hash, bytes: bytes)
        }
        trees[delta.name] = written.tree
        changes.append(
          .init(
            name: delta.name, storage: "low_rank", rank: rank, norms: norms, residualNonzeroCount: 0,
            storedByteCount: written.storedByteCount))
      case .exactFactors: preconditionFailure("storedForm returns factors or a dense difference")
      case .dense(let difference):
        try bytes.withUnsafeMutableBytes { raw in
          try TensorMath.addDense(raw, dtype: state.dtype, difference: difference)
        }
        let hash = bytes.withUnsafeBytes { ContentHash.of($0).description }
        if hash == state.hash { continue }
        let written = try bytes.withUnsafeBytes {
          try writeFullState(
            name: delta.name, dtype: state.dtype, shape: state.shape, shard: state.shard, bytes: $0, hash: hash)
        }
        trees[delta.name] = written.tree
        changes.append(.init(name: delta.name, storage: "full", storedByteCount: written.storedByteCount))
      }
    }
    if changes.isEmpty && mergedParents.isEmpty { throw RepositoryError.nothingToCommit }
    let (layout, blobs) = try layout(of: parentContents)
    var headers: [String: [UInt8]] = [:]
    for shard in layout.shards {
      if let id = blobs[shard.headerBlob] { headers[shard.headerBlob] = try git.readBlob(id) }
    }
    let indexBytes = try blobs[TreeEntryName.index].map { try git.readBlob($0) }
    let record = EditRecord(formatVersion: baseFormatVersion, method: method, changes: changes, details: details)
    let commit = try writeCommit(
      layout: layout, headers: headers, indexBytes: indexBytes, tensorTrees: trees, record: record, message: message,
      parents: [parent] + mergedParents, extraEntries: extraEntries)
    try moveWorkingModel(
      to: commit, attach: try head(), force: true, expectedHead: parent, reflog: "\(method): \(message)",
      origHead: origHead, prepared: prepared)
    return CommitResult(commit: commit, record: record)
  }

  /// The form a change is stored in: factors wider than the matrix (rank > min(rows, cols)) and
  /// Float64 factors of rank ≥ 2 recompressed in Float64 (`LowRankAlgebra.recompress`); the
  /// result is `.factors` or `.dense`, never `.exactFactors`.
  func storedForm(of change: PlannedChange.Change, rows: Int, cols: Int, tensor: String) throws
    -> PlannedChange.Change
  {
    let widened: (u: [Double], v: [Double], rank: Int)
    switch change {
    case .dense: return change
    case .factors(let u, let v, let rank):
      guard rank > min(rows, cols) else { return change }
      widened = (u.map(Double.init), v.map(Double.init), rank)
    case .exactFactors(let u, let v, let rank):
      guard rank >= 2 else { return .factors(u: u.map { Float($0) }, v: v.map { Float($0) }, rank: rank) }
      widened = (u, v, rank)
    }
    let recompressed = try timed("recompress rank-\(widened.rank) factors") {
      try RepositoryError.applying(to: tensor) {
        try LowRankAlgebra.recompress(u: widened.u, v: widened.v, rows: rows, cols: cols, rank: widened.rank)
      }
    }
    switch recompressed {
    case .factors(let u, let v, let rank): return .factors(u: u, v: v, rank: rank)
    case .dense(let difference): return .dense(difference)
    }
  }
}
