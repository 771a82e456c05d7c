import DeltaStore
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

extension EditRepository {
  /// Rebuilds `tensors` at `commit` on up to `environment.workerThreads` worker threads and hands
  /// the bytes to `write` on this thread in the given order, so writes, the journal and
  /// fault-injection hooks see the same sequence whatever the timing. Workers go on rebuilding
  /// while this thread writes, with at most one job per worker and one more in flight, as long as
  /// what is held (tensors rebuilding or waiting to be written, packed objects read for them, and
  /// the decode workspaces the workers keep) stays within twice the largest tensor.
  ///
  /// With `streaming`, a tensor whose state at `commit` is complete (`full`: no edit to replay)
  /// is decoded a chunk at a time into reused chunk-sized buffers, each written as soon as it is
  /// hashed, instead of into a fresh tensor-sized array: memory stays a few chunks whatever the
  /// tensor, and no page of a fresh array faults in. Such a tensor's bytes are written before its
  /// hash is known whole: only for files that are renamed into place once everything is verified
  /// (`AtomicFileWriter`). The last piece is written only once the whole hash matched, so a
  /// tensor reported `complete` is verified; a mismatch throws before it.
  ///
  /// Workers get only a `TensorRebuilder`, plans and chunk sources (all `Sendable`); libgit2 and
  /// the repository itself stay on this thread.
  /// - Parameter write: the tensor's name, the offset of `bytes` in the tensor, the bytes (valid
  ///   during the call) and whether they end the tensor (a rebuilt tensor comes whole, at 0).
  func materializeInOrder(
    _ tensors: [String], at commit: ObjectID,
    current: (String) throws -> CurrentBytes?,
    streaming: Bool = false,
    write: (_ name: String, _ offset: Int, _ bytes: UnsafeRawBufferPointer, _ complete: Bool) throws -> Void
  ) throws {
    let workerCount = environment.workerThreads
    let workers = DispatchSemaphore(value: workerCount)
    let rebuilder = self.rebuilder
    let trees = try contents(of: commit).tensorTrees
    let states = try tensors.map { name in try trees[name].map { try storedState($0, tensor: name) } }
    let sizes = states.map { $0?.state.byteCount ?? 0 }
    let largest = sizes.max() ?? 0
    // Streaming pays where a tensor spans several chunks (a few chunk buffers instead of whole
    // tensors in flight). A model whose tensors all fit in one chunk gains nothing from it, and
    // its budget (twice a one-chunk tensor) has no room for the workers' chunk buffers beside the
    // decode workspaces: on 8 tensors of 16 MiB, streaming them peaked at 108 MiB against 92 MiB.
    let spansChunks = states.contains { ($0?.state.chunkCount ?? 0) > 1 }
    let streamed = states.map { stored in
      streaming && spansChunks && stored?.state.kind == .full && (stored?.state.byteCount ?? 0) > 0
    }
    // The decode workspaces (a chunk-sized scratch and compressed chunk each) the workers keep.
    let chunk = min(largest, TensorBlobs.chunkByteCount)
    let budget = max(2 * largest - decodeWorkspaces.limit * 2 * chunk, largest)
    // Chunk buffers of streamed tensors, reused: at most one per job in flight.
    let streamedChunk = zip(states, streamed).filter(\.1).compactMap(\.0).map { stored in
      min(stored.state.byteCount, stored.state.chunkByteCount ?? TensorBlobs.chunkByteCount)
    }.max()
    if let streamedChunk { try Self.checkAllocation(streamedChunk, tensor: "a chunk") }
    let buffers = BufferPool(byteCount: max(1, streamedChunk ?? 0))
    defer { buffers.release() }

    /// The rebuilder of a job holding `held` bytes: one that holds more than half the budget
    /// runs nearly alone (no other job that large fits beside it), so its tensor's decode and
    /// replay get every worker instead of one (bench256's 16 MiB tensors, one at a time, ran on
    /// one core).
    func jobRebuilder(holding held: Int) -> TensorRebuilder {
      var alone = rebuilder
      if 2 * held > budget { alone.decodeWorkers = workerCount }
      return alone
    }

    var pending: [(job: RebuildJob, piece: StreamedPiece?)] = []
    var heldBytes = 0
    func writeOldest() throws {
      let (oldest, piece) = pending.removeFirst()
      oldest.done.wait()
      heldBytes -= oldest.byteCount
      if let piece {
        defer { buffers.give(piece.buffer) }
        _ = try oldest.take().get()
        let bytes = UnsafeRawBufferPointer(rebasing: piece.buffer[0..<piece.count])
        try piece.tensor.hasher.update(bytes)
        if piece.isLast {
          let actual = piece.tensor.hasher.finalize().description
          guard actual == piece.tensor.expected else {
            throw RepositoryError.hashMismatch(
              tensor: oldest.name, revision: commit.shortHex, expected: piece.tensor.expected, actual: actual)
          }
        }
        try write(oldest.name, piece.offset, bytes, piece.isLast)
        return
      }
      let fresh: [UInt8]
      do {
        // nil: a damaged snapshot was dropped; rebuild from the object database alone.
        fresh =
          try oldest.take().get()
          ?? materialize(oldest.name, at: commit, current: try current(oldest.name), useSnapshots: false)
      } catch RepositoryError.hashMismatch where (try? current(oldest.name)) != nil {
        // The caller's bytes were not the state their hash (say, from a hand-edited stat cache)
        // claimed: rebuild from the object database alone, which is verified again.
        fresh = try materialize(oldest.name, at: commit, useSnapshots: false)
      }
      try fresh.withUnsafeBytes { try write(oldest.name, 0, $0, true) }
    }
    /// Makes room for a job holding `held` bytes: writes finished jobs, then waits for the
    /// oldest while there is no room or as many jobs as workers and one more are in flight.
    func makeRoom(for held: Int) throws {
      while let first = pending.first, first.job.isFinished { try writeOldest() }
      while !pending.isEmpty && (pending.count > workerCount || heldBytes + held > budget) { try writeOldest() }
    }
    func start(_ job: RebuildJob, piece: StreamedPiece?, _ work: @escaping @Sendable () throws -> [UInt8]?) {
      heldBytes += job.byteCount
      pending.append((job, piece))
      workers.wait()
      DispatchQueue.global().async {
        job.store(Result { try work() })
        workers.signal()
        job.done.signal()
      }
    }
    defer {
      // On an error, let running workers finish before their inputs and buffers go away.
      for (job, piece) in pending {
        job.done.wait()
        if let piece { buffers.give(piece.buffer) }
      }
    }
    for (index, name) in tensors.enumerated() {
      if streamed[index], let stored = states[index] {
        let state = stored.state
        let ranges = FullTensorCodec.chunkRanges(
          byteCount: state.byteCount, dtype: state.dtype,
          chunkByteCount: state.chunkByteCount ?? TensorBlobs.chunkByteCount)
        guard ranges.count == state.chunkCount else {
          throw RepositoryError.corruptObject(
            what: "tensor '\(name)'", reason: "\(state.chunkCount ?? 0) chunks, expected \(ranges.count)")
        }
        let tensor = StreamedTensor(expected: state.hash, hasher: try ContentHasher())
        for (i, range) in ranges.enumerated() {
          // Room first: a packed chunk is read into memory as its source is looked up.
          try makeRoom(for: range.count)
          let source = try storedChunk(stored, index: i, tensor: name)
          var held = range.count
          if case .packed(let blob) = source { held += blob.content.count }
          try makeRoom(for: held)
          let buffer = buffers.take()
          nonisolated(unsafe) let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<range.count])
          let piece = StreamedPiece(
            tensor: tensor, buffer: buffer, offset: range.lowerBound, count: range.count, isLast: i == ranges.count - 1)
          let rebuilder = jobRebuilder(holding: held)
          start(RebuildJob(name: name, byteCount: held), piece: piece) {
            try rebuilder.timed("chunk \(i) of '\(name)'") {
              try MaterializationPlan.decodingStoredData(tensor: name, revision: commit) {
                try rebuilder.decode([source], of: state, tensor: name, into: destination)
              }
            }
            return nil
          }
        }
        continue
      }
      // Room first: planning may already read a packed object into memory.
      try makeRoom(for: sizes[index])
      let plan = try planMaterialization(name, at: commit, current: try current(name))
      let held = plan.target.byteCount + plan.prereadByteCount
      try makeRoom(for: held)
      let rebuilder = jobRebuilder(holding: held)
      start(RebuildJob(name: name, byteCount: held), piece: nil) { try rebuilder.run(plan) }
    }
    while !pending.isEmpty { try writeOldest() }
  }
}

/// One tensor or chunk on its way: a worker stores the result once and signals `done`; the
/// writing thread takes it after waiting on `done`.
private final class RebuildJob: Sendable {
  let name: String
  /// The bytes this job holds until it is written.
  let byteCount: Int
  let done = DispatchSemaphore(value: 0)
  private let result = Mutex<Result<[UInt8]?, any Error>?>(nil)

  init(name: String, byteCount: Int) {
    self.name = name
    self.byteCount = byteCount
  }

  func store(_ outcome: Result<[UInt8]?, any Error>) { result.withLock { $0 = outcome } }

  /// Whether the worker stored its result (`done` is about to be signalled).
  var isFinished: Bool { result.withLock { $0 != nil } }

  /// The worker's result, no longer held here (the tensor's memory goes with the caller's copy).
  func take() -> Result<[UInt8]?, any Error> {
    result.withLock { held in
      defer { held = nil }
      return held ?? .success(nil)
    }
  }
}

/// A streamed tensor's running hash and the hash its state declares (writing thread only).
private struct StreamedTensor {
  let expected: String
  let hasher: ContentHasher
}

/// A chunk of a streamed tensor: the pool buffer it is decoded into and where it goes.
private struct StreamedPiece {
  let tensor: StreamedTensor
  let buffer: UnsafeMutableRawBufferPointer
  let offset: Int
  let count: Int
  let isLast: Bool
}
