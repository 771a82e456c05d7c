import DeltaStore
import Foundation
import TestSupport
import Testing

/// The base store's bytes are a stored format: speeding the encoder or the decoder up must not
/// change a byte. Fixed-seed Gaussian bf16 / fp16 / fp32 weights (every special value mixed in,
/// `PlaneCodecTests.weights`) in one and in several chunks, both chunk encodings; the digests
/// were recorded with the encoder before the codec-speed work (main at 95ce2f3).
@Suite struct BaseCodecGoldenTests {
  /// (dtype, elements, seed, chunk bytes, encoding, hash of every chunk concatenated, total
  /// stored bytes, the plane methods used across the chunks (encoding 2)).
  static let recorded: [(DType, Int, UInt64, Int, ChunkEncoding, String, Int, Set<UInt8>)] = [
    (.bf16, 1_500_000, 21, 64 << 20, .planes, "xxh3-128:484a99b14e1a93e31115a2e65908ca36", 1_985_104, [2, 3]),
    (.f16, 600_000, 22, 1 << 20, .planes, "xxh3-128:c6dd25714774a439962fbc6cec55913b", 1_012_370, [0, 1, 2]),
    (.f32, 700_000, 23, 1 << 21, .planes, "xxh3-128:3eccee46534f31c970dde04b80cca3a2", 2_320_075, [0, 2, 3]),
    (.bf16, 5_000, 24, 4096, .planes, "xxh3-128:1f75e4dd4f28b195ae8456f65ebf4c83", 7077, [0, 2]),
    (.f32, 300_000, 25, 1 << 20, .shuffledZstd, "xxh3-128:169abc616e940fadd7032352ff3850a9", 1_019_450, []),
    (.bf16, 300_000, 26, 1 << 19, .shuffledZstd, "xxh3-128:8bd8bc61392599a2225e53accaf45c95", 418_520, []),
  ]

  @Test func encodersWriteTheRecordedBytesAndDecodeThem() throws {
    for (dtype, count, seed, chunkBytes, encoding, hash, size, methods) in Self.recorded {
      let raw = PlaneCodecTests.weights(dtype, count: count, seed: seed)
      let chunks = try raw.withUnsafeBytes {
        try FullTensorCodec.encode(
          $0, dtype: dtype, chunkByteCount: chunkBytes, encoding: encoding, compressor: ZstdCompressor(level: 1))
      }
      let joined = chunks.flatMap { $0 }
      let what = "\(dtype) \(count) elements, chunks of \(chunkBytes) B, encoding \(encoding.rawValue)"
      var used = Set<UInt8>()
      if encoding == .planes {
        let width = dtype.byteCount ?? 1
        for chunk in chunks { for k in 0..<width { used.insert(chunk[4 + 5 * k]) } }
      }
      #expect(joined.withUnsafeBytes { ContentHash.of($0).description } == hash, "\(what): bytes changed")
      #expect(joined.count == size, "\(what): size")
      #expect(used == methods, "\(what): plane methods")
      var out = [UInt8](repeating: 0xAA, count: raw.count)
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(
          chunks: chunks, into: $0, dtype: dtype, chunkByteCount: chunkBytes, encoding: encoding, tensor: "w")
      }
      #expect(out == raw, "\(what): round trip")
    }
  }
}
