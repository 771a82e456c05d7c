import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// What `stat` says of one working file; equal records mean the file was not rewritten.
struct FileStat: Codable, Equatable {
  var path: String
  var byteCount: Int64
  var modifiedNanoseconds: Int64
  var changedNanoseconds: Int64
  var inode: UInt64

  init?(path: String) {
    var info = stat()
    guard stat(path, &info) == 0 else { return nil }
    self.path = path
    byteCount = Int64(info.st_size)
    modifiedNanoseconds = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
    changedNanoseconds = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
    inode = UInt64(info.st_ino)
  }

  enum CodingKeys: String, CodingKey {
    case path, inode
    case byteCount = "byte_count"
    case modifiedNanoseconds = "mtime_ns"
    case changedNanoseconds = "ctime_ns"
  }
}

/// Like git's index: the tensor hashes of the working files as they were when last hashed,
/// keyed by their stat records, so an unchanged model is not hashed again.
///
/// Racy entries (a file modified within a second of the cache being written, where a second
/// rewrite could keep the same timestamps) are not trusted, as git does.
struct StatCache: Codable {
  var files: [FileStat]
  var tensorHashes: [String: String]
  var writtenAtNanoseconds: Int64

  enum CodingKeys: String, CodingKey {
    case files
    case tensorHashes = "tensor_hashes"
    case writtenAtNanoseconds = "written_at_ns"
  }

  static func load(from path: String) -> StatCache? {
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return try? JSONDecoder().decode(StatCache.self, from: data)
  }

  /// The cached hashes when `current` matches the recorded files and none is racy.
  func hashes(matching current: [FileStat]) -> [String: String]? {
    guard current == files else { return nil }
    for file in files where file.modifiedNanoseconds >= writtenAtNanoseconds - 1_000_000_000 {
      return nil
    }
    return tensorHashes
  }

  static func nowNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
  }
}
