import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import DeltaStore

/// One chunk of a complete state decoded by several threads at once (raw planes copied and rANS
/// groups decoded a part each, planes interleaved by element ranges): the bytes, and the error
/// for a damaged chunk, are those of one thread.
@Suite struct ParallelDecodeTests {
  /// `raw` (one chunk) encoded, then decoded with `workers` threads.
  private func decoded(_ chunk: [UInt8], dtype: DType, byteCount: Int, workers: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0xA5, count: byteCount)
    try out.withUnsafeMutableBytes { destination in
      try FullTensorCodec.decode(
        chunkCount: 1, chunk: { _ in chunk }, into: destination, dtype: dtype, chunkByteCount: byteCount,
        encoding: .planes, tensor: "w", workers: workers)
    }
    return out
  }

  /// Weights of `dtype` and their encoding as one chunk.
  private static func encoded(_ dtype: DType, count: Int) throws -> (raw: [UInt8], chunks: [[UInt8]]) {
    let raw = PlaneCodecTests.weights(dtype, count: count, seed: 21)
    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode(
        $0, dtype: dtype, chunkByteCount: raw.count, encoding: .planes, compressor: ZstdCompressor(level: 1))
    }
    return (raw, chunks)
  }

  /// 7 rANS blocks of bf16, shared by two tests.
  private static let bf16 = Result { try encoded(.bf16, count: 7 << 18) }

  /// Plane `k`'s method and byte range in an encoding-2 chunk.
  private func plane(_ k: Int, of chunk: [UInt8]) -> (method: UInt8, range: Range<Int>) {
    var offset = 4 + 5 * Int(chunk[3])
    for p in 0...k {
      let size = (0..<4).reduce(0) { $0 | Int(chunk[5 + 5 * p + $1]) << (8 * $1) }
      if p == k { return (chunk[4 + 5 * p], offset..<(offset + size)) }
      offset += size
    }
    return (0, 0..<0)
  }

  /// bf16 with 7 rANS blocks (a group of four and a padded group of three), f32 with 5 (two
  /// groups), f16 with a Huffman plane: every worker count gives the bytes back.
  @Test(arguments: [(DType.bf16, 7 << 18), (.f32, 4 << 18 + 3), (.f16, 1 << 18 + 1)])
  func everyWorkerCountGivesTheBytesBack(dtype: DType, count: Int) throws {
    let (raw, chunk) = try dtype == .bf16 ? Self.bf16.get() : Self.encoded(dtype, count: count)
    #expect(chunk.count == 1)
    let methods = (0..<(dtype.byteCount ?? 1)).map { plane($0, of: chunk[0]).method }
    // f16's exponent plane is Huffman-coded: a whole plane per thread.
    #expect(methods.contains(dtype == .f16 ? 2 : 3), "\(methods)")
    for workers in [1, 2, 3, 8] {
      #expect(try decoded(chunk[0], dtype: dtype, byteCount: raw.count, workers: workers) == raw, "\(workers) workers")
    }
  }

  /// A byte flipped in one rANS group's payload or in two: the same error (the lowest damaged
  /// block's) whatever the number of workers.
  @Test func aDamagedChunkFailsAlikeOnOneOrSeveralThreads() throws {
    let (raw, chunks) = try Self.bf16.get()
    let chunk = chunks[0]
    let exponents = plane(1, of: chunk)
    #expect(exponents.method == 3)
    func failure(_ bytes: [UInt8], workers: Int) -> String? {
      do {
        _ = try decoded(bytes, dtype: .bf16, byteCount: raw.count, workers: workers)
        return nil
      } catch {
        return error.localizedDescription
      }
    }
    var damaged: [[UInt8]] = []
    for at in [exponents.range.count * 3 / 4, exponents.range.count - 3, exponents.range.count / 5] {
      var bad = chunk
      bad[exponents.range.lowerBound + at] ^= 0x5A
      damaged.append(bad)
    }
    var both = chunk
    both[exponents.range.lowerBound + exponents.range.count / 5] ^= 0x11
    both[exponents.range.lowerBound + exponents.range.count - 3] ^= 0x11
    damaged.append(both)
    for bad in damaged {
      let one = try #require(failure(bad, workers: 1))
      #expect(one.contains("'w' chunk 0 plane 1"))
      for workers in [2, 3] { #expect(failure(bad, workers: workers) == one) }
    }
  }

  @Test func partsReportTheLowestFailingPartAndCoverEveryIndex() throws {
    struct Failed: Error, Equatable { var part: Int }
    for workers in [1, 2, 4] {
      #expect(throws: Failed(part: 3)) {
        try ParallelParts.run(40, workers: workers) { part in
          if part == 3 || part == 17 { throw Failed(part: part) }
        }
      }
      var seen = [Int](repeating: 0, count: 1000)
      seen.withUnsafeMutableBufferPointer { buffer in
        nonisolated(unsafe) let seen = buffer
        ParallelParts.run(1000, workers: workers) { seen[$0] += 1 }
      }
      #expect(seen.allSatisfy { $0 == 1 })
    }
    #expect(ParallelParts.ranges(10, parts: 3) == [0..<4, 4..<7, 7..<10])
    #expect(ParallelParts.ranges(2, parts: 5) == [0..<1, 1..<2])
    #expect(ParallelParts.ranges(0, parts: 2) == [0..<0])
  }

  /// F16 decoded by its fast loop: every one of the 65,536 patterns gives the bits of
  /// `Double(Float16(bitPattern:))` (NaN payloads included).
  @Test func f16DecodesEveryPatternAsTheLibraryDoes() {
    let patterns = (0...UInt16.max).flatMap { [UInt8(truncatingIfNeeded: $0), UInt8(truncatingIfNeeded: $0 >> 8)] }
    var decoded = [Double](repeating: 0, count: 1 << 16)
    patterns.withUnsafeBytes { raw in
      decoded.withUnsafeMutableBufferPointer {
        FloatConversion.decode(raw, dtype: .f16, elements: 0..<(1 << 16), into: $0)
      }
    }
    let expected = (0...UInt16.max).map { Double(Float16(bitPattern: $0)).bitPattern }
    #expect(decoded.map(\.bitPattern) == expected)
  }
}
