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
    self.init(info, path: path)
  }

  /// The record of `info`, what `fstat` said of a descriptor opened on `path`.
  init(_ info: stat, path: String) {
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
/// It vouches only for bytes mvc saw: hashes it computed from the files' bytes (with the files'
/// stat records taken before hashing and unchanged after), or the verified hashes of bytes it
/// wrote itself, recorded with what `fstat` said of the descriptor it wrote through — and only
/// when the path's `stat` still says the same (an editor that renamed a new file over the
/// model, or wrote into it, leaves no cache). Like git's index, the file itself is trusted:
/// `status` and `commit` believe a hand-edited cache, but no checkout writes a byte it has not
/// verified (copies are hashed as they are made, rebuilt tensors are checked against their
/// hash), and `mvc checkout --force` ignores the cache and rehashes.
///
/// Racy entries are not trusted, as in git: file times come from the kernel's coarse clock (up to
/// one tick, 1–10 ms, behind the real time), so a file changed within a tick after the cache was
/// written could keep the recorded times. A record is trusted only when its mtime and ctime are
/// at least `racyMargin` (a tick + 1 ms) older than the cache; the writer waits out the rest of
/// that margin after writing the model itself, so its own rewrites never leave racy entries.
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

  /// One tick of the kernel's coarse clock (what file times are stamped from) plus 1 ms,
  /// between 2 and 20 ms.
  static let racyMargin: Int64 = {
    var resolution = timespec()
    guard clock_getres(CLOCK_REALTIME_COARSE, &resolution) == 0 else { return 20_000_000 }
    let tick = Int64(resolution.tv_sec) * 1_000_000_000 + Int64(resolution.tv_nsec)
    return min(20_000_000, max(2_000_000, tick + 1_000_000))
  }()

  /// The cached hashes when `current` matches the recorded files and none is racy.
  func hashes(matching current: [FileStat]) -> [String: String]? {
    guard current == files else { return nil }
    for file in files
    where max(file.modifiedNanoseconds, file.changedNanoseconds) >= writtenAtNanoseconds - Self.racyMargin {
      return nil
    }
    return tensorHashes
  }

  /// The paths of the recorded files that `current` shows unchanged and that are not racy: the
  /// cached hashes of the tensors they hold still describe their bytes.
  func unchangedFiles(among current: [FileStat]) -> Set<String> {
    var recorded: [String: FileStat] = [:]
    for file in files { recorded[file.path] = file }
    return Set(
      current.filter { file in
        recorded[file.path] == file
          && max(file.modifiedNanoseconds, file.changedNanoseconds) < writtenAtNanoseconds - Self.racyMargin
      }.map(\.path))
  }

  /// The time to record for a cache of `files`: now, once `racyMargin` has passed since the
  /// newest of their times (sleeping for the rest of it, at most `racyMargin`).
  static func writeTime(after files: [FileStat]) -> Int64 {
    let newest = files.map { max($0.modifiedNanoseconds, $0.changedNanoseconds) }.max() ?? 0
    let wait = newest + racyMargin + 1 - nowNanoseconds()
    if wait > 0 && wait <= racyMargin + 1 { usleep(useconds_t(wait / 1000 + 1)) }
    return nowNanoseconds()
  }

  static func nowNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
  }
}
