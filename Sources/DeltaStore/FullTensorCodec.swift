/// Stores a whole tensor as independent chunks, each byte-shuffled and zstd-compressed.
///
/// Chunks bound the memory one step needs (≤ `chunkByteCount` raw bytes each) and let a caller
/// stream them from storage one at a time.
public enum FullTensorCodec {
  /// The default raw bytes per chunk: 64 MiB.
  public static let defaultChunkByteCount = 64 << 20

  /// The raw byte ranges of the chunks of a `byteCount`-byte tensor.
  ///
  /// Chunks hold whole elements, so `chunkByteCount` is rounded down to a multiple of the
  /// element size (at least one element).
  public static func chunkRanges(byteCount: Int, dtype: DType, chunkByteCount: Int) -> [Range<Int>]
  {
    let width = dtype.byteCount ?? 1
    let step = max(width, chunkByteCount / width * width)
    return stride(from: 0, to: byteCount, by: step).map { $0..<min(byteCount, $0 + step) }
  }

  /// Encodes `raw` as shuffled, compressed chunks.
  ///
  /// - Throws: `DeltaStoreError.zstd`.
  public static func encode(
    _ raw: UnsafeRawBufferPointer, dtype: DType, chunkByteCount: Int = defaultChunkByteCount,
    compressor: ZstdCompressor
  ) throws -> [[UInt8]] {
    let width = dtype.byteCount ?? 1
    var chunks: [[UInt8]] = []
    var scratch = [UInt8](repeating: 0, count: min(raw.count, max(width, chunkByteCount)))
    for range in chunkRanges(byteCount: raw.count, dtype: dtype, chunkByteCount: chunkByteCount) {
      try scratch.withUnsafeMutableBytes { buffer in
        let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<range.count])
        ByteShuffle.shuffle(
          UnsafeRawBufferPointer(rebasing: raw[range]), into: slice, elementByteCount: width)
        chunks.append(try compressor.compress(UnsafeRawBufferPointer(slice)))
      }
    }
    return chunks
  }

  /// Decodes chunks produced by `encode` into `destination`, which sets the expected size.
  ///
  /// - Parameters:
  ///   - chunkCount: The number of chunks the caller has; must match the size.
  ///   - chunk: Returns chunk `i` (e.g. read from storage on demand).
  ///   - destination: The tensor's bytes; its size comes from the caller's manifest.
  ///   - chunkByteCount: The value used when encoding.
  /// - Throws: `.corruptBlob` on a wrong chunk count, zstd errors on a wrong chunk size.
  public static func decode(
    chunkCount: Int, chunk: (Int) throws -> [UInt8],
    into destination: UnsafeMutableRawBufferPointer,
    dtype: DType, chunkByteCount: Int = defaultChunkByteCount
  ) throws {
    let width = dtype.byteCount ?? 1
    let ranges = chunkRanges(
      byteCount: destination.count, dtype: dtype, chunkByteCount: chunkByteCount)
    guard ranges.count == chunkCount else {
      throw DeltaStoreError.corruptBlob(
        kind: "tensor", reason: "\(chunkCount) chunks, expected \(ranges.count)")
    }
    var scratch = [UInt8](repeating: 0, count: ranges.first?.count ?? 0)
    for (i, range) in ranges.enumerated() {
      let compressed = try chunk(i)
      try scratch.withUnsafeMutableBytes { buffer in
        let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<range.count])
        try compressed.withUnsafeBytes { try Zstd.decompress($0, into: slice) }
        ByteShuffle.unshuffle(
          UnsafeRawBufferPointer(slice),
          into: UnsafeMutableRawBufferPointer(rebasing: destination[range]),
          elementByteCount: width)
      }
    }
  }

  /// Decodes an array of chunks into `destination`.
  public static func decode(
    chunks: [[UInt8]], into destination: UnsafeMutableRawBufferPointer, dtype: DType,
    chunkByteCount: Int = defaultChunkByteCount
  ) throws {
    try decode(
      chunkCount: chunks.count, chunk: { chunks[$0] }, into: destination, dtype: dtype,
      chunkByteCount: chunkByteCount)
  }
}

/// Stores a Float32 factor matrix (U or V of a delta) as raw little-endian Float32 plus zstd.
public enum FactorCodec {
  /// Compresses `values`.
  ///
  /// - Throws: `DeltaStoreError.zstd`.
  public static func encode(_ values: UnsafeBufferPointer<Float>, compressor: ZstdCompressor) throws
    -> [UInt8]
  {
    #if _endian(big)
      let le = values.map { $0.bitPattern.littleEndian }
      return try le.withUnsafeBytes { try compressor.compress($0) }
    #else
      return try compressor.compress(UnsafeRawBufferPointer(values))
    #endif
  }

  /// Decompresses a factor of exactly `elementCount` values.
  ///
  /// - Throws: `.zstdContentSizeMismatch` when the blob holds another count, or zstd errors.
  public static func decode(_ blob: UnsafeRawBufferPointer, elementCount: Int) throws -> [Float] {
    let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: 4)
    guard elementCount >= 0, !overflow else {
      throw DeltaStoreError.corruptBlob(kind: "factor", reason: "element count \(elementCount)")
    }
    var values = [Float](repeating: 0, count: elementCount)
    try values.withUnsafeMutableBytes { dst in
      precondition(dst.count == byteCount)
      try Zstd.decompress(blob, into: dst)
    }
    #if _endian(big)
      for i in values.indices {
        values[i] = Float(bitPattern: UInt32(littleEndian: values[i].bitPattern))
      }
    #endif
    return values
  }
}
