internal import CGit2
internal import CZlib
import DeltaStore
import Foundation

/// A loose blob (`objects/xx/yyyy…`) mapped read-only, whose content is read in place.
///
/// Wraps DeltaStore's `MappedFile` (`mmap` / `munmap`, the descriptor closed at once). Large
/// blobs written by `StoredBlobWriter` hold only *stored* deflate blocks, so their content is
/// handed out as slices of the mapping with no inflate and no copy; any other stream (git's and
/// libgit2's own loose objects are compressed) is inflated through a 1 MiB buffer instead.
///
/// Neither zlib's adler32 nor git's SHA-1 is checked on the stored path: mvc verifies every
/// materialized tensor against its XXH3-128 content hash, which covers the same bytes. Every
/// length in the file is bounds-checked, so a truncated or damaged file throws, never traps.
///
/// The instance is immutable after `init`, so `forEachPiece` may run on several threads at once.
/// No libgit2 handle is involved.
package final class LooseBlob: Sendable {
  /// The object's id.
  package let id: ObjectID
  /// The loose object file.
  package var path: String { file.path }
  /// The blob's content length, as its object header declares it (checked while reading).
  package let contentByteCount: Int

  /// Whether every deflate block is stored, so pieces are views of the mapping (no inflate).
  package var readsInPlace: Bool {
    if case .stored = layout { return true }
    return false
  }

  private let file: MappedFile
  private let layout: Layout

  private enum Layout {
    /// Every block is stored: the content is these ranges of the file, in order.
    case stored([Range<Int>])
    /// Some block is compressed: the content comes out of `inflate`, after the header's bytes.
    case compressed(headerByteCount: Int)
  }

  /// Opens the loose object `id` of the bare repository at `repositoryPath`.
  ///
  /// Parses the zlib header and the object header and, for an all-stored stream, walks every
  /// block, so a stored blob that opens reads to the end (compressed streams are checked while
  /// they are inflated).
  ///
  /// - Returns: nil when the object is not loose (it may be packed).
  /// - Throws: `RepositoryError.git` whose message names the object and the file: the file cannot be
  ///   read, the zlib stream is truncated or damaged, or the object is not a well-formed blob.
  package init?(_ id: ObjectID, repositoryPath: String) throws {
    let hex = id.hex
    let path = ((repositoryPath as NSString).appendingPathComponent("objects") as NSString)
      .appendingPathComponent("\(hex.prefix(2))/\(hex.dropFirst(2))")
    let subject = Subject(id: id, path: path)
    let file: MappedFile
    do {
      file = try MappedFile(path: path)
    } catch DeltaStoreError.io(_, "open", ENOENT, _) {
      return nil  // packed, or never written: libgit2 knows
    } catch {
      throw subject.corrupt((error as? LocalizedError)?.errorDescription ?? "\(error)")
    }
    let bytes = file.bytes
    try Self.checkZlibHeader(bytes, subject)
    if let blocks = try Self.storedBlocks(file, subject) {
      var next = blocks.makeIterator()
      let header = try ObjectHeader.read(subject) {
        next.next().map { UnsafeRawBufferPointer(rebasing: bytes[$0]) }
      }
      let content = Self.dropping(header.byteCount, from: blocks)
      let total = content.reduce(0) { $0 + $1.count }
      guard total == header.contentByteCount else {
        throw subject.corrupt("header declares \(header.contentByteCount) bytes, stream holds \(total)")
      }
      layout = .stored(content)
      contentByteCount = header.contentByteCount
    } else {
      let inflater = try Inflater(bytes, subject)
      // Tiny steps: only the header is wanted here; `forEachPiece` inflates again from the start.
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 1)
      defer { buffer.deallocate() }
      let header = try ObjectHeader.read(subject) {
        let produced = try inflater.inflate(into: buffer)
        if produced.count == 0 && produced.ended { return nil }
        return UnsafeRawBufferPointer(rebasing: buffer[0..<produced.count])
      }
      layout = .compressed(headerByteCount: header.byteCount)
      contentByteCount = header.contentByteCount
    }
    self.id = id
    self.file = file
  }

  /// Calls `body` with the blob's content in consecutive pieces, each valid only during its call.
  ///
  /// Mapped pages are dropped from the resident set as they are consumed, so reading a large
  /// blob does not keep it in memory. Pieces may be views of the mapping: never write to them.
  ///
  /// - Throws: what `body` throws, or `RepositoryError.git` when a compressed stream turns out damaged,
  ///   truncated or of another length than declared (pieces before the damage were delivered).
  package func forEachPiece(_ body: (UnsafeRawBufferPointer) throws -> Void) throws {
    let bytes = file.bytes
    defer { file.releasePages(0..<bytes.count) }
    var releaser = PageReleaser(file: file)
    switch layout {
    case .stored(let ranges):
      for range in ranges {
        try body(UnsafeRawBufferPointer(rebasing: bytes[range]))
        releaser.consumed(upTo: range.upperBound)
      }
    case .compressed(let headerByteCount):
      let subject = Subject(id: id, path: path)
      let inflater = try Inflater(bytes, subject)
      let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
      defer { buffer.deallocate() }
      var headerLeft = headerByteCount
      var delivered = 0
      while true {
        let produced = try inflater.inflate(into: buffer)
        let skipped = min(headerLeft, produced.count)
        headerLeft -= skipped
        let piece = UnsafeRawBufferPointer(rebasing: buffer[skipped..<produced.count])
        guard piece.count <= contentByteCount - delivered else {
          throw subject.corrupt("header declares \(contentByteCount) bytes, stream holds more")
        }
        if !piece.isEmpty { try body(piece) }
        delivered += piece.count
        releaser.consumed(upTo: inflater.consumedByteCount)
        if produced.ended { break }
      }
      guard delivered == contentByteCount else {
        throw subject.corrupt("header declares \(contentByteCount) bytes, stream holds \(delivered)")
      }
    }
  }

  // MARK: Parsing

  /// RFC 1950: CM = 8 (deflate), CINFO ≤ 7, no preset dictionary, FCHECK makes it a multiple of 31.
  private static func checkZlibHeader(_ bytes: UnsafeRawBufferPointer, _ subject: Subject) throws {
    guard bytes.count >= 2 else { throw subject.corrupt("truncated zlib stream: \(bytes.count) bytes") }
    let cmf = Int(bytes[0])
    let flg = Int(bytes[1])
    guard cmf & 0x0F == 8, cmf >> 4 <= 7, flg & 0x20 == 0, (cmf << 8 | flg) % 31 == 0 else {
      throw subject.corrupt("not a zlib stream (header bytes \(cmf), \(flg))")
    }
  }

  /// The data ranges of the stream's stored blocks, or nil at the first block that is not stored.
  ///
  /// RFC 1951 §3.2.3–4: a block starts with BFINAL (bit 0) and BTYPE (bits 1–2, 00 = stored); a
  /// stored block then skips to the byte boundary and holds LEN, NLEN = ~LEN (16-bit little
  /// endian) and LEN bytes. The first block starts on a byte boundary after the zlib header and
  /// a stored block ends on one, so while every block is stored each header is a whole byte.
  ///
  /// Each header read faults in its neighbourhood (Linux maps 64 KiB around a fault, about one
  /// block), so the scan drops what it passed every MiB and at the end: an idle instance holds no
  /// resident pages and the scan's peak stays small.
  private static func storedBlocks(_ file: MappedFile, _ subject: Subject) throws -> [Range<Int>]? {
    let bytes = file.bytes
    defer { file.releasePages(0..<bytes.count) }
    var releaser = PageReleaser(file: file)
    var blocks: [Range<Int>] = []
    var offset = 2
    while true {
      releaser.consumed(upTo: offset)
      guard offset < bytes.count else {
        throw subject.corrupt("truncated zlib stream: no final block in \(bytes.count) bytes")
      }
      let header = bytes[offset]
      guard (header >> 1) & 3 == 0 else { return nil }
      guard bytes.count - offset >= 5 else {
        throw subject.corrupt("truncated zlib stream: stored block header at byte \(offset) is cut off")
      }
      let length = Int(bytes[offset + 1]) | Int(bytes[offset + 2]) << 8
      let complement = Int(bytes[offset + 3]) | Int(bytes[offset + 4]) << 8
      guard length ^ complement == 0xFFFF else {
        throw subject.corrupt("stored block at byte \(offset): LEN \(length) does not match NLEN \(complement)")
      }
      let start = offset + 5
      guard bytes.count - start >= length else {
        throw subject.corrupt(
          "truncated zlib stream: stored block at byte \(offset) needs \(length) bytes, \(bytes.count - start) left")
      }
      if length > 0 { blocks.append(start..<start + length) }
      offset = start + length
      if header & 1 == 1 { break }
    }
    // The adler32 trailer must be there, though it is not checked (see the type's comment).
    guard bytes.count - offset >= 4 else { throw subject.corrupt("truncated zlib stream: adler32 is cut off") }
    guard bytes.count - offset == 4 else {
      throw subject.corrupt("\(bytes.count - offset - 4) bytes of garbage after the zlib stream")
    }
    return blocks
  }

  /// `ranges` without their first `count` bytes (the object header may straddle blocks).
  private static func dropping(_ count: Int, from ranges: [Range<Int>]) -> [Range<Int>] {
    var left = count
    var out: [Range<Int>] = []
    out.reserveCapacity(ranges.count)
    for range in ranges {
      let skipped = min(left, range.count)
      left -= skipped
      if skipped < range.count { out.append(range.lowerBound + skipped..<range.upperBound) }
    }
    return out
  }
}

/// Drops a mapping's pages behind a reader: whole consumed pages, a MiB at a time rather than
/// one `madvise` per 64 KiB block.
private struct PageReleaser {
  let file: MappedFile
  private var released = 0

  init(file: MappedFile) { self.file = file }

  mutating func consumed(upTo offset: Int) {
    let pageAligned = offset & ~(Int(getpagesize()) - 1)
    guard pageAligned - released >= 1 << 20 else { return }
    file.releasePages(released..<pageAligned)
    released = pageAligned
  }
}

/// The object and file an error is about, so every message names both.
private struct Subject {
  var id: ObjectID
  var path: String

  func corrupt(_ reason: String) -> RepositoryError {
    .libgit2(function: "LooseBlob", subject: id.hex, message: "object \(id.hex) ('\(path)'): \(reason)")
  }
}

/// A loose object's header, `<type> <decimal size>\0`, as git's `parse_loose_header` reads it.
private struct ObjectHeader {
  /// The header's length including its NUL.
  var byteCount: Int
  var contentByteCount: Int

  /// "commit " and 20 digits fit; git's own limit is similar (`MAX_HEADER_LEN` 32).
  static let maximumByteCount = 32

  /// Reads the header from the pieces `next` returns (nil at the end of the stream).
  static func read(_ subject: Subject, _ next: () throws -> UnsafeRawBufferPointer?) throws -> ObjectHeader {
    var text: [UInt8] = []
    while true {
      guard let piece = try next() else {
        throw subject.corrupt("stream ends inside the object header (\(text.count) bytes)")
      }
      for byte in piece {
        if byte == 0 { return try parse(text, subject) }
        text.append(byte)
        guard text.count < maximumByteCount else {
          throw subject.corrupt("object header has no NUL in its first \(maximumByteCount) bytes")
        }
      }
    }
  }

  private static func parse(_ text: [UInt8], _ subject: Subject) throws -> ObjectHeader {
    let malformed = subject.corrupt("malformed object header '\(String(decoding: text, as: UTF8.self))'")
    guard let space = text.firstIndex(of: UInt8(ascii: " ")) else { throw malformed }
    let type = String(decoding: text[..<space], as: UTF8.self)
    guard type == "blob" else {
      if ["commit", "tree", "tag"].contains(type) { throw subject.corrupt("is a \(type), not a blob") }
      throw malformed
    }
    let digits = text[(space + 1)...]
    // Like git: digits only, and no leading zero except for "0" itself.
    guard let first = digits.first, digits.allSatisfy({ (48...57).contains($0) }),
      first != UInt8(ascii: "0") || digits.count == 1
    else { throw malformed }
    var size = 0
    for digit in digits {
      let (times10, o1) = size.multipliedReportingOverflow(by: 10)
      let (sum, o2) = times10.addingReportingOverflow(Int(digit) - 48)
      guard !o1, !o2 else { throw malformed }
      size = sum
    }
    return ObjectHeader(byteCount: text.count + 1, contentByteCount: size)
  }
}

/// A zlib inflate stream over a mapped file.
///
/// Wraps `inflateInit_` / `inflateEnd`. The `z_stream` is allocated at a fixed address because
/// zlib's state keeps a pointer back to it and refuses a moved stream. zlib checks adler32 here.
private final class Inflater {
  private let stream: UnsafeMutablePointer<z_stream>
  private let input: UnsafeRawBufferPointer
  private let subject: Subject
  /// Input handed to zlib so far (`avail_in` is 32-bit, so a huge file goes in 1 GiB slices).
  private var fedByteCount = 0
  private var ended = false

  init(_ input: UnsafeRawBufferPointer, _ subject: Subject) throws {
    self.input = input
    self.subject = subject
    stream = .allocate(capacity: 1)
    stream.initialize(to: z_stream())
    let code = inflateInit_(stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    guard code == Z_OK else {
      stream.deallocate()
      throw subject.corrupt("inflateInit failed: zlib error \(code)")
    }
  }

  deinit {
    inflateEnd(stream)
    stream.deallocate()
  }

  /// Input bytes zlib has consumed.
  var consumedByteCount: Int { fedByteCount - Int(stream.pointee.avail_in) }

  /// Inflates into `output` until it holds something or the stream ends.
  func inflate(into output: UnsafeMutableRawBufferPointer) throws -> (count: Int, ended: Bool) {
    if ended { return (0, true) }
    stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
    stream.pointee.avail_out = uInt(output.count)
    while true {
      if stream.pointee.avail_in == 0 && fedByteCount < input.count {
        let slice = min(input.count - fedByteCount, 1 << 30)
        stream.pointee.next_in = UnsafeMutablePointer(
          mutating: (input.baseAddress.map { $0 + fedByteCount })?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(slice)
        fedByteCount += slice
      }
      let code = CZlib.inflate(stream, Z_NO_FLUSH)
      let produced = output.count - Int(stream.pointee.avail_out)
      switch code {
      case Z_STREAM_END:
        ended = true
        let trailing = input.count - consumedByteCount
        guard trailing == 0 else { throw subject.corrupt("\(trailing) bytes of garbage after the zlib stream") }
        return (produced, true)
      case Z_OK:
        if produced > 0 { return (produced, false) }
      case Z_BUF_ERROR:
        // No progress possible: fine if more input waits, else the stream stops before its end.
        if produced > 0 { return (produced, false) }
        guard stream.pointee.avail_in == 0 && fedByteCount < input.count else {
          throw subject.corrupt("truncated zlib stream")
        }
      case Z_NEED_DICT:
        throw subject.corrupt("zlib stream needs a preset dictionary")
      default:
        let message = stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(code)"
        throw subject.corrupt("corrupt zlib stream: \(message)")
      }
    }
  }
}
