internal import CGit2
internal import CZlib
import DeltaStore
import Foundation

/// Writes large blobs as loose objects whose zlib stream holds *stored* deflate blocks.
///
/// mvc's large blobs are zstd frames already; deflating them again is pure cost (libgit2's
/// loose backend at level 1 took 1.6 s for a 64 MiB blob here, stored blocks 0.2 s). libgit2
/// 1.5.1's own "level 0" writes no zlib framing at all, which neither git nor libgit2 can read
/// back, so the object is framed here: `blob <n>\0<bytes>` as a zlib stream of stored deflate
/// blocks (what git itself writes at `core.compression 0`, its blocks cut at other places),
/// written to a temporary file, fsynced and renamed into `objects/xx/yyyy…`.
enum StoredBlobWriter {
  static func write(
    _ bytes: UnsafeRawBufferPointer, objectsDirectory: String, hook: IOHook?
  ) throws -> ObjectID {
    // OpenSSL's SHA-1 (as the packs mvc writes): the same id as libgit2's `git_odb_hash`, whose
    // collision-detecting SHA-1 took 17% of init's CPU time. Collision detection guards against
    // crafted inputs; these bytes are mvc's own encoder output.
    let hasher = ObjectHasher(type: "blob", size: bytes.count)
    hasher.update(bytes)
    let id = hasher.finalize()
    let hex = id.hex
    let directory = (objectsDirectory as NSString).appendingPathComponent(String(hex.prefix(2)))
    let path = (directory as NSString).appendingPathComponent(String(hex.dropFirst(2)))
    if FileManager.default.fileExists(atPath: path) { return id }
    try RepositoryError.fileSystem("create", directory) {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    // The zlib stream is framed here rather than by `deflate` at `Z_NO_COMPRESSION`, which
    // copied every byte into its output buffer and its window (6% of init's CPU time): the
    // content is written straight from `bytes`, one stored block (a 5-byte header, then at most
    // 65,535 bytes) at a time. Any reader of zlib streams (git, libgit2, `LooseBlob`) reads it.
    let header = Array("blob \(bytes.count)\0".utf8)
    var adler = header.withUnsafeBytes { adler32_z(1, $0.bindMemory(to: Bytef.self).baseAddress, $0.count) }
    if let base = bytes.baseAddress {
      adler = adler32_z(adler, base.assumingMemoryBound(to: Bytef.self), bytes.count)
    }
    let writer = try AtomicFileWriter(path: path, permissions: 0o444, hook: hook)
    do {
      var written = 0
      func put(_ piece: UnsafeRawBufferPointer) throws {
        try writer.write(piece, at: written)
        written += piece.count
      }
      func block(_ piece: UnsafeRawBufferPointer, final: Bool) throws {
        let n = UInt16(piece.count)
        let blockHeader: [UInt8] = [
          final ? 1 : 0, UInt8(truncatingIfNeeded: n), UInt8(n >> 8), UInt8(truncatingIfNeeded: ~n), UInt8(~n >> 8),
        ]
        try blockHeader.withUnsafeBytes { try put($0) }
        try put(piece)
      }
      // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (fastest level, header check: 0x7801 % 31 == 0).
      try [UInt8]([0x78, 0x01]).withUnsafeBytes { try put($0) }
      try header.withUnsafeBytes { try block($0, final: bytes.isEmpty) }
      var offset = 0
      while offset < bytes.count {
        let end = min(bytes.count, offset + 65_535)
        try block(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), final: end == bytes.count)
        offset = end
      }
      let trailer: [UInt8] = (0..<4).map { UInt8(truncatingIfNeeded: adler >> (24 - 8 * $0)) }
      try trailer.withUnsafeBytes { try put($0) }
      try writer.commit()
    } catch {
      writer.abandon()
      throw error
    }
    return id
  }
}
