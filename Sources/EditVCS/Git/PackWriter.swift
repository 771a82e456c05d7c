internal import CCrypto
internal import CGit2
internal import CZlib
import Foundation

/// Writes a git pack (version 2, no deltas) and its index (version 2) from objects read one at
/// a time out of a repository, without libgit2's packbuilder.
///
/// The packbuilder searches deltas between, and deflates again, blobs that are zstd frames
/// already (a 256 MiB repository took 75–99 s to pack). Here each object is read once
/// (`git_odb_read`, which checks its hash), framed as a pack entry and deflated either as
/// *stored* blocks (large objects that do not compress: mvc's zstd chunks) or at the default
/// level (commits, trees, JSON, side files), streamed to a temporary file while the pack's
/// SHA-1 and each entry's CRC-32 are computed; the index follows. The files are fsynced and
/// renamed into place, pack first: the index is what makes a pack visible. git and libgit2 read
/// both formats (gitformat-pack(5)); `git fsck` and `git index-pack --verify` accept them.
///
/// Streamed to a descriptor instead (``init(streamingTo:objectCount:)``, a git:// push), the
/// pack goes out as it is made, with no file and no index.
final class PackWriter {
  private let directory: String
  private let temporaryPath: String
  private var fd: Int32
  /// Writing to a descriptor the caller owns (a socket): no temporary file, no index.
  private let streaming: Bool
  private let sha: OpaquePointer
  private var buffer: [UInt8] = []
  private var offset = 0
  private var entries: [(id: ObjectID, offset: Int, crc: UInt32)] = []
  private let expectedCount: Int
  private var finished = false

  /// zlib's output for one entry at a time, allocated once (not per object: a pack of many small
  /// objects spent a third of a push zeroing a fresh MiB for each).
  private var deflateOutput: UnsafeMutableRawBufferPointer?
  /// Output is collected in pieces of this size before each `write`.
  private static let bufferCapacity = 1 << 20
  /// Objects at least this large are deflated as stored blocks unless a sample compresses well.
  static let storedThreshold = 64 << 10

  /// Starts `objectCount` entries in `directory` (an `objects/pack` folder).
  init(directory: String, objectCount: Int) throws {
    self.directory = directory
    self.expectedCount = objectCount
    streaming = false
    let random = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    temporaryPath = (directory as NSString).appendingPathComponent("tmp_pack_mvc_\(getpid())_\(random)")
    fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o444)
    guard fd >= 0 else { throw Self.posixError("open", temporaryPath) }
    guard let context = EVP_MD_CTX_new() else {
      close(fd)
      unlink(temporaryPath)
      throw RepositoryError.libgit2(function: "EVP_MD_CTX_new", subject: temporaryPath, message: "no SHA-1 context")
    }
    sha = context
    try start()
  }

  /// Streams `objectCount` entries to `descriptor` (left open: the caller owns it); `name`
  /// says where it goes, for messages.
  init(streamingTo descriptor: Int32, objectCount: Int, name: String) throws {
    directory = name
    temporaryPath = name
    expectedCount = objectCount
    streaming = true
    fd = descriptor
    guard let context = EVP_MD_CTX_new() else {
      throw RepositoryError.libgit2(function: "EVP_MD_CTX_new", subject: name, message: "no SHA-1 context")
    }
    sha = context
    try start()
  }

  private func start() throws {
    EVP_DigestInit_ex(sha, EVP_sha1(), nil)
    buffer.reserveCapacity(Self.bufferCapacity)
    var header: [UInt8] = Array("PACK".utf8)
    header += Self.bigEndian32(2)
    header += Self.bigEndian32(UInt32(expectedCount))
    try emit(header)
    entries.reserveCapacity(expectedCount)
  }

  deinit {
    deflateOutput?.deallocate()
    EVP_MD_CTX_free(sha)
    if !finished && !streaming {
      if fd >= 0 { close(fd) }
      unlink(temporaryPath)
    }
  }

  /// Removes the temporary file; nothing of this pack stays.
  func abandon() {
    guard !finished, !streaming else { return }
    finished = true
    if fd >= 0 { close(fd) }
    fd = -1
    unlink(temporaryPath)
  }

  private static func posixError(_ function: StaticString, _ path: String) -> RepositoryError {
    .libgit2(function: "\(function)", subject: path, message: String(cString: strerror(errno)))
  }

  private static func bigEndian32(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
  }

  private func flush() throws {
    var done = 0
    while done < buffer.count {
      let written = buffer.withUnsafeBytes { bytes in
        // A socket closed by the other side must be an error, not SIGPIPE.
        streaming
          ? send(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done, Int32(MSG_NOSIGNAL))
          : write(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done)
      }
      if written < 0 {
        if errno == EINTR { continue }
        throw Self.posixError("write", temporaryPath)
      }
      done += written
    }
    buffer.removeAll(keepingCapacity: true)
  }

  /// Appends pack bytes: hashed into the trailer, counted in the offset, buffered for the file.
  private func emit(_ bytes: UnsafeRawBufferPointer) throws {
    EVP_DigestUpdate(sha, bytes.baseAddress, bytes.count)
    offset += bytes.count
    if buffer.count + bytes.count > Self.bufferCapacity { try flush() }
    if bytes.count >= Self.bufferCapacity {
      buffer.append(contentsOf: bytes)
      try flush()
    } else {
      buffer.append(contentsOf: bytes)
    }
  }

  private func emit(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try emit($0) } }

  /// How an object read for the pack is checked against its id.
  enum Verification {
    /// libgit2's own check on read (SHA-1 with collision detection): objects from elsewhere.
    case libgit2
    /// SHA-1 (OpenSSL) computed here, with libgit2's check off around the copy: the
    /// repository's own objects on their way into its own pack (`mvc gc`, which then deletes
    /// the loose copies, so a damaged one must stop it first).
    case here
    /// As `.here`, except that large loose blobs are sent as they are, not hashed again: the
    /// repository's own objects on their way to another repository (a push), which keeps its
    /// copies. git's pack-objects does the same; the receiver's index-pack (git://) or the next
    /// reader of the copy (libgit2's check on read, `git fsck`, a clone's checks) hashes them.
    case own
  }

  /// Copies object `id` from `odb` into the pack. With `.here` or `.own`, a large loose blob of
  /// `repositoryPath` is streamed from its file (``LooseBlob``: no whole-object buffer).
  func append(_ id: ObjectID, from odb: OpaquePointer, repositoryPath: String, verification: Verification) throws {
    var oid = id.raw
    if verification != .libgit2 {
      var size = 0
      var type = GIT_OBJECT_ANY
      try check(git_odb_read_header(&size, &type, odb, &oid), "git_odb_read_header", id.hex)
      if type == GIT_OBJECT_BLOB, size >= Self.storedThreshold,
        let loose = try LooseBlob(id, repositoryPath: repositoryPath)
      {
        let hash = verification == .own ? nil : ObjectHasher(type: "blob", size: loose.contentByteCount)
        try append(id, type: GIT_OBJECT_BLOB, size: loose.contentByteCount) { body in
          try loose.forEachPiece { piece in
            hash?.update(piece)
            try body(piece)
          }
        }
        try hash?.check(id, what: loose.path)
        return
      }
    }
    var object: OpaquePointer?
    try check(git_odb_read(&object, odb, &oid), "git_odb_read", id.hex)
    defer { git_odb_object_free(object) }
    let size = git_odb_object_size(object)
    let type = git_odb_object_type(object)
    let data = UnsafeRawBufferPointer(start: git_odb_object_data(object), count: size)
    if verification != .libgit2 {
      let hash = ObjectHasher(type: String(cString: git_object_type2string(type)), size: size)
      hash.update(data)
      try hash.check(id, what: "object \(id.hex)")
    }
    try append(id, type: type, size: size) { try $0(data) }
  }

  /// Appends one whole (undeltified) object of `size` bytes whose content `produce` hands,
  /// in pieces, to the closure it is given.
  func append(
    _ id: ObjectID, type: git_object_t, size: Int,
    _ produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void
  ) throws {
    precondition(entries.count < expectedCount, "more objects than the pack header announced")
    let start = offset
    var crc = crc32(0, nil, 0)
    // Entry header: type and size, 4 bits then 7 bits per byte, low bits first.
    var header: [UInt8] = []
    var left = UInt64(size)
    var byte = UInt8(truncatingIfNeeded: (UInt64(type.rawValue) << 4) | (left & 0x0F))
    left >>= 4
    while left > 0 {
      header.append(byte | 0x80)
      byte = UInt8(truncatingIfNeeded: left & 0x7F)
      left >>= 7
    }
    header.append(byte)
    crc = header.withUnsafeBytes { crc32(crc, $0.bindMemory(to: Bytef.self).baseAddress, uInt($0.count)) }
    try emit(header)
    crc = try deflateEntry(size: size, crc: crc, produce)
    entries.append((id, start, UInt32(truncatingIfNeeded: crc)))
  }

  /// Stored blocks for large data that does not compress (zstd frames); the default level else.
  /// `prefix` is the content's start (at least 64 KiB of it when there is that much).
  static func compressionLevel(size: Int, prefix: UnsafeRawBufferPointer) -> Int32 {
    guard size >= storedThreshold else { return Z_DEFAULT_COMPRESSION }
    if prefix.count >= 4, prefix[0] == 0x28, prefix[1] == 0xB5, prefix[2] == 0x2F, prefix[3] == 0xFD {
      return Z_NO_COMPRESSION
    }
    // Anything else large (a side file, a tokenizer): deflate a 64 KiB sample at level 1.
    let sample = UnsafeRawBufferPointer(rebasing: prefix[0..<min(prefix.count, storedThreshold)])
    var bound = compressBound(uLong(sample.count))
    var out = [UInt8](repeating: 0, count: Int(bound))
    let code = out.withUnsafeMutableBytes { outBytes in
      compress2(
        outBytes.bindMemory(to: Bytef.self).baseAddress, &bound, sample.bindMemory(to: Bytef.self).baseAddress,
        uLong(sample.count), 1)
    }
    return code == Z_OK && Int(bound) < sample.count * 9 / 10 ? Z_BEST_SPEED : Z_NO_COMPRESSION
  }

  /// Deflates the pieces `produce` hands over into the pack; the level is chosen from the first.
  private func deflateEntry(
    size: Int, crc: uLong, _ produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void
  ) throws -> uLong {
    // zlib checks that the stream has not moved since deflateInit: keep it on the heap.
    let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    stream.initialize(to: z_stream())
    defer { stream.deallocate() }
    var initialized = false
    defer { if initialized { deflateEnd(stream) } }
    var crc = crc
    let output = deflateOutput ?? UnsafeMutableRawBufferPointer.allocate(byteCount: (1 << 20) + 1024, alignment: 16)
    deflateOutput = output
    func run(_ input: UnsafeRawBufferPointer, finish: Bool) throws {
      if !initialized {
        let level = Self.compressionLevel(size: size, prefix: input)
        guard deflateInit_(stream, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
          throw RepositoryError.libgit2(
            function: "deflateInit", subject: temporaryPath, message: "zlib initialization failed")
        }
        initialized = true
      }
      stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
      stream.pointee.avail_in = uInt(input.count)
      var code: Int32 = Z_OK
      repeat {
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        code = deflate(stream, finish ? Z_FINISH : Z_NO_FLUSH)
        let produced = output.count - Int(stream.pointee.avail_out)
        guard code == Z_OK || code == Z_STREAM_END || code == Z_BUF_ERROR else {
          throw RepositoryError.libgit2(function: "deflate", subject: temporaryPath, message: "zlib error \(code)")
        }
        if produced > 0 {
          let bytes = UnsafeRawBufferPointer(rebasing: output[0..<produced])
          // A streamed pack has no index, so no entry CRC-32 is needed.
          if !streaming { crc = crc32(crc, bytes.bindMemory(to: Bytef.self).baseAddress, uInt(produced)) }
          try emit(bytes)
        }
      } while stream.pointee.avail_in > 0 || (finish && code != Z_STREAM_END)
    }
    var delivered = 0
    try produce { piece in
      guard delivered + piece.count <= size else {
        throw RepositoryError.libgit2(
          function: "PackWriter", subject: temporaryPath, message: "object longer than declared")
      }
      delivered += piece.count
      // 1 MiB at a time into zlib, so the level is chosen from a large enough prefix.
      var start = 0
      repeat {
        let end = min(piece.count, start + (1 << 20))
        try run(UnsafeRawBufferPointer(rebasing: piece[start..<end]), finish: false)
        start = end
      } while start < piece.count
    }
    guard delivered == size else {
      throw RepositoryError.libgit2(
        function: "PackWriter", subject: temporaryPath, message: "object shorter than declared")
    }
    try run(UnsafeRawBufferPointer(start: nil, count: 0), finish: true)
    return crc
  }

  /// Writes the trailer and the index, fsyncs both and the folder, and renames them into place.
  /// Returns the pack's name, `pack-<sha1 hex>`.
  func finish() throws -> String {
    guard entries.count == expectedCount else {
      abandon()
      throw RepositoryError.libgit2(
        function: "PackWriter.finish", subject: directory,
        message: "\(entries.count) objects written, \(expectedCount) announced")
    }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    EVP_DigestFinal_ex(sha, &digest, &length)
    let checksum = Array(digest[0..<20])
    buffer.append(contentsOf: checksum)
    try flush()
    let name = "pack-" + checksum.map { String(format: "%02x", $0) }.joined()
    if streaming {
      finished = true
      return name
    }
    guard fsync(fd) == 0 else { throw Self.posixError("fsync", temporaryPath) }
    close(fd)
    fd = -1
    let packPath = (directory as NSString).appendingPathComponent(name + ".pack")
    let indexPath = (directory as NSString).appendingPathComponent(name + ".idx")
    if FileManager.default.fileExists(atPath: indexPath) {
      // The very same pack is there already (same objects, same order).
      abandon()
      return name
    }
    guard rename(temporaryPath, packPath) == 0 else { throw Self.posixError("rename", packPath) }
    finished = true
    try writeIndex(to: indexPath, packChecksum: checksum)
    let dirFD = open(directory, O_RDONLY | O_CLOEXEC)
    if dirFD >= 0 {
      defer { close(dirFD) }
      guard fsync(dirFD) == 0 else { throw Self.posixError("fsync", directory) }
    }
    return name
  }

  /// The version-2 index: fan-out, sorted ids, CRC-32s, 31-bit offsets (+ 64-bit ones), checksums.
  private func writeIndex(to path: String, packChecksum: [UInt8]) throws {
    let sorted = entries.sorted { $0.id.bytes.lexicographicallyPrecedes($1.id.bytes) }
    var out: [UInt8] = [0xFF, 0x74, 0x4F, 0x63] + Self.bigEndian32(2)
    out.reserveCapacity(8 + 1024 + sorted.count * 28 + 40)
    var fanout = [UInt32](repeating: 0, count: 256)
    for entry in sorted { fanout[Int(entry.id.bytes[0])] += 1 }
    var running: UInt32 = 0
    for i in 0..<256 {
      running += fanout[i]
      out += Self.bigEndian32(running)
    }
    for entry in sorted { out += entry.id.bytes }
    for entry in sorted { out += Self.bigEndian32(entry.crc) }
    var large: [UInt64] = []
    for entry in sorted {
      if entry.offset < 0x8000_0000 {
        out += Self.bigEndian32(UInt32(entry.offset))
      } else {
        out += Self.bigEndian32(0x8000_0000 | UInt32(large.count))
        large.append(UInt64(entry.offset))
      }
    }
    for value in large {
      out += Self.bigEndian32(UInt32(value >> 32)) + Self.bigEndian32(UInt32(value & 0xFFFF_FFFF))
    }
    out += packChecksum
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard let context = EVP_MD_CTX_new() else {
      throw RepositoryError.libgit2(function: "EVP_MD_CTX_new", subject: path, message: "no SHA-1 context")
    }
    defer { EVP_MD_CTX_free(context) }
    EVP_DigestInit_ex(context, EVP_sha1(), nil)
    EVP_DigestUpdate(context, out, out.count)
    EVP_DigestFinal_ex(context, &digest, &length)
    out += digest[0..<20]

    let temporary = path + ".mvc-tmp"
    let file = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o444)
    guard file >= 0 else { throw Self.posixError("open", temporary) }
    var done = 0
    while done < out.count {
      let written = out.withUnsafeBytes { bytes in write(file, bytes.baseAddress.map { $0 + done }, bytes.count - done)
      }
      if written < 0 {
        if errno == EINTR { continue }
        close(file)
        unlink(temporary)
        throw Self.posixError("write", temporary)
      }
      done += written
    }
    guard fsync(file) == 0 else {
      close(file)
      unlink(temporary)
      throw Self.posixError("fsync", temporary)
    }
    close(file)
    guard rename(temporary, path) == 0 else {
      unlink(temporary)
      throw Self.posixError("rename", path)
    }
  }
}

/// SHA-1 of a git object (`<type> <size>\0` then the content), by OpenSSL.
final class ObjectHasher {
  private let context: OpaquePointer?

  init(type: String, size: Int) {
    context = EVP_MD_CTX_new()
    EVP_DigestInit_ex(context, EVP_sha1(), nil)
    let header = Array("\(type) \(size)\0".utf8)
    EVP_DigestUpdate(context, header, header.count)
  }

  deinit { EVP_MD_CTX_free(context) }

  func update(_ bytes: UnsafeRawBufferPointer) { EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) }

  /// The object's id (call once, after the whole content).
  func finalize() -> ObjectID {
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    EVP_DigestFinal_ex(context, &digest, &length)
    var oid = git_oid()
    withUnsafeMutableBytes(of: &oid.id) { $0.copyBytes(from: digest[0..<20]) }
    return ObjectID(oid)
  }

  /// Throws when the content read does not hash to `id` (a damaged object).
  func check(_ id: ObjectID, what: String) throws {
    guard finalize() == id else {
      throw RepositoryError.corruptObject(what: what, reason: "its content does not hash to its id \(id.hex)")
    }
  }
}
