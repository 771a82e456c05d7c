import DeltaStore
import Foundation
import TestSupport
import Testing

/// Chunk encoding 2 (exponent-aligned byte planes, raw / zstd / Huffman / rANS per plane).
@Suite struct PlaneCodecTests {
  /// Gaussian weights with every special value mixed in: ±0, ±inf, NaNs with payloads,
  /// denormals, the largest finite values, in the bit patterns of `dtype`.
  static func weights(_ dtype: DType, count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    let floats = rng.gaussianArray(count: count, scale: 0.02)
    var bytes: [UInt8] = []
    let specials32: [UInt32] = [
      0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0001, 0xFFA0_1234, 0x0000_0001, 0x807F_FFFF, 0x7F7F_FFFF,
    ]
    let specials16: [UInt16] = [0, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFD55, 0x0001, 0x83FF, 0x7BFF]
    let specialsBF16: [UInt16] = [0, 0x8000, 0x7F80, 0xFF80, 0x7FC1, 0xFFA5, 0x0001, 0x807F, 0x7F7F]
    for (i, x) in floats.enumerated() {
      let special = i % 97 == 0 ? (i / 97) % 9 : nil
      switch dtype {
      case .f32:
        let bits = special.map { specials32[$0] } ?? x.bitPattern
        for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * k))) }
      case .f16:
        let bits = special.map { specials16[$0] } ?? f16Bits(x)
        bytes += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
      default:
        let bits = special.map { specialsBF16[$0] } ?? bf16Bits(x)
        bytes += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
      }
    }
    return bytes
  }

  static func roundTrip(_ raw: [UInt8], dtype: DType, chunkByteCount: Int) throws -> (chunks: [[UInt8]], out: [UInt8]) {
    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode(
        $0, dtype: dtype, chunkByteCount: chunkByteCount, encoding: .planes, compressor: ZstdCompressor(level: 1))
    }
    var out = [UInt8](repeating: 0xAA, count: raw.count)
    try out.withUnsafeMutableBytes {
      try FullTensorCodec.decode(
        chunks: chunks, into: $0, dtype: dtype, chunkByteCount: chunkByteCount, encoding: .planes, tensor: "w")
    }
    return (chunks, out)
  }

  @Test(arguments: [DType.f32, .bf16, .f16])
  func roundTripsEveryBitPatternAndCompresses(dtype: DType) throws {
    let raw = Self.weights(dtype, count: 50_003, seed: 3)
    for chunkByteCount in [4096, 1 << 20] {
      let (chunks, out) = try Self.roundTrip(raw, dtype: dtype, chunkByteCount: chunkByteCount)
      #expect(out == raw, "\(dtype) chunks of \(chunkByteCount)")
      // Streaming form (pieces of 1,000 bytes) gives the same bytes.
      var streamed = [UInt8](repeating: 0x55, count: raw.count)
      try streamed.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decode(
          chunkCount: chunks.count, dtype: dtype, chunkByteCount: chunkByteCount, encoding: .planes, tensor: "w",
          into: destination
        ) { i, sink in
          try chunks[i].withUnsafeBytes { blob in
            for start in stride(from: 0, to: blob.count, by: 1000) {
              try sink(UnsafeRawBufferPointer(rebasing: blob[start..<min(blob.count, start + 1000)]))
            }
          }
        }
      }
      #expect(streamed == raw)
      if chunkByteCount > 4096 {
        // The exponent plane is Huffman-coded: fewer bytes than byte-shuffled zstd.
        let old = try raw.withUnsafeBytes {
          try FullTensorCodec.encode(
            $0, dtype: dtype, chunkByteCount: chunkByteCount, compressor: ZstdCompressor(level: 1))
        }
        let newSize = chunks.map(\.count).reduce(0, +)
        let oldSize = old.map(\.count).reduce(0, +)
        #expect(newSize < oldSize, "\(dtype): \(newSize) bytes against \(oldSize) shuffled+zstd")
        // bf16's and fp32's exponent plane (the last) is entropy-coded: Huffman (2) or rANS (3).
        let width = chunks[0][1]
        if dtype != .f16 {
          #expect([2, 3].contains(chunks[0][4 + 5 * Int(width - 1)]), "method of the exponent plane")
        }
      }
    }
  }

  @Test func constantAndIntegerTensorsRoundTrip() throws {
    for (dtype, raw) in [
      (DType.f32, [UInt8](repeating: 0, count: 4000)), (.bf16, [UInt8](repeating: 0x3F, count: 2002)),
      (.i32, (0..<4000).map { UInt8(truncatingIfNeeded: $0 * 7) }), (.u8, (0..<777).map { UInt8($0 % 3) }),
      (.f64, Self.weights(.f32, count: 1000, seed: 9)),
    ] {
      #expect(try Self.roundTrip(raw, dtype: dtype, chunkByteCount: 1 << 20).out == raw, "\(dtype)")
    }
  }

  /// Version-1 chunks (shuffled zstd) still decode: the encoding is the reader's choice, from
  /// the state's `chunk_encoding`.
  @Test func shuffledZstdChunksStillDecode() throws {
    let raw = Self.weights(.bf16, count: 4000, seed: 5)
    let old = try raw.withUnsafeBytes {
      try FullTensorCodec.encode($0, dtype: .bf16, chunkByteCount: 4096, compressor: ZstdCompressor(level: 1))
    }
    var out = [UInt8](repeating: 0, count: raw.count)
    try out.withUnsafeMutableBytes {
      try FullTensorCodec.decode(chunks: old, into: $0, dtype: .bf16, chunkByteCount: 4096, encoding: .shuffledZstd)
    }
    #expect(out == raw)
    // Read as encoding 2, a zstd frame is refused by its first byte, naming the tensor.
    let error = #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(
          chunks: old, into: $0, dtype: .bf16, chunkByteCount: 4096, encoding: .planes, tensor: "blk.0.w")
      }
    }
    #expect(error?.localizedDescription.contains("blk.0.w") == true)
  }

  /// Every truncation and many byte flips of a chunk are refused with an error naming the
  /// tensor, or (a flip inside a raw plane) decode to other bytes, never crash.
  @Test func corruptedAndTruncatedChunksAreRefusedNamingTheTensor() throws {
    let raw = Self.weights(.f32, count: 3000, seed: 8)
    let (chunks, _) = try Self.roundTrip(raw, dtype: .f32, chunkByteCount: 1 << 20)
    let blob = chunks[0]
    func decode(_ bytes: [UInt8]) throws -> [UInt8] {
      var out = [UInt8](repeating: 0, count: raw.count)
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(
          chunks: [bytes], into: $0, dtype: .f32, chunkByteCount: 1 << 20, encoding: .planes, tensor: "layer.7.w")
      }
      return out
    }
    for length in [0, 1, 4, 23, 24, 100, blob.count / 2, blob.count - 9, blob.count - 1] {
      let error = #expect(throws: DeltaStoreError.self) { try decode(Array(blob.prefix(length))) }
      #expect(error?.localizedDescription.contains("layer.7.w") == true, "truncated to \(length)")
    }
    let extended = blob + [0]
    #expect(throws: DeltaStoreError.self) { try decode(extended) }
    var rng = SplitMix64(seed: 1)
    var refused = 0
    for _ in 0..<300 {
      var bad = blob
      let at = Int(rng.next() % UInt64(bad.count))
      bad[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
      do {
        let out = try decode(bad)
        #expect(out.count == raw.count)
      } catch let error as DeltaStoreError {
        refused += 1
        #expect(error.localizedDescription.contains("layer.7.w"))
      }
    }
    #expect(refused > 0)
    // Header fields: another version, width or method.
    for (index, value) in [(0, UInt8(1)), (1, UInt8(2)), (2, UInt8(0)), (4, UInt8(9))] {
      var bad = blob
      bad[index] = value
      #expect(throws: DeltaStoreError.self) { try decode(bad) }
    }
  }
}
