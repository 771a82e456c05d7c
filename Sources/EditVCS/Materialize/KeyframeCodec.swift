import DeltaStore
import Foundation

/// The payloads of keyframe files (`SnapshotCache`): a residual of ordered-integer differences,
/// one byte per element with exceptions beside, or a standalone copy of the bytes.
///
/// The residual is dense (every element has an entry, most of them a few ulps) because a state
/// dozens of roundings away from its prediction differs almost everywhere; the sparse pairs of
/// `ResidualCodec` would take 12 bytes of memory per element to decode.
enum KeyframeCodec {
  /// Whether keyframes can hold a tensor of `dtype`: the floating-point types edits are made in.
  static func supports(_ dtype: DType) -> Bool {
    switch dtype {
    case .f16, .bf16, .f32, .f64: return true
    default: return false
    }
  }

  /// `ordered(actual) − ordered(predicted)` per element (`bytesWithExceptions`), zstd-compressed.
  static func encodeResidual(
    actual: UnsafeRawBufferPointer, predicted: UnsafeRawBufferPointer, dtype: DType
  ) throws -> [UInt8] {
    switch dtype.byteCount {
    case 2: return try encode(actual, predicted, as: Int16.self)
    case 4: return try encode(actual, predicted, as: Int32.self)
    default: return try encode(actual, predicted, as: Int64.self)
    }
  }

  /// Adds a residual from `encodeResidual` to the predicted bytes in place; throws when the
  /// payload does not decode to one entry per element.
  static func applyResidual(_ payload: UnsafeRawBufferPointer, to bytes: UnsafeMutableRawBufferPointer, dtype: DType)
    throws
  {
    switch dtype.byteCount {
    case 2: try apply(payload, bytes, as: Int16.self)
    case 4: try apply(payload, bytes, as: Int32.self)
    default: try apply(payload, bytes, as: Int64.self)
    }
  }

  /// The ordered integer of a sign-magnitude float pattern (see `OrderedBits`), any width.
  @inline(__always)
  static func ordered<Word: FixedWidthInteger & SignedInteger>(_ s: Word) -> Word { s < 0 ? s ^ Word.max : s }

  /// Tag of the one payload layout: one signed byte per element, `escape` where the difference
  /// does not fit (an element near zero, whose ulp is tiny, can be thousands of ulps off), then
  /// those elements as (position, difference) pairs.
  static let bytesWithExceptions: UInt8 = 0x81
  static let escape = Int8.min

  private static func encode<Word: FixedWidthInteger & SignedInteger>(
    _ actual: UnsafeRawBufferPointer, _ predicted: UnsafeRawBufferPointer, as: Word.Type
  ) throws -> [UInt8] {
    let n = actual.count / MemoryLayout<Word>.size
    let a = actual.bindMemory(to: Word.self)
    let p = predicted.bindMemory(to: Word.self)
    var dense = [UInt8](repeating: 0, count: n)
    var exceptions: [UInt8] = []
    for i in 0..<n {
      let d = Int64(ordered(Word(littleEndian: a[i])) &- ordered(Word(littleEndian: p[i])))
      if d > Int64(Int8.min) && d <= Int64(Int8.max) {
        dense[i] = UInt8(bitPattern: Int8(d))
      } else {
        dense[i] = UInt8(bitPattern: escape)
        withUnsafeBytes(of: UInt64(i).littleEndian) { exceptions += $0 }
        withUnsafeBytes(of: d.littleEndian) { exceptions += $0 }
      }
    }
    // Level 1: on these byte streams it compresses better than 3 (2.98 against 3.31 bits per
    // element on a 19-state keyframe, 3.36 against 3.83 on a 41-state one), and faster.
    let compressor = try ZstdCompressor(level: 1)
    let denseFrame = try compressor.compress(dense)
    var out = [bytesWithExceptions]
    withUnsafeBytes(of: UInt64(exceptions.count / 16).littleEndian) { out += $0 }
    withUnsafeBytes(of: UInt64(denseFrame.count).littleEndian) { out += $0 }
    out += denseFrame
    if !exceptions.isEmpty { out += try compressor.compress(exceptions) }
    return out
  }

  private static func apply<Word: FixedWidthInteger & SignedInteger>(
    _ payload: UnsafeRawBufferPointer, _ bytes: UnsafeMutableRawBufferPointer, as: Word.Type
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: "keyframe", reason: reason) }
    let n = bytes.count / MemoryLayout<Word>.size
    guard payload.count >= 17, payload[0] == bytesWithExceptions else { throw corrupt("unknown layout") }
    let exceptionCount = payload.loadUnaligned(fromByteOffset: 1, as: UInt64.self).littleEndian
    let denseLength = payload.loadUnaligned(fromByteOffset: 9, as: UInt64.self).littleEndian
    guard exceptionCount <= UInt64(n), denseLength <= UInt64(payload.count - 17) else {
      throw corrupt("sizes past the file")
    }
    let denseEnd = 17 + Int(denseLength)
    let dense = UnsafeMutableRawBufferPointer.allocate(byteCount: n, alignment: 8)
    defer { dense.deallocate() }
    try Zstd.decompress(UnsafeRawBufferPointer(rebasing: payload[17..<denseEnd]), into: dense)
    let exceptions = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(exceptionCount) * 16, alignment: 8)
    defer { exceptions.deallocate() }
    if exceptionCount > 0 {
      try Zstd.decompress(UnsafeRawBufferPointer(rebasing: payload[denseEnd...]), into: exceptions)
    } else {
      guard denseEnd == payload.count else { throw corrupt("bytes after the payload") }
    }
    let x = bytes.bindMemory(to: Word.self)
    let d8 = dense.bindMemory(to: Int8.self)
    var next = 0
    for i in 0..<n {
      var d = Word(truncatingIfNeeded: d8[i])
      if d8[i] == escape {
        guard next < Int(exceptionCount),
          exceptions.load(fromByteOffset: 16 * next, as: UInt64.self).littleEndian == UInt64(i)
        else { throw corrupt("escape at \(i) without its exception") }
        d = Word(
          truncatingIfNeeded: Int64(littleEndian: exceptions.load(fromByteOffset: 16 * next + 8, as: Int64.self)))
        next += 1
      }
      // `ordered` is its own inverse.
      x[i] = ordered(ordered(Word(littleEndian: x[i])) &+ d).littleEndian
    }
    guard next == Int(exceptionCount) else { throw corrupt("\(Int(exceptionCount) - next) unused exceptions") }
  }

  /// A standalone keyframe: chunk count, then each chunk's length and its `FullTensorCodec` bytes.
  static func encodeStandalone(_ bytes: UnsafeRawBufferPointer, dtype: DType) throws -> [UInt8] {
    let chunks = try FullTensorCodec.encode(bytes, dtype: dtype, compressor: ZstdCompressor(level: 3))
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt32(chunks.count).littleEndian) { out += $0 }
    for chunk in chunks {
      withUnsafeBytes(of: UInt64(chunk.count).littleEndian) { out += $0 }
      out += chunk
    }
    return out
  }

  static func decodeStandalone(
    _ payload: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, dtype: DType
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: "keyframe", reason: reason) }
    var cursor = 0
    func read(_ count: Int) throws -> UInt64 {
      guard cursor + count <= payload.count else { throw corrupt("truncated") }
      var v: UInt64 = 0
      for k in 0..<count { v |= UInt64(payload[cursor + k]) << (8 * UInt64(k)) }
      cursor += count
      return v
    }
    let count = try read(4)
    guard count <= UInt64(payload.count) else { throw corrupt("chunk count \(count)") }
    var ranges: [Range<Int>] = []
    for _ in 0..<Int(count) {
      let length = try read(8)
      guard length <= UInt64(payload.count - cursor) else { throw corrupt("chunk past the end") }
      ranges.append(cursor..<(cursor + Int(length)))
      cursor += Int(length)
    }
    // Each chunk decompresses straight from the file's bytes (no copy of the payload).
    try FullTensorCodec.decode(chunkCount: ranges.count, dtype: dtype, into: destination) { i, sink in
      try sink(UnsafeRawBufferPointer(rebasing: payload[ranges[i]]))
    }
  }
}
