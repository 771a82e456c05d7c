import Foundation
import Synchronization

/// A regular file read with `pread` into the caller's buffers, never mapped.
///
/// Wraps `open(O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)` / `close`. Opening refuses
/// anything but a regular file (a FIFO would block `open` or `read` forever, a device reads
/// without end), so `O_NONBLOCK` is set for the `open` and cleared once `fstat` says the file is
/// regular. Bytes are copied out with `pread` rather than read through a shared mapping: an
/// editor that truncates the file while a mapping is read raises `SIGBUS`, which no Swift code
/// can recover from. Instead every read checks that it got every byte and that the file's
/// identity (inode, size, modification and change times) is still the one seen at `open`, and
/// throws `DeltaStoreError.fileChanged` otherwise.
public final class ReadOnlyFile: Sendable {
  /// The path the file was opened at; errors name it.
  package let path: String
  /// The file's size in bytes when it was opened.
  public let byteCount: Int
  /// The inode opened: a path whose inode differs now names another file.
  package let inode: UInt64
  /// The open descriptor (reads go through `read(into:at:)`, which checks the identity).
  let descriptor: Int32
  /// The identity reads must still find: the one seen at `open`, moved on only by this process's
  /// own writes (`absorbingChanges(of:)`).
  private let expected: Mutex<Identity>

  /// What `fstat` says of a file that must not change while it is read.
  private struct Identity: Equatable, Sendable {
    var device: UInt64
    var inode: UInt64
    var byteCount: Int64
    var modified: timespec
    var changed: timespec

    init(_ info: stat) {
      device = UInt64(info.st_dev)
      inode = UInt64(info.st_ino)
      byteCount = Int64(info.st_size)
      modified = info.st_mtim
      changed = info.st_ctim
    }

    static func == (a: Identity, b: Identity) -> Bool {
      a.device == b.device && a.inode == b.inode && a.byteCount == b.byteCount
        && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
        && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
    }
  }

  /// Opens the regular file at `path` for reading.
  ///
  /// - Parameters:
  ///   - path: The file.
  ///   - followSymlink: Whether a symbolic link as the last component is followed (the user's
  ///     own path given on the command line) or refused (a file inside a model folder, a path
  ///     recorded in a repository). Either way the file reached must be regular.
  /// - Throws: `DeltaStoreError.notRegularFile` naming the kind found (FIFO, device, socket,
  ///   directory, symbolic link), or `.io` naming `open`, `fstat` or `fcntl`.
  package init(path: String, followSymlink: Bool = false) throws {
    self.path = path
    let flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | (followSymlink ? 0 : O_NOFOLLOW)
    let fd = open(path, flags)
    guard fd >= 0 else {
      let code = errno
      // O_NOFOLLOW reports a link as ELOOP; say what it is rather than "too many levels".
      var link = stat()
      if code == ELOOP, !followSymlink, lstat(path, &link) == 0, link.st_mode & S_IFMT == S_IFLNK {
        throw DeltaStoreError.notRegularFile(path: path, kind: "symbolic link")
      }
      throw DeltaStoreError.system("open", path: path, errno: code)
    }
    let info = try Self.statRegular(fd, path: path)
    // Reads of a regular file never block, but clear the flag so nothing depends on that.
    let current = fcntl(fd, F_GETFL)
    guard current >= 0, fcntl(fd, F_SETFL, current & ~O_NONBLOCK) == 0 else {
      let code = errno
      close(fd)
      throw DeltaStoreError.system("fcntl", path: path, errno: code)
    }
    descriptor = fd
    expected = Mutex(Identity(info))
    byteCount = Int(info.st_size)
    inode = UInt64(info.st_ino)
  }

  deinit { close(descriptor) }

  /// `fstat` of `fd`, which must be a regular file; on any failure `fd` is closed.
  ///
  /// - Throws: `DeltaStoreError.notRegularFile`, or `.io` naming `fstat`.
  static func statRegular(_ fd: Int32, path: String) throws -> stat {
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      let code = errno
      close(fd)
      throw DeltaStoreError.system("fstat", path: path, errno: code)
    }
    guard info.st_mode & S_IFMT == S_IFREG else {
      close(fd)
      throw DeltaStoreError.notRegularFile(path: path, kind: kindName(info.st_mode))
    }
    return info
  }

  /// What `st_mode` says a non-regular file is, in words for an error message.
  static func kindName(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFIFO: return "FIFO"
    case S_IFCHR: return "character device"
    case S_IFBLK: return "block device"
    case S_IFSOCK: return "socket"
    case S_IFDIR: return "directory"
    case S_IFLNK: return "symbolic link"
    default: return "special file"
    }
  }

  /// Reads exactly `buffer.count` bytes starting at `offset`, then checks the file is unchanged.
  ///
  /// Safe to call from several threads at once (`pread` keeps no file position).
  /// - Throws: `DeltaStoreError.fileChanged` when the file ends early or changed since it was
  ///   opened; `.io` naming `pread` or `fstat`.
  package func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
    var done = 0
    while done < buffer.count {
      guard let base = buffer.baseAddress else { break }
      let n = pread(descriptor, base + done, buffer.count - done, off_t(offset + done))
      if n < 0 {
        if errno == EINTR { continue }
        throw DeltaStoreError.system("pread", path: path, errno: errno)
      }
      // The file is shorter than when it was opened: someone truncated it.
      guard n > 0 else { throw DeltaStoreError.fileChanged(path: path) }
      done += n
    }
    try checkUnchanged()
  }

  /// Reads `count` bytes at `offset` into a new array.
  ///
  /// - Throws: As `read(into:at:)`.
  package func read(count: Int, at offset: Int) throws -> [UInt8] {
    try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
      try read(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
      initialized = count
    }
  }

  /// Hashes `count` bytes at `offset` (XXH3-128, streamed), reading `scratch.count` bytes at a time.
  ///
  /// The result equals `ContentHash.of` over the same bytes read whole.
  /// - Throws: As `read(into:at:)`, and `DeltaStoreError.xxhash`.
  package func hash(
    count: Int, at offset: Int, hasher: ContentHasher, scratch: UnsafeMutableRawBufferPointer
  ) throws -> ContentHash {
    precondition(scratch.count > 0, "hashing needs a scratch buffer")
    try hasher.reset()
    var done = 0
    while done < count {
      let piece = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<min(scratch.count, count - done)])
      try read(into: piece, at: offset + done)
      try hasher.update(UnsafeRawBufferPointer(piece))
      done += piece.count
    }
    return hasher.finalize()
  }

  /// Throws unless the file is still the one opened, with the same size and times.
  ///
  /// - Throws: `DeltaStoreError.fileChanged`, or `.io` naming `fstat`.
  package func checkUnchanged() throws {
    try expected.withLock { try checkUnchanged(expected: $0) }
  }

  private func checkUnchanged(expected: Identity) throws {
    var info = stat()
    guard fstat(descriptor, &info) == 0 else {
      throw DeltaStoreError.system("fstat", path: path, errno: errno)
    }
    guard Identity(info) == expected else { throw DeltaStoreError.fileChanged(path: path) }
  }

  /// Runs `write`, this process's own write to this same file (a checkout rewriting tensors in
  /// place while other tensors are still read), and takes the times it leaves as the ones reads
  /// must find, so it is not reported as someone else's change.
  ///
  /// The file is checked before the write, so a change by another program is still reported;
  /// reads that finish while the write runs wait for it before they check. `write` must not
  /// touch bytes a read in flight depends on.
  /// - Throws: `DeltaStoreError.fileChanged` when the file changed before the write, what
  ///   `write` throws, or `.io` naming `fstat`.
  package func absorbingChanges<Result>(of write: () throws -> Result) throws -> Result {
    try expected.withLock { expected in
      try checkUnchanged(expected: expected)
      let result = try write()
      var info = stat()
      guard fstat(descriptor, &info) == 0 else {
        throw DeltaStoreError.system("fstat", path: path, errno: errno)
      }
      expected = Identity(info)
      return result
    }
  }

  /// The whole content of a small regular file (an index or a config), read as `ReadOnlyFile`
  /// opens it.
  ///
  /// - Throws: As `init(path:followSymlink:)` and `read(into:at:)`.
  package static func contents(of path: String, followSymlink: Bool = false) throws -> [UInt8] {
    let file = try ReadOnlyFile(path: path, followSymlink: followSymlink)
    return try file.read(count: file.byteCount, at: 0)
  }
}
