import DeltaStore
import Foundation
import Synchronization

/// The tracked model as it is on disk: one `.safetensors` file, or a folder whose
/// `model.safetensors.index.json` maps tensors to shard files.
///
/// Every file is opened as a regular file (a FIFO or a device is refused, not waited on) and read
/// with `pread` into owned buffers, never through a mapping: an editor rewriting the model while
/// mvc reads it gives `DeltaStoreError.fileChanged`, not `SIGBUS`. The model's own path, given by
/// the user, may be a symbolic link; the index and shards inside a folder may not (a link could
/// lead out of the folder, and checkout rewrites shards in place).
final class WorkingModel: Sendable {
  static let indexFileName = "model.safetensors.index.json"
  /// The weights file of a model `save_pretrained` wrote unsharded.
  static let singleFileName = "model.safetensors"

  /// Absolute path of the model file or folder.
  let path: String
  let isSharded: Bool
  /// Exact bytes of the index file (sharded models only).
  let indexBytes: [UInt8]?
  /// Shard paths relative to the folder (or the file's own name), in layout order.
  let shardFiles: [String]
  let shards: [SafetensorsFile]
  private let locations: [String: (shard: Int, info: TensorInfo)]

  init(path: String) throws {
    self.path = path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw RepositoryError.missingWorkingModel(path: path)
    }
    if isDirectory.boolValue {
      let indexPath = (path as NSString).appendingPathComponent(Self.indexFileName)
      let data: [UInt8]
      do {
        data = try ReadOnlyFile.contents(of: indexPath)
      } catch DeltaStoreError.io(_, "open", ENOENT, _) {
        if FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(Self.singleFileName)) {
          throw RepositoryError.resavedModelFolder(
            folder: path, detail: "it holds \(Self.singleFileName) and no \(Self.indexFileName) (saved as one file?)")
        }
        throw RepositoryError.layoutMismatch(
          file: path, tensor: Self.indexFileName, detail: "is missing (a model folder needs a shard index)")
      }
      let files = try Self.shardFiles(fromIndex: Data(data), path: indexPath)
      // A folder re-saved in another layout leaves an index naming files that are gone: say so,
      // rather than report one missing file.
      if let missing = files.first(where: {
        !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent($0))
      }) {
        let single = FileManager.default.fileExists(
          atPath: (path as NSString).appendingPathComponent(Self.singleFileName))
        throw RepositoryError.resavedModelFolder(
          folder: path,
          detail: "\(Self.indexFileName) names '\(missing)', which is not there"
            + (single && !files.contains(Self.singleFileName)
              ? " (the folder holds \(Self.singleFileName): saved as one file?)" : ""))
      }
      isSharded = true
      indexBytes = data
      shardFiles = files
      shards = try files.map { try SafetensorsFile(path: (path as NSString).appendingPathComponent($0)) }
    } else {
      // A folder re-saved in shards keeps the old model.safetensors beside the new index:
      // loaders would read one or the other, so mvc names the ambiguity instead of tracking it.
      let folder = (path as NSString).deletingLastPathComponent
      if (path as NSString).lastPathComponent == Self.singleFileName,
        FileManager.default.fileExists(atPath: (folder as NSString).appendingPathComponent(Self.indexFileName))
      {
        throw RepositoryError.resavedModelFolder(
          folder: folder,
          detail: "\(Self.indexFileName) is beside the tracked \(Self.singleFileName) (saved again in shards?)")
      }
      isSharded = false
      indexBytes = nil
      shardFiles = [(path as NSString).lastPathComponent]
      shards = [try SafetensorsFile(path: path, followSymlink: true)]
    }
    var locations: [String: (Int, TensorInfo)] = [:]
    for (index, shard) in shards.enumerated() {
      for info in shard.tensors {
        if locations[info.name] != nil {
          throw RepositoryError.layoutMismatch(
            file: shard.path, tensor: info.name, detail: "appears in more than one shard")
        }
        locations[info.name] = (index, info)
      }
    }
    self.locations = locations
  }

  /// The shard files named by an index's `weight_map`, sorted, each a plain relative path.
  static func shardFiles(fromIndex data: Data, path: String) throws -> [String] {
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
      let weightMap = object["weight_map"] as? [String: String]
    else {
      throw RepositoryError.layoutMismatch(file: path, tensor: "weight_map", detail: "is missing or not an object")
    }
    let files = Set(weightMap.values).sorted()
    for file in files {
      if let problem = SafePathComponent.problem(file) {
        throw RepositoryError.layoutMismatch(
          file: path, tensor: file, detail: "names a shard outside the folder: the name \(problem)")
      }
    }
    return files
  }

  /// Tensor names in layout order (shard by shard, header order within each).
  var tensorNames: [String] { shards.flatMap { $0.tensors.map(\.name) } }

  func location(of name: String) -> (shard: Int, info: TensorInfo)? { locations[name] }

  /// The bytes of tensor `name` read into a new buffer, or nil when the model has no such tensor.
  ///
  /// Safe to call from several threads at once.
  /// - Throws: `DeltaStoreError.fileChanged` when the file changed since the model was opened.
  func read(_ name: String) throws -> [UInt8]? {
    guard let (shard, info) = locations[name] else { return nil }
    return try shards[shard].read(info)
  }

  /// The hash (`xxh3-128:…`) of tensor `name`, streamed through a small buffer, or nil when the
  /// model has no such tensor.
  ///
  /// - Throws: As `read(_:)`.
  func hash(of name: String) throws -> String? {
    guard let (shard, info) = locations[name] else { return nil }
    return try shards[shard].hash(of: info).description
  }

  /// What the materializer needs of tensor `name` as the working model holds it: its hash (the
  /// one given, else computed now) and a read of its bytes, made on the thread that needs them.
  func currentBytes(of name: String, hash known: String?) throws -> CurrentBytes? {
    guard let (shard, info) = locations[name] else { return nil }
    let file = shards[shard]
    return CurrentBytes(hash: try known ?? file.hash(of: info).description) { try file.read(info) }
  }

  /// Absolute path of shard `index`.
  func shardPath(_ index: Int) -> String {
    isSharded ? (path as NSString).appendingPathComponent(shardFiles[index]) : path
  }

  /// The layout record and the header blobs (`header-NNNN`) it names.
  func layout() -> (ModelLayout, headers: [String: [UInt8]]) {
    var headers: [String: [UInt8]] = [:]
    var layoutShards: [ModelLayout.Shard] = []
    for (index, shard) in shards.enumerated() {
      let blob = String(format: "header-%04d", index)
      headers[blob] = shard.headerBytes
      layoutShards.append(.init(file: shardFiles[index], tensors: shard.tensors.map(\.name), headerBlob: blob))
    }
    return (
      ModelLayout(
        kind: isSharded ? "sharded" : "file", shards: layoutShards,
        indexFile: isSharded ? Self.indexFileName : nil),
      headers
    )
  }

  /// Hashes every tensor (XXH3-128 of its bytes) on `workers` threads (this one and
  /// `workers - 1` others), each streaming the file through a buffer of
  /// `SafetensorsFile.hashingChunkByteCount` bytes. `progress` is called on this thread only.
  ///
  /// - Throws: `DeltaStoreError.fileChanged` when a file changed while being read.
  func hashAll(workers: Int, progress: ((Int, Int) -> Void)? = nil) throws -> [String: String] {
    try hash(tensorNames, workers: workers, progress: progress)
  }

  /// Hashes the named tensors as `hashAll` hashes every one (names the model lacks are left out).
  func hash(_ names: [String], workers: Int, progress: ((Int, Int) -> Void)? = nil) throws -> [String: String] {
    let job = HashingJob(model: self, names: names, workers: max(1, min(workers, names.count)))
    let others = DispatchGroup()
    for worker in 1..<max(1, job.workers) {
      DispatchQueue.global().async(group: others) { job.run(worker: worker, progress: nil) }
    }
    job.run(worker: 0, progress: progress)
    others.wait()
    let (hashes, failure) = job.outcome()
    if let failure { throw failure }
    progress?(names.count, names.count)
    var out: [String: String] = [:]
    for (name, hash) in zip(names, hashes) { out[name] = hash }
    return out
  }

  /// The shared state of one `hashAll`: each worker hashes every `workers`-th tensor, interleaved
  /// so that all walk the file front to back together.
  private final class HashingJob: Sendable {
    let model: WorkingModel
    let names: [String]
    let workers: Int
    private let state: Mutex<(hashes: [String?], done: Int, failure: (any Error)?)>

    init(model: WorkingModel, names: [String], workers: Int) {
      self.model = model
      self.names = names
      self.workers = workers
      state = Mutex(([String?](repeating: nil, count: names.count), 0, nil))
    }

    func run(worker: Int, progress: ((Int, Int) -> Void)?) {
      let scratch = UnsafeMutableRawBufferPointer.allocate(
        byteCount: SafetensorsFile.hashingChunkByteCount, alignment: 64)
      defer { scratch.deallocate() }
      do {
        let hasher = try ContentHasher()
        for i in stride(from: worker, to: names.count, by: workers) {
          var hash: String?
          if let (shard, info) = model.location(of: names[i]) {
            hash = try model.shards[shard].hash(of: info, hasher: hasher, scratch: scratch).description
          }
          let (count, failed) = state.withLock { state in
            state.hashes[i] = hash
            state.done += 1
            return (state.done, state.failure != nil)
          }
          if failed { return }  // another worker failed: its error is the one reported
          if count < names.count { progress?(count, names.count) }
        }
      } catch {
        state.withLock { state in
          if state.failure == nil { state.failure = error }
        }
      }
    }

    func outcome() -> (hashes: [String?], failure: (any Error)?) {
      state.withLock { ($0.hashes, $0.failure) }
    }
  }

  /// Whether every file is still the one opened (an editor may have renamed a new file over it).
  func stillMapped(_ stats: [FileStat]) -> Bool {
    let inodes = shards.map(\.file.inode)
    let shardStats = stats.prefix(shards.count)
    return shardStats.count == inodes.count && zip(shardStats, inodes).allSatisfy { $0.inode == $1 }
  }

  /// Stat records of every file the model consists of, for the stat cache.
  func fileStats() -> [FileStat] {
    var paths = (0..<shards.count).map(shardPath)
    if isSharded { paths.append((path as NSString).appendingPathComponent(Self.indexFileName)) }
    return paths.compactMap(FileStat.init(path:))
  }
}

/// A tensor's bytes as the caller holds them now: their hash, and a read that returns them (or
/// throws when the file they come from changed since it was hashed).
struct CurrentBytes {
  var hash: String
  /// Called on whichever thread rebuilds the tensor.
  var read: @Sendable () throws -> [UInt8]

  /// Bytes already in memory.
  init(hash: String, bytes: [UInt8]) {
    self.hash = hash
    read = { bytes }
  }

  init(hash: String, read: @escaping @Sendable () throws -> [UInt8]) {
    self.hash = hash
    self.read = read
  }
}
