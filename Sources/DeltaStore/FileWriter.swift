import Foundation

/// A point just before an I/O operation that changes the disk; passed to an `IOHook`.
public enum IOEvent: Sendable, Equatable {
  /// About to `pwrite` to `path`.
  case willWrite(path: String)
  /// About to `fsync` `path` (a file or a directory).
  case willFsync(path: String)
  /// About to `rename` `from` over `to`.
  case willRename(from: String, to: String)
}

/// Called before each write, fsync and rename; throwing aborts the operation with that error.
///
/// The CLI uses it for fault injection and pauses; the library never reads the environment.
public typealias IOHook = (IOEvent) throws -> Void

/// Writes `bytes` at `offset` of `fd`, looping over partial writes and `EINTR`.
private func pwriteAll(
  _ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int, path: String
) throws {
  guard let base = bytes.baseAddress else { return }
  var done = 0
  while done < bytes.count {
    let n = pwrite(fd, base + done, bytes.count - done, off_t(offset + done))
    if n < 0 {
      if errno == EINTR { continue }
      throw DeltaStoreError.system("pwrite", path: path, errno: errno)
    }
    // A zero-byte write of a non-empty buffer would loop forever; the kernel reports
    // ENOSPC for a full disk, so this only guards against a broken file system.
    guard n > 0 else { throw DeltaStoreError.system("pwrite", path: path, errno: EIO) }
    done += n
  }
}

/// Calls `fsync`, retrying on `EINTR`.
private func fsyncChecked(_ fd: Int32, path: String) throws {
  while fsync(fd) != 0 {
    if errno == EINTR { continue }
    throw DeltaStoreError.system("fsync", path: path, errno: errno)
  }
}

/// Creates a file crash-safely: everything goes to a temporary file in the same directory,
/// which `commit()` syncs and renames over the target, then syncs the directory.
///
/// Writes use `pwrite`, never a writable mapping (a full disk under a mapping is `SIGBUS`).
/// Until `commit()` succeeds the target is untouched; `abandon()` (or `deinit`) removes the
/// temporary file, so a failure leaves nothing behind.
public final class AtomicFileWriter {
  /// The file that `commit()` replaces or creates.
  package let path: String
  /// The temporary file, `.<name>.mvc-tmp-<pid>-<random>` beside the target.
  package let temporaryPath: String
  private let directory: String
  private let hook: IOHook?
  private var fd: Int32
  private var state = State.open
  /// Write-behind state; nil when off (or found unsupported here).
  private var behind: WriteBehind?
  /// What `fstat` said of the file written, taken after the rename (which may change its ctime)
  /// through the descriptor the bytes went through: a caller compares it with the path's `stat`
  /// to know the file now at `path` is this one. Nil until `commit()` has renamed it.
  package private(set) var committedStatus: stat?

  private enum State { case open, committed, abandoned }

  /// Whether `commit()` renamed the file over `path` (true even when the directory sync after the
  /// rename failed).
  package var isRenamed: Bool { state == .committed }

  /// Creates the temporary file for `path`.
  ///
  /// - Parameters:
  ///   - path: The target file.
  ///   - byteCount: The final size if known; the file is then allocated with `posix_fallocate`
  ///     so a full disk is reported before any data is written (file systems that do not support
  ///     it are skipped silently).
  ///   - permissions: The mode for a new file; an existing target's mode is kept instead.
  ///   - hook: Called before each write, fsync and rename.
  ///   - writeBehind: When set, the bytes written are sent to the disk as they come and, once
  ///     more than this many bytes are waiting, the oldest are waited for and dropped from the
  ///     page cache (`WriteBehind`): for large files that nothing reads back soon.
  /// - Throws: `DeltaStoreError.io`, `.noSpace` or `.fileSizeLimitExceeded`; nothing is left behind.
  public init(
    path: String, byteCount: Int? = nil, permissions: Int = 0o644, hook: IOHook? = nil, writeBehind: Int? = nil
  ) throws {
    self.path = path
    self.hook = hook
    behind = writeBehind.map { WriteBehind(window: max(0, $0)) }
    let url = URL(fileURLWithPath: path)
    directory = url.deletingLastPathComponent().path
    let name = url.lastPathComponent
    let random = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    temporaryPath = (directory as NSString).appendingPathComponent(
      ".\(name).mvc-tmp-\(getpid())-\(random)")
    var mode = mode_t(permissions & 0o7777)
    var existing = stat()
    if stat(path, &existing) == 0 { mode = existing.st_mode & 0o7777 }
    fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
    guard fd >= 0 else { throw DeltaStoreError.system("open", path: temporaryPath, errno: errno) }
    if let byteCount, byteCount > 0 {
      let code = posix_fallocate(fd, 0, off_t(byteCount))
      if code != 0 && code != EOPNOTSUPP && code != EINVAL && code != ENOSYS {
        close(fd)
        unlink(temporaryPath)
        state = .abandoned
        throw DeltaStoreError.system("posix_fallocate", path: temporaryPath, errno: code)
      }
    }
  }

  deinit { abandon() }

  /// Writes all of `bytes` at `offset` of the temporary file.
  ///
  /// - Throws: The hook's error, or `DeltaStoreError` (`.noSpace`, `.fileSizeLimitExceeded`, `.io`).
  public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
    precondition(state == .open, "write after commit or abandon")
    try hook?(.willWrite(path: temporaryPath))
    try pwriteAll(fd, bytes, at: offset, path: temporaryPath)
    if behind != nil, !bytes.isEmpty {
      let written = offset..<(offset + bytes.count)
      if try behind?.wrote(written, fd: fd, path: temporaryPath) == false { behind = nil }
    }
  }

  /// Syncs the temporary file, renames it over `path`, and syncs the directory.
  ///
  /// On failure before the rename the temporary file is removed and the target is unchanged.
  /// - Parameter durable: false skips both syncs, for caches whose readers verify what they read
  ///   (a crash may then leave a damaged file, never a half-renamed one).
  /// - Throws: The hook's error or `DeltaStoreError`.
  public func commit(durable: Bool = true) throws {
    precondition(state == .open, "commit after commit or abandon")
    do {
      if durable {
        try hook?(.willFsync(path: temporaryPath))
        try fsyncChecked(fd, path: temporaryPath)
      }
      try hook?(.willRename(from: temporaryPath, to: path))
      guard rename(temporaryPath, path) == 0 else {
        throw DeltaStoreError.system("rename", path: path, errno: errno)
      }
    } catch {
      abandon()
      throw error
    }
    state = .committed
    var info = stat()
    if fstat(fd, &info) == 0 { committedStatus = info }
    close(fd)
    fd = -1
    guard durable else { return }
    // The rename is only durable once the directory entry is on disk.
    try hook?(.willFsync(path: directory))
    let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard dirfd >= 0 else { throw DeltaStoreError.system("open", path: directory, errno: errno) }
    defer { close(dirfd) }
    try fsyncChecked(dirfd, path: directory)
  }

  /// Closes and removes the temporary file; does nothing after `commit()` or a first `abandon()`.
  package func abandon() {
    guard state == .open else { return }
    state = .abandoned
    close(fd)
    fd = -1
    unlink(temporaryPath)
  }
}

/// Write-behind for a large file written once (a checkout's model files): each write's pages are
/// sent to the disk at once (`sync_file_range`, not waiting), and once more than `window` bytes
/// are in flight, the oldest ranges are waited for and dropped from the page cache
/// (`posix_fadvise(DONTNEED)`, which never drops a dirty page). The page cache then reuses a
/// window's worth of pages instead of taking fresh ones for every byte of the file: on a virtual
/// machine that hands freed memory back to its host, a fresh page costs a fault in the host, and
/// plain buffered writes of a 3 GB model cost 4–7 CPU-seconds of kernel time against 0.6 this way.
/// The file is then not in the page cache after it is written (as with `O_DIRECT`).
private struct WriteBehind {
  let window: Int
  /// Ranges written and sent to the disk, not yet dropped; oldest first.
  private var ranges: [Range<Int>] = []
  private var held = 0

  init(window: Int) { self.window = window }

  #if os(Linux)
    /// `sync_file_range(2)`, which Swift's Glibc module leaves out (glibc declares it only under
    /// `_GNU_SOURCE`): looked up once by name, nil if this libc lacks it.
    private static let syncFileRange: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32)? = {
      guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
      return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
    }()
    /// `SYNC_FILE_RANGE_WRITE` (Linux's values, part of its system-call interface).
    private static let startWriting: UInt32 = 2
    /// `SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER`.
    private static let waitForWriting: UInt32 = 1 | 2 | 4
  #endif

  /// Ranges grow by adjacent writes up to this size (copies come a MiB at a time).
  private static let mergedByteCount = 16 << 20

  /// Records `range` as written. Returns false when the file system does not support it (the
  /// caller then writes plainly).
  /// - Throws: `DeltaStoreError.io` when writing back a range failed (an I/O error).
  mutating func wrote(_ range: Range<Int>, fd: Int32, path: String) throws -> Bool {
    #if os(Linux)
      guard let syncFileRange = Self.syncFileRange,
        syncFileRange(fd, Int64(range.lowerBound), Int64(range.count), Self.startWriting) == 0
      else { return false }
      if let last = ranges.last, last.upperBound == range.lowerBound, last.count < Self.mergedByteCount {
        ranges[ranges.count - 1] = last.lowerBound..<range.upperBound
      } else {
        ranges.append(range)
      }
      held += range.count
      while held > window, !ranges.isEmpty {
        let oldest = ranges.removeFirst()
        held -= oldest.count
        while syncFileRange(fd, Int64(oldest.lowerBound), Int64(oldest.count), Self.waitForWriting) != 0 {
          if errno == EINTR { continue }
          throw DeltaStoreError.system("sync_file_range", path: path, errno: errno)
        }
        _ = posix_fadvise(fd, off_t(oldest.lowerBound), off_t(oldest.count), POSIX_FADV_DONTNEED)
      }
      return true
    #else
      return false
    #endif
  }
}

extension AtomicFileWriter {
  /// Replaces the whole of `path` with `bytes`: a temporary file beside it, then `commit`
  /// (fsync, rename, fsync of the directory); on failure before the rename nothing is left.
  ///
  /// - Parameters:
  ///   - durable: as in `commit(durable:)`.
  ///   - renamed: called once the file is in place, also when the directory sync after the
  ///     rename fails (the caller then knows the old file is gone).
  /// - Returns: what `fstat` said of the file written (`committedStatus`).
  /// - Throws: The hook's error or `DeltaStoreError`.
  @discardableResult
  package static func replace(
    _ path: String, with bytes: UnsafeRawBufferPointer, hook: IOHook?, durable: Bool = true,
    renamed: () -> Void = {}
  ) throws -> stat? {
    let writer = try AtomicFileWriter(path: path, byteCount: bytes.count, hook: hook)
    do {
      try writer.write(bytes, at: 0)
      try writer.commit(durable: durable)
    } catch {
      if writer.isRenamed { renamed() }
      writer.abandon()
      throw error
    }
    renamed()
    return writer.committedStatus
  }
}

/// Rewrites ranges of an existing file in place with `pwrite`, then `fsync`.
///
/// Not crash-safe by itself: the caller uses it only where a journal or a re-checkout can repair
/// a torn write. Wraps `open(O_WRONLY)` / `close`.
package final class InPlaceFileWriter {
  /// The file being rewritten.
  package let path: String
  /// Called with what `fstat` says of the file right before each `pwrite` and each `fsync`, after
  /// the hook; throwing stops the operation. A caller that knows what the file's size and times
  /// must be (those after its own last write) notices another program writing the same file as
  /// late, and so as surely, as it can.
  package var check: ((stat) throws -> Void)?
  private let hook: IOHook?
  private let fd: Int32

  /// Opens the existing regular file at `path` for writing (never creating or truncating it).
  ///
  /// `O_NONBLOCK` keeps a FIFO put at the path from blocking the open; it is then refused.
  /// - Throws: `DeltaStoreError.notRegularFile`, or `.io` naming `open` or `fstat`.
  package init(path: String, hook: IOHook? = nil) throws {
    self.path = path
    self.hook = hook
    let fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else {
      let code = errno
      // A FIFO without a reader refuses a non-blocking writer with ENXIO.
      var info = stat()
      if code == ENXIO, stat(path, &info) == 0 {
        throw DeltaStoreError.notRegularFile(path: path, kind: ReadOnlyFile.kindName(info.st_mode))
      }
      throw DeltaStoreError.system("open", path: path, errno: code)
    }
    _ = try ReadOnlyFile.statRegular(fd, path: path)
    self.fd = fd
  }

  deinit { close(fd) }

  /// Writes all of `bytes` at `offset`.
  ///
  /// - Throws: The hook's error, or `DeltaStoreError` (`.noSpace`, `.fileSizeLimitExceeded`, `.io`).
  package func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
    try hook?(.willWrite(path: path))
    if let check { try check(try status()) }
    try pwriteAll(fd, bytes, at: offset, path: path)
  }

  /// What `fstat` says of the open file (the inode written to, its size and times).
  ///
  /// - Throws: `DeltaStoreError.io` naming `fstat`.
  package func status() throws -> stat {
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw DeltaStoreError.system("fstat", path: path, errno: errno) }
    return info
  }

  /// Flushes the file's data to disk (`fsync`).
  ///
  /// - Throws: The hook's error or `DeltaStoreError`.
  package func sync() throws {
    try hook?(.willFsync(path: path))
    if let check { try check(try status()) }
    try fsyncChecked(fd, path: path)
  }
}
