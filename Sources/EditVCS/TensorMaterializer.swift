import Apply
import DeltaStore
import Foundation

/// Rebuilds a tensor's exact bytes at a commit from the stored states.
///
/// A state is `full` (complete), `reference` (complete, read from the base file), or a
/// `low_rank` change of an earlier state. The chain is followed back through first parents
/// until a complete state, or a state whose bytes the caller already has (the working
/// model's own tensor, when it holds a state on the chain: this is what makes a bisect step
/// or the checkout of a child commit cheap), then replayed forward under the canonical rule.
extension EditRepository {
  /// The chain of states of `tensor` at `commit`, newest first, and the commit each state
  /// belongs to.
  func stateChain(
    of tensor: String, at commit: ObjectID, stopAtHash known: String? = nil, useSnapshots: Bool = true
  ) throws -> [StoredTensorState] {
    var chain: [StoredTensorState] = []
    var current = commit
    guard var tree = try contents(of: commit).tensorTrees[tensor] else {
      throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "has no tensor '\(tensor)'")
    }
    while true {
      let stored = try storedState(tree, tensor: tensor)
      chain.append(stored)
      if stored.state.kind != .lowRank || stored.state.hash == known || (useSnapshots && hasSnapshot(stored.state.hash)) {
        return chain
      }
      // Find the commit that introduced this state: walk first parents while the entry stays.
      while true {
        let info = try commitInfo(current)
        guard let parent = info.parents.first else {
          throw RepositoryError.corruptObject(
            what: "tensor '\(tensor)'", reason: "change chain from \(commit.shortHex) ends without a full state")
        }
        guard let parentTree = try contents(of: parent).tensorTrees[tensor] else {
          throw RepositoryError.corruptObject(
            what: "tensor '\(tensor)'", reason: "low-rank state in \(current.shortHex) but absent in its parent")
        }
        current = parent
        if parentTree != tree {
          tree = parentTree
          break
        }
      }
      if stored.state.parentHash != nil, try storedState(tree, tensor: tensor).state.hash != stored.state.parentHash {
        throw RepositoryError.corruptObject(
          what: "tensor '\(tensor)'", reason: "state \(stored.tree.shortHex) does not follow its parent state")
      }
    }
  }

  /// The exact bytes of `tensor` at `commit`.
  /// - Parameter current: the bytes of this tensor the caller has now and their hash; used as
  ///   the starting point when that state lies on the chain.
  func materialize(
    _ tensor: String, at commit: ObjectID, current: (hash: String, bytes: UnsafeRawBufferPointer)? = nil,
    useSnapshots: Bool = true
  ) throws -> [UInt8] {
    let chain = try timed("state chain of '\(tensor)'") {
      try stateChain(of: tensor, at: commit, stopAtHash: current?.hash, useSnapshots: useSnapshots)
    }
    guard let oldest = chain.last else { return [] }
    var bytes: [UInt8]
    var remaining = chain.dropLast()
    if let current, oldest.state.hash == current.hash {
      bytes = Array(current.bytes)
    } else if oldest.state.kind == .lowRank, useSnapshots {
      guard let cached = try timed("load snapshot", { try loadSnapshot(oldest.state) }) else {
        return try materialize(tensor, at: commit, current: current, useSnapshots: false)
      }
      bytes = cached
    } else {
      bytes = try timed("complete bytes (\(oldest.state.kind))") { try completeBytes(oldest, tensor: tensor) }
      if oldest.state.kind == .lowRank {
        // A chain may end on a low-rank state only when it is the caller's current state.
        throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "chain has no starting state")
      }
    }
    while let step = remaining.popLast() {
      try timed("apply rank-\(step.state.rank ?? 0) state") { try applyLowRank(step, to: &bytes, tensor: tensor) }
      // Replays leave the grid's snapshots behind, so the next checkout nearby replays about
      // `snapshotInterval` steps at most (a bisection walks back and forth over one chain).
      if !remaining.isEmpty && Self.isGridState(step.state.hash) {
        bytes.withUnsafeBytes { saveSnapshot($0, state: step.state) }
      }
    }
    let target = chain[0].state
    let actual = timed("verify hash") { bytes.withUnsafeBytes { ContentHash.of($0).description } }
    guard actual == target.hash else {
      throw RepositoryError.hashMismatch(
        tensor: tensor, revision: commit.shortHex, expected: target.hash, actual: actual)
    }
    return bytes
  }

  /// Bytes of a `full` or `reference` state.
  func completeBytes(_ stored: StoredTensorState, tensor: String) throws -> [UInt8] {
    let state = stored.state
    switch state.kind {
    case .full:
      var out = [UInt8](repeating: 0, count: state.byteCount)
      let count = state.chunkCount ?? 0
      var blobs: [ObjectID] = []
      for i in 0..<count {
        guard let id = stored.blobs[TreeEntryName.chunk(i)] else {
          throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "missing \(TreeEntryName.chunk(i))")
        }
        blobs.append(id)
      }
      try out.withUnsafeMutableBytes { destination in
        try TensorBlobs.decodeFull(
          chunkCount: count, chunkByteCount: state.chunkByteCount ?? TensorBlobs.chunkByteCount,
          dtype: state.dtype, into: destination
        ) { i in try git.readBlob(blobs[i]) }
      }
      return out
    case .reference:
      guard let path = state.referencePath else {
        throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "reference state without a path")
      }
      let file = try SafetensorsFile(path: path)
      guard let info = file.tensor(named: tensor), info.byteCount == state.byteCount else {
        throw RepositoryError.referenceBaseChanged(path: path, tensor: tensor)
      }
      let bytes = file.bytes(of: info)
      guard ContentHash.of(bytes).description == state.hash else {
        throw RepositoryError.referenceBaseChanged(path: path, tensor: tensor)
      }
      return Array(bytes)
    case .lowRank:
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "low-rank state has no bytes of its own")
    }
  }

  /// Loads a low-rank state's factors.
  func factors(of stored: StoredTensorState, tensor: String) throws -> (u: [Float], v: [Float], rows: Int, cols: Int, rank: Int) {
    let state = stored.state
    guard let rank = state.rank, let rows = state.rows, let cols = state.cols, rows * cols == state.elementCount else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "low-rank state without rows/cols/rank")
    }
    if rank == 0 { return ([], [], rows, cols, 0) }
    guard let uID = stored.blobs[TreeEntryName.u], let vID = stored.blobs[TreeEntryName.v] else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "missing factor blobs")
    }
    let u = try TensorBlobs.decodeFactor(try git.readBlob(uID), elementCount: rows * rank)
    let v = try TensorBlobs.decodeFactor(try git.readBlob(vID), elementCount: cols * rank)
    return (u, v, rows, cols, rank)
  }

  /// `bytes = round(bytes + U·Vᵀ) + residual`, in place.
  func applyLowRank(_ stored: StoredTensorState, to bytes: inout [UInt8], tensor: String) throws {
    let state = stored.state
    let f = try factors(of: stored, tensor: tensor)
    guard bytes.count == state.byteCount else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "state size differs from its parent")
    }
    try bytes.withUnsafeMutableBytes { raw in
      try f.u.withUnsafeBufferPointer { u in
        try f.v.withUnsafeBufferPointer { v in
          try TensorMath.addLowRankCanonical(
            raw, dtype: state.dtype, rows: f.rows, cols: f.cols, u: u, v: v, rank: f.rank)
        }
      }
      if let residualID = stored.blobs[TreeEntryName.residual] {
        let encoded = try git.readBlob(residualID)
        try ResidualCodec.apply(encoded, to: raw, dtype: state.dtype, elementCount: state.elementCount)
      }
    }
  }
}

/// A local cache of materialized tensor states, outside the object database: never pushed,
/// safe to delete (`mvc gc` prunes it), keyed by content hash and verified on load.
extension EditRepository {
  static let snapshotInterval = 16

  /// About one state in `snapshotInterval` is a grid state, chosen by its hash (the last hex
  /// digit is 0), so every process agrees on the grid without any bookkeeping.
  static func isGridState(_ hash: String) -> Bool { hash.hasSuffix("0") }

  /// After a commit: the new state of a changed tensor is saved when it is a grid state (its
  /// bytes are at hand, so the grid costs no replay), keeping later replays short.
  func snapshotIfGridState(_ bytes: UnsafeRawBufferPointer, state: TensorState) {
    guard state.kind == .lowRank, Self.isGridState(state.hash) else { return }
    saveSnapshot(bytes, state: state)
  }

  var snapshotDirectory: String { (gitDirectory as NSString).appendingPathComponent("mvc-snapshots") }

  func snapshotPath(_ hash: String) -> String {
    let name = hash.replacingOccurrences(of: ":", with: "-")
    return (snapshotDirectory as NSString).appendingPathComponent(name + ".zst")
  }

  func hasSnapshot(_ hash: String) -> Bool { FileManager.default.fileExists(atPath: snapshotPath(hash)) }

  func saveSnapshot(_ bytes: UnsafeRawBufferPointer, state: TensorState) {
    let path = snapshotPath(state.hash)
    guard !FileManager.default.fileExists(atPath: path) else { return }
    // A cache: failing to write one (full disk) only costs time later.
    do {
      try FileManager.default.createDirectory(atPath: snapshotDirectory, withIntermediateDirectories: true)
      let frame = try makeCompressor(level: 1).compress(bytes)
      let writer = try AtomicFileWriter(path: path, byteCount: frame.count, hook: environment.ioHook)
      do {
        try frame.withUnsafeBytes { try writer.write($0, at: 0) }
        try writer.commit()
      } catch {
        writer.abandon()
      }
    } catch {}
  }

  /// The cached bytes of `state`, or nil when absent or damaged (then the chain is replayed).
  func loadSnapshot(_ state: TensorState) throws -> [UInt8]? {
    guard let data = FileManager.default.contents(atPath: snapshotPath(state.hash)) else { return nil }
    guard let bytes = try? data.withUnsafeBytes({ try Zstd.decompress($0, expectedByteCount: state.byteCount) }),
      bytes.withUnsafeBytes({ ContentHash.of($0).description }) == state.hash
    else {
      try? FileManager.default.removeItem(atPath: snapshotPath(state.hash))
      return nil
    }
    return bytes
  }
}
