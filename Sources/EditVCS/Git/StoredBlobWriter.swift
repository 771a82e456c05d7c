internal import CGit2
internal import CZlib
import DeltaStore
import Foundation

/// Writes large blobs as loose objects whose zlib stream holds *stored* deflate blocks.
///
/// mvc's large blobs are zstd frames already; deflating them again is pure cost (libgit2's
/// loose backend at level 1 took 1.6 s for a 64 MiB blob here, stored blocks 0.2 s). libgit2
/// 1.5.1's own "level 0" writes no zlib framing at all, which neither git nor libgit2 can read
/// back, so the object is framed here: `blob <n>\0<bytes>` through zlib's `deflate` at
/// `Z_NO_COMPRESSION`, written to a temporary file, fsynced and renamed into
/// `objects/xx/yyyy…`, exactly the file git itself would write at `core.compression 0`.
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

    // zlib checks that the stream has not moved since deflateInit (`state->strm == strm`), and
    // `&local` is not guaranteed to be the same address on every call: keep it on the heap.
    let streamPointer = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    streamPointer.initialize(to: z_stream())
    defer { streamPointer.deallocate() }
    guard deflateInit_(streamPointer, Z_NO_COMPRESSION, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
      throw RepositoryError.libgit2(function: "deflateInit", subject: hex, message: "zlib initialization failed")
    }
    defer { deflateEnd(streamPointer) }
    let header = Array("blob \(bytes.count)\0".utf8)
    // No preallocation: zlib's stored-block sizes are its own business, so the exact length is
    // known only at the end.
    let writer = try AtomicFileWriter(path: path, permissions: 0o444, hook: hook)
    do {
      let outputCapacity = 1 << 20
      var output = [UInt8](repeating: 0, count: outputCapacity + 1024)
      var written = 0
      func pump(_ input: UnsafeRawBufferPointer, finish: Bool) throws {
        streamPointer.pointee.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
        streamPointer.pointee.avail_in = uInt(input.count)
        repeat {
          let produced: Int = try output.withUnsafeMutableBytes { out in
            streamPointer.pointee.next_out = out.bindMemory(to: Bytef.self).baseAddress
            streamPointer.pointee.avail_out = uInt(out.count)
            let code = deflate(streamPointer, finish ? Z_FINISH : Z_NO_FLUSH)
            guard code == Z_OK || code == Z_STREAM_END || code == Z_BUF_ERROR else {
              throw RepositoryError.libgit2(function: "deflate", subject: hex, message: "zlib error \(code)")
            }
            return out.count - Int(streamPointer.pointee.avail_out)
          }
          if produced > 0 {
            try output.withUnsafeBytes {
              try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<produced]), at: written)
            }
            written += produced
          }
        } while streamPointer.pointee.avail_in > 0 || (finish && streamPointer.pointee.avail_out == 0)
      }
      try header.withUnsafeBytes { try pump($0, finish: false) }
      var offset = 0
      let piece = 1 << 20
      while offset < bytes.count {
        let end = min(bytes.count, offset + piece)
        try pump(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]), finish: false)
        offset = end
      }
      try pump(UnsafeRawBufferPointer(start: nil, count: 0), finish: true)
      try writer.commit()
    } catch {
      writer.abandon()
      throw error
    }
    return id
  }
}
