import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The small files `from_pretrained` reads beside the weights (`config.json`, `tokenizer*`, ...):
/// tracked as ordinary blobs in a commit's `files/` tree, so that a checkout gives a folder a
/// loader accepts and a branch can carry a config change.
///
/// They live in the model's folder: the folder itself for a sharded model, the folder holding
/// the file for a single-file model. Only names of this list are tracked; every other file there
/// is untracked. A name read from a commit passes `problem(_:)` (a plain file name of the list)
/// and its blob's size is checked against `maxByteCount` before it is read.
package enum SideFiles {
  /// Bytes of one tracked file (the largest real `tokenizer.json` files are ~35 MB).
  package static let maxByteCount = 64 << 20
  /// Side files one commit may hold.
  static let maxCount = 256

  static let names: Set<String> = [
    "config.json", "generation_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "vocab.txt", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "preprocessor_config.json",
    "processor_config.json",
  ]
  static let prefixes = ["tokenizer", "chat_template"]

  /// Whether a file of this name in the model's folder is tracked.
  static func isTracked(_ name: String) -> Bool {
    SafePathComponent.problem(name) == nil && (names.contains(name) || prefixes.contains { name.hasPrefix($0) })
  }

  /// Why `name` from a commit may not be a side file, or nil when it may.
  static func problem(_ name: String) -> String? {
    if let problem = SafePathComponent.problem(name) { return problem }
    if !isTracked(name) {
      return "'\(name.prefix(80))' is not a file mvc tracks beside the weights (config.json, tokenizer*, ...)"
    }
    return nil
  }

  /// The folder side files live in, for a model at `modelPath`.
  static func folder(modelPath: String, sharded: Bool) -> String {
    sharded ? modelPath : (modelPath as NSString).deletingLastPathComponent
  }

  /// The tracked side files present in `folder` (name → bytes); files of the model itself
  /// (`excluding`) are skipped.
  /// - Throws: `RepositoryError.sideFileTooLarge` for a tracked file over `maxByteCount` (checked
  ///   before it is read), `cannotAccess` when one cannot be read.
  static func read(in folder: String, excluding: Set<String>) throws -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    for name in listing(folder) where isTracked(name) && !excluding.contains(name) {
      let path = (folder as NSString).appendingPathComponent(name)
      var info = stat()
      guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
      guard Int(info.st_size) <= maxByteCount else {
        throw RepositoryError.sideFileTooLarge(path: path, byteCount: Int(info.st_size), limit: maxByteCount)
      }
      guard let handle = FileHandle(forReadingAtPath: path) else {
        throw RepositoryError.cannotAccess(path: path, operation: "read", reason: nil)
      }
      defer { try? handle.close() }
      // Bounded: a file that grew since `stat` is still never read past the cap.
      let data = (try? handle.read(upToCount: maxByteCount + 1)) ?? Data()
      guard data.count <= maxByteCount else {
        throw RepositoryError.sideFileTooLarge(path: path, byteCount: data.count, limit: maxByteCount)
      }
      out[name] = [UInt8](data)
    }
    return out
  }

  /// Regular files and links in `folder` that are neither tracked side files nor in `excluding`
  /// (the model's own files), sorted; hidden files are left out (`.mvc`).
  static func untracked(in folder: String, excluding: Set<String>) -> [String] {
    listing(folder).filter { name in
      guard !name.hasPrefix("."), !isTracked(name), !excluding.contains(name) else { return false }
      var info = stat()
      let path = (folder as NSString).appendingPathComponent(name)
      return lstat(path, &info) == 0 && (info.st_mode & S_IFMT) != S_IFDIR
    }
  }

  private static func listing(_ folder: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
  }
}

extension WorkingModel {
  /// The folder the model's side files live in.
  var sideFileFolder: String { SideFiles.folder(modelPath: path, sharded: isSharded) }

  /// File names of the model itself in `sideFileFolder` (shards and index).
  var ownFileNames: Set<String> {
    var names = Set(shardFiles)
    if isSharded { names.insert(Self.indexFileName) }
    return names
  }

  /// The tracked side files beside the model, name → bytes.
  func sideFiles() throws -> [String: [UInt8]] {
    try SideFiles.read(in: sideFileFolder, excluding: ownFileNames)
  }
}

extension EditRepository {
  /// The side files of `commit`, name → bytes, every rule checked before anything is returned.
  func sideFiles(at commit: ObjectID) throws -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    for (name, id) in try sideFileBlobs(of: contents(of: commit)) { out[name] = try git.readBlob(id) }
    return out
  }

  /// Writes the `files/` tree for `files`; nil when there are none (the commit stays format 1).
  func writeSideFilesTree(_ files: [String: [UInt8]]) throws -> ObjectID? {
    guard !files.isEmpty else { return nil }
    var entries: [GitRepository.TreeEntry] = []
    for (name, bytes) in files.sorted(by: { $0.key < $1.key }) {
      entries.append(.init(name: name, id: try writeBlob(bytes), isTree: false))
    }
    return try writeTree(entries)
  }

  /// Makes the side files in `folder` those of `target`: writes each that differs (temporary
  /// file and rename) and removes those `previous` tracked that `target` does not.
  /// - Parameter target: side files already read (and checked) with `sideFiles(at:)`.
  func writeSideFiles(
    _ target: [String: [UInt8]], into folder: String, removing previous: Set<String>, durable: Bool
  ) throws {
    for (name, bytes) in target.sorted(by: { $0.key < $1.key }) {
      let path = (folder as NSString).appendingPathComponent(name)
      if let existing = FileManager.default.contents(atPath: path), [UInt8](existing) == bytes { continue }
      _ = try bytes.withUnsafeBytes {
        try AtomicFileWriter.replace(path, with: $0, hook: environment.ioHook, durable: durable)
      }
    }
    for name in previous.subtracting(target.keys) where SideFiles.problem(name) == nil {
      try? FileManager.default.removeItem(atPath: (folder as NSString).appendingPathComponent(name))
    }
  }
}
