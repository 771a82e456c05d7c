internal import CGit2
internal import CZlib
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// One loose object file (`objects/xx/yyyy…`: a zlib stream of `<type> <size>\0<content>`)
/// read and checked whole: the stream must end exactly where the file does and hold exactly
/// the size its header declares. Nothing is trusted before it is checked, and no allocation is
/// sized by the header alone (a declared size must fit what the file's bytes can inflate to).
///
/// The content goes into a buffer the caller allocates once the header is read, so a large
/// blob is inflated straight into libgit2's buffer (``LooseObjectGuard``) and a small object
/// into an array (``SmallLooseObject``).
enum LooseObjectFile {
  /// Why a loose object file cannot be read; `nil` from `read` means there is no such file.
  struct Damage: Error {
    var reason: String
  }

  enum Kind: String {
    case commit, tree, blob, tag

    var git: git_object_t {
      switch self {
      case .commit: GIT_OBJECT_COMMIT
      case .tree: GIT_OBJECT_TREE
      case .blob: GIT_OBJECT_BLOB
      case .tag: GIT_OBJECT_TAG
      }
    }
  }

  /// Deflate's largest expansion is about 1032 : 1 (a stream of maximal-length matches): a
  /// header declaring more than that of the file's bytes is refused before anything is allocated.
  static let maximumInflationRatio = 1_032

  /// The longest header git writes (`"commit " + 20 digits + NUL` and the like).
  static let maximumHeaderByteCount = 64

  /// The file's bytes are read through a buffer of this size.
  static let readPieceByteCount = 1 << 20

  /// Reads the object at `path`: its kind, and its content in the buffer `allocate` returns for
  /// the declared size (at least that many bytes; `release` is called on it if the object turns
  /// out damaged). Returns nil when there is no such file; throws `Damage` for anything else that
  /// is not a whole, well-formed object. The id is not checked here: libgit2 hashes what the
  /// guard returns, and ``SmallLooseObject`` hashes what it returns.
  static func read(
    path: String, maximumFileByteCount: Int = .max,
    allocate: @escaping (_ byteCount: Int) throws -> UnsafeMutableRawPointer,
    release: @escaping (UnsafeMutableRawPointer) -> Void
  ) throws -> (kind: Kind, content: UnsafeMutableRawPointer, byteCount: Int)? {
    guard
      let object = try parse(
        path: path, maximumFileByteCount: maximumFileByteCount, into: (allocate: allocate, release: release))
    else { return nil }
    guard let content = object.content else { throw Damage(reason: "was read without its content") }
    return (object.kind, content, object.byteCount)
  }

  /// The kind and size the object at `path` declares, with the header checked as `read` checks
  /// it (the rest of the stream is not read); nil when there is no such file.
  static func readHeader(path: String) throws -> (kind: Kind, byteCount: Int)? {
    guard let object = try parse(path: path, maximumFileByteCount: .max, into: nil) else { return nil }
    return (object.kind, object.byteCount)
  }

  /// `read`, or with no buffer, `readHeader`.
  private static func parse(
    path: String, maximumFileByteCount: Int,
    into buffer: (
      allocate: (_ byteCount: Int) throws -> UnsafeMutableRawPointer, release: (UnsafeMutableRawPointer) -> Void
    )?
  ) throws -> (kind: Kind, content: UnsafeMutableRawPointer?, byteCount: Int)? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      if errno == ENOENT || errno == ENOTDIR { return nil }
      throw Damage(reason: "cannot be opened (\(String(cString: strerror(errno))))")
    }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else {
      throw Damage(reason: "cannot be examined (\(String(cString: strerror(errno))))")
    }
    let fileByteCount = Int(info.st_size)
    guard fileByteCount > 0 else { throw Damage(reason: "is empty") }
    guard fileByteCount <= maximumFileByteCount else { throw Damage(reason: "is larger than expected here") }

    // zlib checks that the stream has not moved since inflateInit (`state->strm == strm`): it
    // lives on the heap, not in a local whose address Swift does not promise to keep.
    let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    stream.initialize(to: z_stream())
    defer { stream.deallocate() }
    guard inflateInit_(stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
      throw Damage(reason: "could not be read (zlib did not start)")
    }
    defer { inflateEnd(stream) }
    // A header needs the stream's first bytes only.
    let pieceByteCount = buffer == nil ? maximumHeaderByteCount * 4 : readPieceByteCount
    let piece = UnsafeMutablePointer<UInt8>.allocate(capacity: min(pieceByteCount, fileByteCount))
    defer { piece.deallocate() }
    var fileOffset = 0
    let truncated = Damage(reason: "ends before its zlib stream does (truncated)")

    /// Inflates into `output[0..<capacity]` until it is full or the stream ends; returns the
    /// bytes produced and whether the stream ended. Every pass makes progress or throws: this
    /// is the loop libgit2 1.5 gets stuck in.
    func inflate(into output: UnsafeMutablePointer<UInt8>, capacity: Int) throws -> (Int, Bool) {
      var produced = 0
      while produced < capacity {
        if stream.pointee.avail_in == 0 && fileOffset < fileByteCount {
          let wanted = min(pieceByteCount, fileByteCount - fileOffset)
          var got = 0
          while got < wanted {
            let n = Glibc.read(fd, piece + got, wanted - got)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw Damage(reason: "became shorter while it was read") }
            got += n
          }
          fileOffset += got
          stream.pointee.next_in = piece
          stream.pointee.avail_in = uInt(got)
        }
        stream.pointee.next_out = output + produced
        // zlib's counters are 32-bit: an object over 4 GiB is inflated in several passes.
        let room = min(capacity - produced, Int(UInt32.max))
        stream.pointee.avail_out = uInt(room)
        let inputBefore = stream.pointee.avail_in
        let code = CZlib.inflate(stream, Z_NO_FLUSH)
        produced += room - Int(stream.pointee.avail_out)
        switch code {
        case Z_STREAM_END:
          return (produced, true)
        case Z_OK, Z_BUF_ERROR:
          if stream.pointee.avail_in == inputBefore && Int(stream.pointee.avail_out) == room {
            if stream.pointee.avail_in == 0 && fileOffset == fileByteCount { throw truncated }
            throw Damage(reason: "holds a zlib stream that does not advance")
          }
        case Z_DATA_ERROR:
          throw Damage(
            reason: "holds a damaged zlib stream (\(stream.pointee.msg.map { String(cString: $0) } ?? "no detail"))")
        default:
          throw Damage(reason: "could not be inflated (zlib error \(code))")
        }
      }
      return (produced, false)
    }

    // The header first, into a small buffer; the content that follows it in there is copied over.
    var header = [UInt8](repeating: 0, count: maximumHeaderByteCount)
    let (headerProduced, endedInHeader) = try header.withUnsafeMutableBufferPointer { buffer in
      // swift-format-ignore: NeverForceUnwrap
      try inflate(into: buffer.baseAddress!, capacity: buffer.count)
    }
    guard let nul = header[0..<headerProduced].firstIndex(of: 0),
      let space = header[0..<nul].firstIndex(of: UInt8(ascii: " ")),
      let kind = Kind(rawValue: String(decoding: header[0..<space], as: UTF8.self)),
      (1...20).contains(nul - space - 1),
      header[(space + 1)..<nul].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
      let declared = Int(String(decoding: header[(space + 1)..<nul], as: UTF8.self))
    else { throw Damage(reason: "does not start with a git object header ('<type> <size>' and a NUL)") }
    let (limit, overflow) = fileByteCount.multipliedReportingOverflow(by: maximumInflationRatio)
    guard overflow || declared <= limit else {
      throw Damage(reason: "declares \(declared) bytes, more than its \(fileByteCount) bytes can inflate to")
    }
    let early = headerProduced - nul - 1
    guard early <= declared else { throw Damage(reason: "holds more than the \(declared) bytes its header declares") }
    guard !endedInHeader || early == declared else { throw truncated }
    guard let buffer else { return (kind, nil, declared) }

    let content = try buffer.allocate(declared)
    do {
      let bytes = content.assumingMemoryBound(to: UInt8.self)
      header.withUnsafeBufferPointer { header in
        // swift-format-ignore: NeverForceUnwrap
        bytes.update(from: header.baseAddress! + nul + 1, count: early)
      }
      var ended = endedInHeader
      if !ended && early < declared {
        let (produced, end) = try inflate(into: bytes + early, capacity: declared - early)
        guard produced == declared - early else { throw truncated }
        ended = end
      }
      if !ended {
        // Every declared byte is there: the stream must end now, with nothing more in it.
        var extra: UInt8 = 0
        let (produced, end) = try inflate(into: &extra, capacity: 1)
        guard produced == 0, end else {
          throw Damage(reason: "holds more than the \(declared) bytes its header declares")
        }
      }
      guard stream.pointee.avail_in == 0, fileOffset == fileByteCount else {
        throw Damage(reason: "has bytes after the end of its zlib stream")
      }
    } catch {
      buffer.release(content)
      throw error
    }
    return (kind, content, declared)
  }
}

/// A read-only object backend placed before libgit2's loose backend: every loose object
/// libgit2 reads goes through ``LooseObjectFile`` first, so a damaged one is an error that
/// names it, never a hang or a write out of bounds.
///
/// libgit2 1.5 (Debian 12's) loops forever inflating a loose object whose zlib stream stops
/// before its end (libgit2#7342, fixed upstream by #7346 in 2026): a truncated commit made
/// `mvc log`, `status` and `fsck` hang. It also writes past its buffer for an object whose
/// header declares fewer bytes than it holds (#7177). Both are reached only through the loose
/// backend's `read` and `read_prefix`, which this backend answers for every loose object (it
/// says "not found" for the rest, which the pack backend then serves). libgit2 still hashes
/// what it returns (strict hash verification) and still writes through its own loose backend.
enum LooseObjectGuard {
  /// Adds the guard to `odb` at `priority`, which must be above the loose backend's.
  static func install(into odb: OpaquePointer, objectsDirectory: String, priority: Int32) throws {
    let stride = MemoryLayout<git_odb_backend>.stride
    // The backend struct, then the C string of the objects directory, in one allocation that
    // the `free` callback releases.
    let path = Array(objectsDirectory.utf8CString)
    let raw = UnsafeMutableRawPointer.allocate(
      byteCount: stride + path.count, alignment: MemoryLayout<git_odb_backend>.alignment)
    let backend = raw.bindMemory(to: git_odb_backend.self, capacity: 1)
    backend.initialize(to: git_odb_backend())
    path.withUnsafeBytes { bytes in
      guard let source = bytes.baseAddress else { return }
      (raw + stride).copyMemory(from: source, byteCount: bytes.count)
    }
    guard git_odb_init_backend(backend, UInt32(GIT_ODB_BACKEND_VERSION)) == 0 else {
      raw.deallocate()
      throw RepositoryError.libgit2(function: "git_odb_init_backend", subject: objectsDirectory, message: "failed")
    }
    backend.pointee.read = { data, length, type, backend, id in
      guard let data, let length, let type, let backend, let id else { return GIT_ERROR.rawValue }
      return LooseObjectGuard.read(ObjectID(id.pointee), backend: backend, data: data, length: length, type: type)
    }
    backend.pointee.read_prefix = { found, data, length, type, backend, prefix, digits in
      guard let found, let data, let length, let type, let backend, let prefix else { return GIT_ERROR.rawValue }
      return LooseObjectGuard.readPrefix(
        ObjectID(prefix.pointee), digits: Int(digits), backend: backend, found: found, data: data, length: length,
        type: type)
    }
    backend.pointee.read_header = { length, type, backend, id in
      guard let length, let type, let backend, let id else { return GIT_ERROR.rawValue }
      return LooseObjectGuard.readHeader(ObjectID(id.pointee), backend: backend, length: length, type: type)
    }
    backend.pointee.free = { backend in UnsafeMutableRawPointer(backend)?.deallocate() }
    let added = git_odb_add_backend(odb, backend, priority)
    guard added == 0 else {
      raw.deallocate()
      try check(added, "git_odb_add_backend", objectsDirectory)
      return
    }
  }

  private static func objectsDirectory(of backend: UnsafeMutablePointer<git_odb_backend>) -> String {
    String(
      cString: (UnsafeMutableRawPointer(backend) + MemoryLayout<git_odb_backend>.stride).assumingMemoryBound(
        to: CChar.self))
  }

  private static func read(
    _ id: ObjectID, backend: UnsafeMutablePointer<git_odb_backend>,
    data: UnsafeMutablePointer<UnsafeMutableRawPointer?>, length: UnsafeMutablePointer<Int>,
    type: UnsafeMutablePointer<git_object_t>
  ) -> Int32 {
    let path = objectPath(id, backend: backend)
    do {
      let read = try LooseObjectFile.read(
        path: path,
        allocate: { byteCount in
          // libgit2 frees this buffer; one byte more, which it expects to be a NUL.
          guard let buffer = git_odb_backend_data_alloc(backend, byteCount + 1) else {
            throw LooseObjectFile.Damage(reason: "needs \(byteCount) bytes of memory, which could not be allocated")
          }
          return buffer
        },
        release: { git_odb_backend_data_free(backend, $0) })
      guard let read else { return GIT_ENOTFOUND.rawValue }
      read.content.storeBytes(of: 0, toByteOffset: read.byteCount, as: UInt8.self)
      data.pointee = read.content
      length.pointee = read.byteCount
      type.pointee = read.kind.git
      return 0
    } catch {
      return report(error, id: id, path: path)
    }
  }

  private static func readHeader(
    _ id: ObjectID, backend: UnsafeMutablePointer<git_odb_backend>, length: UnsafeMutablePointer<Int>,
    type: UnsafeMutablePointer<git_object_t>
  ) -> Int32 {
    let path = objectPath(id, backend: backend)
    do {
      guard let header = try LooseObjectFile.readHeader(path: path) else { return GIT_ENOTFOUND.rawValue }
      length.pointee = header.byteCount
      type.pointee = header.kind.git
      return 0
    } catch {
      return report(error, id: id, path: path)
    }
  }

  private static func objectPath(_ id: ObjectID, backend: UnsafeMutablePointer<git_odb_backend>) -> String {
    let hex = id.hex
    return objectsDirectory(of: backend) + "/" + hex.prefix(2) + "/" + hex.dropFirst(2)
  }

  /// Sets libgit2's error message for a damaged object and returns its error code.
  private static func report(_ error: any Error, id: ObjectID, path: String) -> Int32 {
    let reason = (error as? LooseObjectFile.Damage)?.reason ?? "could not be read (\(error))"
    git_error_set_str(
      Int32(GIT_ERROR_ODB.rawValue),
      "corrupt loose object '\(id.hex)' (\(path)): it \(reason); 'mvc fsck' lists the damage")
    return GIT_ERROR.rawValue
  }

  private static func readPrefix(
    _ prefix: ObjectID, digits: Int, backend: UnsafeMutablePointer<git_odb_backend>,
    found: UnsafeMutablePointer<git_oid>, data: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
    length: UnsafeMutablePointer<Int>, type: UnsafeMutablePointer<git_object_t>
  ) -> Int32 {
    let hex = String(prefix.hex.prefix(digits))
    guard hex.count >= 2 else { return GIT_ENOTFOUND.rawValue }
    let directory = objectsDirectory(of: backend) + "/" + hex.prefix(2)
    let rest = hex.dropFirst(2)
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
      $0.utf8.count == 38 && $0.hasPrefix(rest) && ObjectID(hex: String(hex.prefix(2)) + $0) != nil
    }
    guard let name = names.first else { return GIT_ENOTFOUND.rawValue }
    guard names.count == 1 else {
      git_error_set_str(
        Int32(GIT_ERROR_ODB.rawValue), "ambiguous object id prefix '\(hex)' (\(names.count) loose objects)")
      return GIT_EAMBIGUOUS.rawValue
    }
    // swift-format-ignore: NeverForceUnwrap
    let id = ObjectID(hex: String(hex.prefix(2)) + name)!
    let code = read(id, backend: backend, data: data, length: length, type: type)
    if code == 0 { found.pointee = id.raw }
    return code
  }
}
