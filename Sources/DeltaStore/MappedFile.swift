import Foundation

/// A whole file mapped read-only into memory.
///
/// Wraps `mmap(PROT_READ, MAP_PRIVATE)` / `munmap`. The mapping stays valid when another process
/// renames a new file over the path (safetensors issue #762); it is never written through, so a
/// full disk cannot raise `SIGBUS` here. An empty file is represented without a mapping.
///
/// Only for files no other program rewrites in place (loose objects under `.mvc/objects`, which
/// git never changes once written): a file truncated under a mapping raises `SIGBUS` when the
/// lost pages are touched. Files users edit (the working model, the reference base) are read
/// with `ReadOnlyFile` instead.
///
/// `@unchecked Sendable` because of the raw pointer alone: every stored property is a `let`, the
/// mapping is read-only (`PROT_READ`) and never remapped, and it is unmapped only in `deinit`,
/// when no thread can hold the object any more. `releasePages` only advises the kernel.
package final class MappedFile: @unchecked Sendable {
  /// The path the file was opened at.
  package let path: String
  /// The file's size in bytes when it was mapped.
  package let byteCount: Int
  /// The inode mapped: a path whose inode differs now names another file.
  package let inode: UInt64
  private let base: UnsafeMutableRawPointer?

  /// Maps the regular file at `path` (opened as `ReadOnlyFile` opens it: never a FIFO, a device
  /// or a symbolic link; the descriptor is closed once mapped).
  ///
  /// - Throws: `DeltaStoreError.notRegularFile`, or `.io` (or `.noSpace`) naming `open`, `fstat`
  ///   or `mmap`.
  package init(path: String) throws {
    self.path = path
    let file = try ReadOnlyFile(path: path)
    let size = file.byteCount
    byteCount = size
    inode = file.inode
    if size == 0 {
      base = nil
      return
    }
    let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, file.descriptor, 0)
    guard let pointer, pointer != MAP_FAILED else {
      throw DeltaStoreError.system("mmap", path: path, errno: errno)
    }
    base = pointer
  }

  deinit {
    if let base { munmap(base, byteCount) }
  }

  /// The mapped bytes; valid as long as this object is alive.
  package var bytes: UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: base, count: byteCount)
  }

  /// Drops the pages covering `range` from this process's resident set (`madvise(MADV_DONTNEED)`).
  ///
  /// The range is widened to whole pages; since the mapping is private and never written,
  /// dropped pages are read again from the file if touched, so widening is harmless.
  package func releasePages(_ range: Range<Int>) {
    guard let base, !range.isEmpty else { return }
    let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    let lower = max(0, range.lowerBound) / pageSize * pageSize
    let upper = min(byteCount, range.upperBound)
    guard upper > lower else { return }
    // Advice only: a failure leaves the pages resident and changes nothing else.
    _ = madvise(base + lower, upper - lower, MADV_DONTNEED)
  }
}
