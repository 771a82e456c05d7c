import DeltaStore
import Foundation
import Synchronization

extension EditRepository {
  /// Stores every tensor of `working` complete (the root commit), compressing on
  /// `environment.workerThreads` threads.
  ///
  /// This thread reads each tensor a chunk (`TensorBlobs.chunkByteCount`) at a time, in order,
  /// and hashes it as it goes (the content hash is one stream); workers shuffle and compress the
  /// chunks and, when no I/O hook is set (hooks are called on this thread only), write them as
  /// loose objects themselves. Metadata and trees are written here (libgit2 stays on this
  /// thread). At most `workers + 1` chunks are in flight, each holding its raw bytes, the
  /// shuffle scratch and the compressed frame: memory stays a few chunks whatever the model.
  /// Each chunk is encoded on its own exactly as `writeFullState` encodes it, so the objects are
  /// the same for any number of workers.
  /// - Returns: each tensor's state tree, hash and stored byte count, by name.
  func storeCompleteStates(
    of working: WorkingModel, progress: (Int, Int, Int) -> Void
  ) throws -> [String: (tree: ObjectID, hash: String, storedByteCount: Int)] {
    let names = working.tensorNames
    let workers = max(1, environment.workerThreads)
    // One zstd thread per chunk when compression is multi-threaded at all: zstd's output is the
    // same for any worker count ≥ 1, so the objects match `writeFullState`'s.
    let zstdWorkers: Int32 = environment.compressionWorkers > 0 ? 1 : 0
    let objects = (gitDirectory as NSString).appendingPathComponent("objects")
    let workersWrite = environment.ioHook == nil
    let slots = DispatchSemaphore(value: workers)
    // Chunk buffers are reused: a fresh 64 MiB allocation costs its page faults every time.
    let largest = names.compactMap { working.location(of: $0)?.info.byteCount }.max() ?? 0
    let buffers = BufferPool(byteCount: max(1, min(largest, TensorBlobs.chunkByteCount)))
    defer { buffers.release() }
    // So are the encoders' scratch, trial and output buffers, and their zstd contexts.
    let encoders = EncoderPool(zstdWorkers: zstdWorkers)

    struct Tensor {
      var name: String
      var info: TensorInfo
      var shard: Int
      var chunkCount: Int
      var ids: [ObjectID?]
      var stored = 0
      var hash: String?
    }
    var tensors: [Tensor] = []
    var pending: [(tensor: Int, chunk: Int, job: ChunkJob)] = []
    var out: [String: (tree: ObjectID, hash: String, storedByteCount: Int)] = [:]

    func finishIfComplete(_ t: Int) throws {
      let tensor = tensors[t]
      guard let hash = tensor.hash, tensor.ids.allSatisfy({ $0 != nil }) else { return }
      let written = try writeFullStateTree(
        name: tensor.name, dtype: tensor.info.dtype, shape: tensor.info.shape, shard: tensor.shard, hash: hash,
        chunks: tensor.ids.compactMap { $0 }, storedByteCount: tensor.stored)
      out[tensor.name] = (written.tree, hash, written.storedByteCount)
      progress(out.count, names.count, tensor.info.byteCount)
    }
    func finishOldest() throws {
      let (t, chunk, job) = pending.removeFirst()
      let (id, bytes, stored) = try job.wait()
      let written = try id ?? bytes.map { try writeBlob($0) }
      tensors[t].ids[chunk] = written
      tensors[t].stored += stored
      try finishIfComplete(t)
    }
    defer {
      // On an error, let running workers finish before their buffers go away.
      for item in pending { _ = try? item.job.wait() }
    }

    for name in names {
      guard let (shard, info) = working.location(of: name) else { continue }
      let file = working.shards[shard]
      let ranges = FullTensorCodec.chunkRanges(
        byteCount: info.byteCount, dtype: info.dtype, chunkByteCount: TensorBlobs.chunkByteCount)
      let t = tensors.count
      tensors.append(
        Tensor(
          name: name, info: info, shard: shard, chunkCount: ranges.count,
          ids: [ObjectID?](repeating: nil, count: ranges.count)))
      let hasher = try ContentHasher()
      for (chunk, range) in ranges.enumerated() {
        while pending.count > workers { try finishOldest() }
        let buffer = buffers.take()
        let raw = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<range.count])
        do {
          try file.file.read(into: raw, at: file.fileOffset(of: info) + range.lowerBound)
          try hasher.update(UnsafeRawBufferPointer(raw))
        } catch {
          buffers.give(buffer)
          throw error
        }
        let job = ChunkJob()
        pending.append((t, chunk, job))
        nonisolated(unsafe) let input = raw
        nonisolated(unsafe) let whole = buffer
        let dtype = info.dtype
        slots.wait()
        DispatchQueue.global().async {
          job.finish(
            Result {
              defer { buffers.give(whole) }
              let encoder = try encoders.take()
              defer { encoders.give(encoder) }
              return try encoder.encode(UnsafeRawBufferPointer(input), dtype: dtype) { frame in
                if workersWrite && frame.count >= GitRepository.storedBlobThreshold {
                  let id = try StoredBlobWriter.write(frame, objectsDirectory: objects, hook: nil)
                  return (id, nil, frame.count)
                }
                return (nil, Array(frame), frame.count)
              }
            })
          slots.signal()
        }
      }
      tensors[t].hash = hasher.finalize().description
      try finishIfComplete(t)
    }
    while !pending.isEmpty { try finishOldest() }
    return out
  }

  /// The tree of a complete state whose chunk blobs are written: `meta.json` and the chunks.
  func writeFullStateTree(
    name: String, dtype: DType, shape: [Int], shard: Int, hash: String, chunks: [ObjectID], storedByteCount: Int
  ) throws -> (tree: ObjectID, storedByteCount: Int) {
    var entries = chunks.enumerated().map {
      GitRepository.TreeEntry(name: TreeEntryName.chunk($0), id: $1, isTree: false)
    }
    let state = TensorState(
      name: name, dtype: dtype, shape: shape, shard: shard, hash: hash, kind: .full,
      chunkCount: chunks.count, chunkByteCount: TensorBlobs.chunkByteCount,
      chunkEncoding: ChunkEncoding.planes.rawValue)
    let meta = try JSONCoding.encode(state)
    entries.append(.init(name: TreeEntryName.meta, id: try writeBlob(meta), isTree: false))
    return (try writeTree(entries), storedByteCount + meta.count)
  }
}

/// One chunk on its way through a worker: the object id when the worker wrote it, or the
/// frame for the caller to write, and the frame's size.
private final class ChunkJob: Sendable {
  typealias Outcome = (id: ObjectID?, bytes: [UInt8]?, stored: Int)
  private let done = DispatchSemaphore(value: 0)
  private let result = Mutex<Result<Outcome, any Error>?>(nil)

  func finish(_ outcome: Result<Outcome, any Error>) {
    result.withLock { $0 = outcome }
    done.signal()
  }

  /// Waits for the worker (once; later calls return at once with the same result).
  func wait() throws -> Outcome {
    if result.withLock({ $0 == nil }) { done.wait() }
    guard let outcome = result.withLock({ $0 }) else { preconditionFailure("a chunk job finished without a result") }
    return try outcome.get()
  }
}

/// Chunk encoders (with their buffers) handed to the workers: at most as many exist as workers
/// run at once.
private final class EncoderPool: @unchecked Sendable {
  private let zstdWorkers: Int32
  private let free = Mutex<[PlaneChunkEncoder]>([])

  init(zstdWorkers: Int32) { self.zstdWorkers = zstdWorkers }

  func take() throws -> PlaneChunkEncoder {
    if let encoder = free.withLock({ $0.popLast() }) { return encoder }
    return PlaneChunkEncoder(compressor: try ZstdCompressor(level: 1, workerCount: zstdWorkers))
  }

  func give(_ encoder: PlaneChunkEncoder) { free.withLock { $0.append(encoder) } }
}

/// Chunk-sized buffers handed between the reading thread and the workers; at most as many exist
/// as are in flight at once. Kept as addresses (pointers are not `Sendable`). Also used by a
/// checkout that streams complete states (`materializeInOrder`).
final class BufferPool: Sendable {
  private let byteCount: Int
  private let free = Mutex<[UInt]>([])

  init(byteCount: Int) { self.byteCount = byteCount }

  func take() -> UnsafeMutableRawBufferPointer {
    if let address = free.withLock({ $0.popLast() }) {
      return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: byteCount)
    }
    return .allocate(byteCount: byteCount, alignment: 64)
  }

  func give(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress else { return }
    let address = UInt(bitPattern: base)
    free.withLock { $0.append(address) }
  }

  /// Frees every buffer given back (call once no worker holds one).
  func release() {
    let addresses = free.withLock { buffers in
      defer { buffers = [] }
      return buffers
    }
    for address in addresses { UnsafeMutableRawPointer(bitPattern: address)?.deallocate() }
  }
}
