import DeltaStore
import Foundation

/// The payloads of keyframe files (`SnapshotCache`): a residual of ordered-integer differences
/// stored densely in the narrowest width that holds them, or a standalone copy of the bytes.
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

  /// `ordered(actual) − ordered(predicted)` per element, one width for all (1, 2, 4 or 8 bytes),
  /// zstd-compressed after a one-byte width tag.
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

  private static func encode<Word: FixedWidthInteger & SignedInteger>(
    _ actual: UnsafeRawBufferPointer, _ predicted: UnsafeRawBufferPointer, as: Word.Type
  ) throws -> [UInt8] {
    let n = actual.count / MemoryLayout<Word>.size
    let a = actual.bindMemory(to: Word.self)
    let p = predicted.bindMemory(to: Word.self)
    var magnitude: Word = 0
    for i in 0..<n {
      let d = ordered(Word(littleEndian: a[i])) &- ordered(Word(littleEndian: p[i]))
      magnitude = max(magnitude, d == Word.min ? Word.max : Swift.abs(d))
    }
    let width =
      [1, 2, 4].first { $0 < MemoryLayout<Word>.size && Int64(magnitude) < (Int64(1) << ($0 * 8 - 1)) }
      ?? MemoryLayout<Word>.size
    var raw = [UInt8](repeating: 0, count: n * width)
    raw.withUnsafeMutableBytes { out in
      for i in 0..<n {
        let d = Int64(ordered(Word(littleEndian: a[i])) &- ordered(Word(littleEndian: p[i])))
        switch width {
        case 1: out.storeBytes(of: Int8(truncatingIfNeeded: d), toByteOffset: i, as: Int8.self)
        case 2: out.storeBytes(of: Int16(truncatingIfNeeded: d).littleEndian, toByteOffset: 2 * i, as: Int16.self)
        case 4: out.storeBytes(of: Int32(truncatingIfNeeded: d).littleEndian, toByteOffset: 4 * i, as: Int32.self)
        default: out.storeBytes(of: d.littleEndian, toByteOffset: 8 * i, as: Int64.self)
        }
      }
    }
    let compressed = try ZstdCompressor(level: 3).compress(raw)
    return [UInt8(width)] + compressed
  }

  private static func apply<Word: FixedWidthInteger & SignedInteger>(
    _ payload: UnsafeRawBufferPointer, _ bytes: UnsafeMutableRawBufferPointer, as: Word.Type
  ) throws {
    let n = bytes.count / MemoryLayout<Word>.size
    guard let tag = payload.first, [1, 2, 4, 8].contains(Int(tag)), Int(tag) <= MemoryLayout<Word>.size else {
      throw DeltaStoreError.corruptBlob(kind: "keyframe", reason: "bad width tag")
    }
    let width = Int(tag)
    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: n * width, alignment: 8)
    defer { raw.deallocate() }
    try Zstd.decompress(UnsafeRawBufferPointer(rebasing: payload[1...]), into: raw)
    let x = bytes.bindMemory(to: Word.self)
    for i in 0..<n {
      let d: Word
      switch width {
      case 1: d = Word(truncatingIfNeeded: raw.load(fromByteOffset: i, as: Int8.self))
      case 2:
        d = Word(truncatingIfNeeded: Int16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
      case 4:
        d = Word(truncatingIfNeeded: Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
      default:
        d = Word(truncatingIfNeeded: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
      }
      // `ordered` is its own inverse.
      x[i] = ordered(ordered(Word(littleEndian: x[i])) &+ d).littleEndian
    }
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

  static func decodeStandalone(_ payload: [UInt8], into destination: UnsafeMutableRawBufferPointer, dtype: DType)
    throws
  {
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
    try FullTensorCodec.decode(
      chunkCount: ranges.count, chunk: { Array(payload[ranges[$0]]) }, into: destination, dtype: dtype)
  }
}
