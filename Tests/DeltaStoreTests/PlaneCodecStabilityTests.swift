import DeltaStore
import Foundation
import TestSupport
import Testing

/// Chunk encoding 2's bitstream is a stored format: the faster coders (interleaved rANS blocks,
/// reciprocal division, reused buffers) must write exactly the bytes the first encoding-2 writer
/// wrote, and read those bytes back.
///
/// The hashes were recorded with the writer before that work (commit f9965e4's `mvc init` of a
/// safetensors file holding these two tensors; each chunk blob then wrapped as a U8 tensor and
/// hashed by `mvc init` again): a bf16 tensor whose exponent plane is rANS-coded in 5 blocks (4
/// coded interleaved, 1 shorter alone) and whose low plane is Huffman-coded, the first 700,000
/// of its elements (3 blocks, coded interleaved with a padding copy), and an f32 tensor with 2
/// rANS blocks (coded one after the other) and three Huffman planes.
@Suite struct PlaneCodecStabilityTests {
  /// Exponents 120 + popcount of 6 random bits, a random sign, one random mantissa bit: a
  /// 32-bit linear congruential generator, the same as the Python that wrote the recorded file.
  static func tensor(_ dtype: DType, count: Int) -> [UInt8] {
    var s: UInt32 = 15
    var bytes: [UInt8] = []
    for _ in 0..<count {
      s = s &* 1_664_525 &+ 1_013_904_223
      let exponent = 120 + UInt32((s >> 16 & 0x3F).nonzeroBitCount)
      if dtype == .bf16 {
        let bits = UInt16((s >> 31) << 15 | exponent << 7 | (s >> 8) & 1)
        bytes += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8)]
      } else {
        let bits = (s >> 31) << 31 | exponent << 23 | ((s >> 8) & 3) << 16
        for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * k))) }
      }
    }
    return bytes
  }

  /// (dtype, elements, hash of the tensor, hash and size of its one chunk as the old writer wrote it).
  static let recorded: [(DType, Int, String, String, Int)] = [
    (
      .bf16, 1_100_000, "xxh3-128:c01234d296336ec5fbb12d9091d68a20", "xxh3-128:5391c6d59fe9213f0a17c03770d4ec97",
      596_234
    ),
    (.bf16, 700_000, "xxh3-128:81ddfb065f4bb4b91a1ed8b27b37d579", "xxh3-128:a312b15aee7f09c5b0f45e893e790ba6", 379_312),
    (.f32, 300_001, "xxh3-128:5cad78b7faf279fc21ca943f54a8d06a", "xxh3-128:e59bc808edffaafb1b12b46279a1f56c", 237_965),
  ]

  @Test func encoderWritesTheBytesOfTheFirstEncoding2WriterAndReadsThem() throws {
    for (dtype, count, tensorHash, chunkHash, chunkSize) in Self.recorded {
      let raw = Self.tensor(dtype, count: count)
      #expect(raw.withUnsafeBytes { ContentHash.of($0).description } == tensorHash, "\(dtype) input generator")
      let (chunks, out) = try PlaneCodecTests.roundTrip(
        raw, dtype: dtype, chunkByteCount: FullTensorCodec.defaultChunkByteCount)
      #expect(chunks.count == 1)
      #expect(chunks[0].count == chunkSize, "\(dtype) chunk size")
      #expect(chunks[0].withUnsafeBytes { ContentHash.of($0).description } == chunkHash, "\(dtype) bitstream changed")
      #expect(out == raw, "\(dtype) round trip")
    }
  }

  /// One encoder and the pooled decoding buffers reused for many chunks of different types,
  /// sizes and contents (large then small, so a stale longer buffer would show) give each chunk
  /// the bytes a fresh `FullTensorCodec.encode` gives, and decode each back.
  @Test func reusedBuffersCarryNothingBetweenChunks() throws {
    let encoder = PlaneChunkEncoder(compressor: try ZstdCompressor(level: 1))
    var rng = SplitMix64(seed: 4)
    let sizes = [100_000, 1000, 40_001, 3, 0, 90_000, 17, 5000]
    for (round, count) in sizes.enumerated() {
      let dtype: DType = [.bf16, .f32, .f16, .u8][round % 4]
      var raw = PlaneCodecTests.weights(dtype == .u8 ? .bf16 : dtype, count: count, seed: rng.next())
      if round == 5 { raw = [UInt8](repeating: 0x3C, count: raw.count) }
      let fresh = try raw.withUnsafeBytes {
        try FullTensorCodec.encode(
          $0, dtype: dtype, chunkByteCount: 1 << 24, encoding: .planes, compressor: ZstdCompressor(level: 1))
      }
      let reused = try raw.withUnsafeBytes { try encoder.encode($0, dtype: dtype) { Array($0) } }
      #expect(fresh.count == (raw.isEmpty ? 0 : 1))
      if let first = fresh.first { #expect(reused == first, "round \(round): \(dtype), \(raw.count) bytes") }
      var out = [UInt8](repeating: 0xEE, count: raw.count)
      try out.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decode(
          chunkCount: fresh.count, dtype: dtype, chunkByteCount: 1 << 24, encoding: .planes, tensor: "w",
          into: destination
        ) { _, sink in try reused.withUnsafeBytes { try sink($0) } }
      }
      #expect(out == raw, "round \(round) decoded")
    }
  }
}
