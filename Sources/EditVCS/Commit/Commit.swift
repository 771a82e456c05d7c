import Apply
import DeltaStore
import Foundation

public struct CommitOptions {
  package var message: String
  /// Drop the exactness residual where the error stays under `tolerance · max|W|`.
  package var tolerance: Double?
  /// Recorded as the edit's method (`working-model` when nil).
  package var method: String?
  package var details: [String: String]?
  /// Refine recovered factors with the sweep lines after the least-squares start: half the
  /// residual bytes of a bf16/fp16 edit for about three times the refinement's time.
  package var compact: Bool

  public init(
    message: String, tolerance: Double? = nil, method: String? = nil, details: [String: String]? = nil,
    compact: Bool = false
  ) {
    self.message = message
    self.tolerance = tolerance
    self.method = method
    self.details = details
    self.compact = compact
  }
}

public struct CommitResult: Sendable {
  public var commit: ObjectID
  public var record: EditRecord
}

/// A tensor's new state, computed and written as objects but not yet referenced by a commit.
struct EncodedChange {
  var tree: ObjectID
  var change: EditRecord.TensorChange
  var hash: String
  /// True when the committed bytes differ from the working bytes (`--tolerance`): the working
  /// model is then rewritten so it matches what checkout will produce.
  var differsFromWorkingModel = false
}

extension EditRepository {
  /// Commits the working model as it is on disk.
  public func commit(_ options: CommitOptions) throws -> CommitResult {
    try refuseDuringBisect()
    // OpenBLAS's threads spin for ~0.1 s after the library loads (and after each threaded call):
    // hashing and the parent's decode use every core themselves. The rank finder starts them again.
    environment.releaseBLASThreads?()
    let headState = try head()
    guard let parent = headState.commit else { throw RepositoryError.emptyHistory }
    let working = try WorkingModel(path: modelPath)
    let (hashes, hashedStats) = try timed("working hashes") { try hashedWorkingModel(working) }
    let status = try self.status(of: working, against: parent, head: headState, hashes: hashes)
    guard !status.isClean else { throw RepositoryError.nothingToCommit }
    let parentContents = try contents(of: parent)

    var trees = parentContents.tensorTrees
    var changes: [EditRecord.TensorChange] = []
    var needsNormalization = false
    for (i, entry) in status.entries.enumerated() {
      report("committing", i, status.entries.count)
      switch entry.change {
      case .removed:
        trees[entry.name] = nil
        changes.append(.init(name: entry.name, storage: "removed", storedByteCount: 0))
      case .added:
        guard let (shard, info) = working.location(of: entry.name), let bytes = try working.read(entry.name),
          let hash = hashes[entry.name]
        else { continue }
        let written = try bytes.withUnsafeBytes {
          try writeFullState(
            name: entry.name, dtype: info.dtype, shape: info.shape, shard: shard, bytes: $0, hash: hash)
        }
        trees[entry.name] = written.tree
        changes.append(.init(name: entry.name, storage: "added", storedByteCount: written.storedByteCount))
      case .modified:
        guard let hash = hashes[entry.name], let headTree = parentContents.tensorTrees[entry.name] else { continue }
        let encoded = try timed("encode '\(entry.name)'") {
          try encodeWorkingChange(
            entry.name, working: working, hash: hash, parent: parent,
            parentState: try storedState(headTree, tensor: entry.name), tolerance: options.tolerance,
            compact: options.compact)
        }
        trees[entry.name] = encoded.tree
        changes.append(encoded.change)
        needsNormalization = needsNormalization || encoded.differsFromWorkingModel
      }
    }
    // A state's `shard` is informational: the layout says which file holds each tensor, so
    // re-sharding rewrites only `model/`, never a state (a rewritten state would break its chain).
    let (layout, headers) = working.layout()
    let record = EditRecord(
      formatVersion: baseFormatVersion, method: options.method ?? "working-model", changes: changes,
      tolerance: options.tolerance, details: options.details)
    let commit = try timed("write commit") {
      try writeCommit(
        layout: layout, headers: headers, indexBytes: working.indexBytes, tensorTrees: trees, record: record,
        message: options.message, parents: [parent], sideFiles: .tree(try writeSideFilesTree(try working.sideFiles())))
    }
    if !needsNormalization {
      try advanceHead(from: parent, to: commit, message: "commit: \(options.message)")
      var newHashes = hashes
      for change in changes where change.storage == "removed" { newHashes[change.name] = nil }
      saveStatCache(working: working, hashes: newHashes, stats: hashedStats)
    } else {
      // The committed state differs from the file (tolerance): rewrite those tensors under the journal.
      try moveWorkingModel(
        to: commit, attach: headState, force: true, expectedHead: parent, reflog: "commit: \(options.message)")
    }
    return CommitResult(commit: commit, record: record)
  }

  /// Stores the change of one tensor from its HEAD state to the working bytes: as factors plus
  /// residual when the change is low-rank, complete otherwise.
  ///
  /// The working bytes are read once, whole, beside the parent's: the difference is never held
  /// (the rank finder widens it a row block at a time from the two), so about two tensors are in
  /// memory. The read checks the file is the one hashed; one that changed throws
  /// `DeltaStoreError.fileChanged`.
  func encodeWorkingChange(
    _ name: String, working: WorkingModel, hash: String, parent: ObjectID, parentState: StoredTensorState,
    tolerance: Double?, compact: Bool
  ) throws -> EncodedChange {
    guard let (shard, info) = working.location(of: name) else {
      throw RepositoryError.corruptObject(what: "working model", reason: "tensor '\(name)' vanished")
    }
    let file = working.shards[shard]
    let (rows, cols) = TensorMath.matrixShape(info.shape)
    let storeComplete = { (read: [UInt8]?) throws -> EncodedChange in
      let written = try (read ?? file.read(info)).withUnsafeBytes {
        try self.writeFullState(name: name, dtype: info.dtype, shape: info.shape, shard: shard, bytes: $0, hash: hash)
      }
      return EncodedChange(
        tree: written.tree, change: .init(name: name, storage: "full", storedByteCount: written.storedByteCount),
        hash: hash)
    }
    // Factors pay only for float matrices; vectors and integer tensors are stored complete.
    guard info.dtype.isEditableFloat, info.dtype.byteCount != nil, rows >= 2, cols >= 2 else {
      return try storeComplete(nil)
    }
    let previous = try timed("materialize parent state") { try materialize(name, at: parent) }
    // The parent's decode buffers (a chunk-sized scratch and compressed chunk, ~100 MB) are not
    // kept through the difference and the rank finder.
    decodeWorkspaces.releaseKept()
    let count = rows * cols
    let workBytes = try timed("read working tensor") {
      try Self.read(info, of: file, workers: environment.workerThreads)
    }
    let (measured, foundFactors) = try lowRankDifference(
      name: name, dtype: info.dtype, new: workBytes, old: previous, rows: rows, cols: cols)
    // The refinement and the reconstruction make no BLAS call and use every core themselves.
    environment.releaseBLASThreads?()
    guard let found = foundFactors else { return try storeComplete(workBytes) }
    let factors = refinedAgainstRounding(
      found, name: name, dtype: info.dtype, rows: rows, cols: cols, committed: workBytes, parent: previous,
      sweeps: compact)
    // F32: each element's rounding context, for the conditioned residual (from the parent's
    // bytes, so before they become the reconstruction).
    let contexts =
      info.dtype == .f32 && factors.rank > 0 && tolerance == nil
      ? timed("rounding contexts") {
        RoundingContexts.compute(
          parent: previous, rows: rows, cols: cols, u: factors.u, v: factors.v, rank: factors.rank,
          workers: environment.workerThreads)
      } : nil
    // The parent's bytes are not needed past the difference: reconstruct in the same buffer.
    var reconstructed = consume previous
    timed("reconstruct") {
      reconstructed.withUnsafeMutableBytes { raw in
        Self.applyCanonical(
          to: raw, dtype: info.dtype, rows: rows, cols: cols, u: factors.u, v: factors.v, rank: factors.rank,
          workers: environment.workerThreads)
      }
    }
    var residual: EncodedResidual?
    var approximate = false
    var stateHash = hash
    if let tolerance,
      try workBytes.withUnsafeBytes({ work in
        try reconstructed.withUnsafeBytes { try TensorMath.maxAbsDifference(work, $0, dtype: info.dtype, count: count) }
      }) <= tolerance * measured.maxAbsNew
    {
      approximate = true
      stateHash = reconstructed.withUnsafeBytes { ContentHash.of($0).description }
    } else {
      residual = try timed("residual") {
        try workBytes.withUnsafeBytes { work in
          try reconstructed.withUnsafeBytes { reconstructed in
            try RoundingContexts.with(contexts) {
              try ResidualCodec.encode(
                committed: work, reconstructed: reconstructed, dtype: info.dtype, allowRice: true, contexts: $0)
            }
          }
        }
      }
    }
    let norms = try factorNorms(
      factors.u, factors.v, rows: rows, cols: cols, rank: factors.rank, weightFrobenius: measured.oldFrobenius)
    let written = try writeLowRankState(
      name: name, dtype: info.dtype, shape: info.shape, shard: shard, hash: stateHash,
      parentHash: parentState.state.hash, rows: rows, cols: cols, rank: factors.rank, u: factors.u, v: factors.v,
      residual: residual, approximate: approximate, norms: norms)
    let own = DecodedFactors(u: factors.u, v: factors.v, rows: rows, cols: cols, rank: factors.rank)
    (approximate ? reconstructed : workBytes).withUnsafeBytes {
      saveKeyframeIfDue(
        name, bytes: $0, state: written.state, factors: own, ownBytes: written.storedByteCount, parent: parent)
    }
    return EncodedChange(
      tree: written.tree,
      change: .init(
        name: name, storage: "low_rank", rank: factors.rank, norms: norms,
        residualNonzeroCount: residual?.nonzeroCount ?? 0, storedByteCount: written.storedByteCount),
      hash: stateHash, differsFromWorkingModel: approximate)
  }

  /// `W_work − W_parent`'s noise and norms (one pass over the two) and its factors from the rank
  /// finder, which reads the difference a row block at a time from the two tensors' bytes: nil
  /// when the change is not finite or not low-rank.
  private func lowRankDifference(
    name: String, dtype: DType, new: [UInt8], old: [UInt8], rows: Int, cols: Int
  ) throws -> (measured: TensorMath.DifferenceMeasures, factors: LowRankFactors?) {
    let count = rows * cols
    // Break-even: r·(rows+cols) factor elements against rows·cols dense ones; the residual
    // and the factors' own entropy make dense storage win a little earlier.
    let maxRank = max(1, count / (rows + cols) / 2)
    return try new.withUnsafeBytes { new in
      try old.withUnsafeBytes { old in
        let measured = try timed("difference measures") {
          try TensorMath.measures(new: new, old: old, dtype: dtype, count: count, workers: environment.workerThreads)
        }
        guard measured.allFinite else { return (measured, nil) }
        let workers = environment.workerThreads
        // The row parts run on the workers, one BLAS thread each (see RowBlockedDelta).
        let blasThreads = workers > 1 ? environment.setBLASThreadCount?(1) : nil
        defer { if let blasThreads { _ = environment.setBLASThreadCount?(blasThreads) } }
        let find = { (powerIterations: Int) in
          try self.timed("rank finder") {
            try RepositoryError.applying(to: name) {
              try TensorMath.withDifferenceRows(new: new, old: old, dtype: dtype, cols: cols) { rowsOfDelta in
                try Factorization.lowRank(
                  rows: rows, cols: cols, frobenius: measured.deltaFrobenius, noiseRMS: measured.noiseRMS,
                  maxRank: maxRank, powerIterations: powerIterations, workers: workers, deltaRows: rowsOfDelta)
              }
            }
          }
        }
        // Factors the refinement will fit to the rounding need no power iteration (its
        // least-squares start does more); a rank beyond what is refined is found again with one.
        guard Self.isRefined(dtype) else { return (measured, try find(1)) }
        let factors = try find(0)
        if let factors, factors.rank > Self.refinedRankLimit { return (measured, try find(1)) }
        return (measured, factors)
      }
    }
  }

  /// `CanonicalRule.apply` with the rows cut into one range per worker: each element's result
  /// depends only on its own bytes, its row of U and V, so the bytes are those of one call.
  static func applyCanonical(
    to raw: UnsafeMutableRawBufferPointer, dtype: DType, rows: Int, cols: Int, u: [Float], v: [Float], rank: Int,
    workers: Int
  ) {
    let rowBytes = raw.count / max(rows, 1)
    // Parts of at least 2¹⁸ elements (a row each at least).
    let parts = ParallelParts.ranges(rows, parts: workers, minimum: max(1, (1 << 18) / max(cols, 1)))
    u.withUnsafeBufferPointer { u in
      v.withUnsafeBufferPointer { v in
        ParallelParts.run(parts.count, workers: workers) { part in
          let range = parts[part]
          CanonicalRule.apply(
            to: UnsafeMutableRawBufferPointer(
              rebasing: raw[(range.lowerBound * rowBytes)..<(range.upperBound * rowBytes)]),
            storage: .init(dtype), rows: range.count, cols: cols,
            u: UnsafeBufferPointer(rebasing: u[(range.lowerBound * rank)..<(range.upperBound * rank)]), v: v,
            rank: rank)
        }
      }
    }
  }

  /// `file.read(tensor)` with the parts of the tensor read on `workers` threads (the copy out of
  /// the page cache, and the faults of the fresh array, are most of a read): each part checks,
  /// as every read does, that the file is still the one opened (and hashed), so a file changed
  /// meanwhile still throws `DeltaStoreError.fileChanged`.
  static func read(_ tensor: TensorInfo, of file: SafetensorsFile, workers: Int) throws -> [UInt8] {
    let offset = file.fileOffset(of: tensor)
    let parts = ParallelParts.ranges(tensor.byteCount, parts: workers, minimum: 8 << 20)
    return try [UInt8](unsafeUninitializedCapacity: tensor.byteCount) { buffer, initialized in
      let raw = UnsafeMutableRawBufferPointer(buffer)
      try ParallelParts.run(parts.count, workers: workers) { part in
        try file.file.read(
          into: UnsafeMutableRawBufferPointer(rebasing: raw[parts[part]]), at: offset + parts[part].lowerBound)
      }
      initialized = tensor.byteCount
    }
  }

  func factorNorms(_ u: [Float], _ v: [Float], rows: Int, cols: Int, rank: Int, weightFrobenius: Double) throws
    -> DeltaNorms
  {
    guard rank > 0 else { return DeltaNorms(frobenius: 0, spectral: 0, weightFrobenius: weightFrobenius) }
    return try u.withUnsafeBufferPointer { up in
      try v.withUnsafeBufferPointer { vp in
        guard let uBase = up.baseAddress, let vBase = vp.baseAddress else {
          return DeltaNorms(frobenius: 0, spectral: 0, weightFrobenius: weightFrobenius)
        }
        return DeltaNorms(
          frobenius: LowRankNorms.frobenius(u: uBase, v: vBase, rows: rows, cols: cols, rank: rank),
          spectral: try LowRankNorms.spectral(u: uBase, v: vBase, rows: rows, cols: cols, rank: rank),
          weightFrobenius: weightFrobenius)
      }
    }
  }
}
