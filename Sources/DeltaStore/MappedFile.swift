import Foundation

/// A whole file mapped read-only into memory.
///
/// Wraps `mmap(PROT_READ, MAP_PRIVATE)` / `munmap`. The mapping stays valid when another process
/// renames a new file over the path (safetensors issue #762); it is never written through, so a
/// full disk cannot raise `SIGBUS` here. An empty file is represented without a mapping.
public final class MappedFile {
  /// The path the file was opened at.
  public let path: String
  /// The file's size in bytes when it was mapped.
  public let byteCount: Int
  /// The inode mapped: a path whose inode differs now names another file.
  public let inode: UInt64
  private let base: UnsafeMutableRawPointer?

  /// Maps the file at `path`.
  ///
  /// - Throws: `DeltaStoreError.io` (or `.noSpace`) naming `open`, `fstat` or `mmap`.
  public init(path: String) throws {
    self.path = path
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw DeltaStoreError.system("open", path: path, errno: errno) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      throw DeltaStoreError.system("fstat", path: path, errno: errno)
    }
    let size = Int(info.st_size)
    byteCount = size
    inode = UInt64(info.st_ino)
    if size == 0 {
      base = nil
      return
    }
    let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
    guard let pointer, pointer != MAP_FAILED else {
      throw DeltaStoreError.system("mmap", path: path, errno: errno)
    }
    base = pointer
  }

  deinit {
    if let base { munmap(base, byteCount) }
  }

  /// The mapped bytes; valid as long as this object is alive.
  public var bytes: UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: base, count: byteCount)
  }

  /// Drops the pages covering `range` from this process's resident set (`madvise(MADV_DONTNEED)`).
  ///
  /// The range is widened to whole pages; since the mapping is private and never written,
  /// dropped pages are read again from the file if touched, so widening is harmless.
  public func releasePages(_ range: Range<Int>) {
    guard let base, !range.isEmpty else { return }
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    let lower = max(0, range.lowerBound) / pageSize * pageSize
    let upper = min(byteCount, range.upperBound)
    guard upper > lower else { return }
    // Advice only: a failure leaves the pages resident and changes nothing else.
    _ = madvise(base + lower, upper - lower, MADV_DONTNEED)
  }
}
