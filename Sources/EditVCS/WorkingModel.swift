import DeltaStore
import Foundation

/// The tracked model as it is on disk: one `.safetensors` file, or a folder whose
/// `model.safetensors.index.json` maps tensors to shard files. Files are memory-mapped, so
/// touching a few tensors reads only their pages.
final class WorkingModel {
  static let indexFileName = "model.safetensors.index.json"

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
      guard let data = FileManager.default.contents(atPath: indexPath) else {
        throw RepositoryError.layoutMismatch(
          file: path, tensor: Self.indexFileName, detail: "is missing (a model folder needs a shard index)")
      }
      let files = try Self.shardFiles(fromIndex: data, path: indexPath)
      isSharded = true
      indexBytes = Array(data)
      shardFiles = files
      shards = try files.map { try SafetensorsFile(path: (path as NSString).appendingPathComponent($0)) }
    } else {
      isSharded = false
      indexBytes = nil
      shardFiles = [(path as NSString).lastPathComponent]
      shards = [try SafetensorsFile(path: path)]
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
    for file in files where file.contains("/") || file.hasPrefix(".") || file.isEmpty {
      throw RepositoryError.layoutMismatch(file: path, tensor: file, detail: "names a shard outside the folder")
    }
    return files
  }

  /// Tensor names in layout order (shard by shard, header order within each).
  var tensorNames: [String] { shards.flatMap { $0.tensors.map(\.name) } }

  func location(of name: String) -> (shard: Int, info: TensorInfo)? { locations[name] }

  func bytes(of name: String) -> UnsafeRawBufferPointer? {
    guard let (shard, info) = locations[name] else { return nil }
    return shards[shard].bytes(of: info)
  }

  func releasePages(of name: String) {
    guard let (shard, info) = locations[name] else { return }
    shards[shard].releasePages(of: info)
  }

  /// Drops the pages of bytes `range` (relative to the tensor's first byte) of tensor `name`.
  func releasePages(of name: String, range: Range<Int>) {
    guard let (shard, info) = locations[name] else { return }
    let start = shards[shard].dataStart + info.dataOffsets.lowerBound
    shards[shard].mappedFile.releasePages((start + range.lowerBound)..<(start + min(range.upperBound, info.byteCount)))
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

  /// Hashes every tensor (XXH3-128 of its bytes) on two threads, releasing pages as it goes.
  func hashAll(progress: ((Int, Int) -> Void)? = nil) -> [String: String] {
    let names = tensorNames
    var hashes = [String?](repeating: nil, count: names.count)
    let lock = NSLock()
    var done = 0
    let workers = max(1, min(2, ProcessInfo.processInfo.activeProcessorCount))
    hashes.withUnsafeMutableBufferPointer { out in
      DispatchQueue.concurrentPerform(iterations: workers) { worker in
        // Interleaved, so both threads walk the file front to back together.
        for i in stride(from: worker, to: names.count, by: workers) {
          if let bytes = bytes(of: names[i]) {
            out[i] = ContentHash.of(bytes).description
            releasePages(of: names[i])
          }
          lock.lock()
          done += 1
          let count = done
          lock.unlock()
          // The reporter is not thread-safe: one thread reports, and the end is reported below.
          if worker == 0 && count < names.count { progress?(count, names.count) }
        }
      }
    }
    progress?(names.count, names.count)
    var out: [String: String] = [:]
    for (name, hash) in zip(names, hashes) { out[name] = hash }
    return out
  }

  /// Whether every file is still the one mapped (an editor may have renamed a new file over it).
  func stillMapped(_ stats: [FileStat]) -> Bool {
    let inodes = shards.map(\.mappedFile.inode)
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
