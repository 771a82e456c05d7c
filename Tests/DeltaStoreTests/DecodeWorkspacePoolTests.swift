import DeltaStore
import Dispatch
import Synchronization
import TestSupport
import Testing

/// The decode workspace pool keeps at most its limit (the decoding threads), whatever was taken,
/// and hands out the best-fitting scratch; decodes sharing it stay exact.
@Suite struct DecodeWorkspacePoolTests {
  @Test func keepsAtMostItsLimitWhateverWasTakenAtOnce() {
    let pool = DecodeWorkspacePool(limit: 2)
    let taken = [100, 200, 300, 400, 500].map { pool.take(scratchByteCount: $0) }
    #expect(pool.keptCount == 0)
    for workspace in taken { pool.give(workspace) }
    #expect(pool.keptCount == 2)
    // The first two given back are kept; the others were freed.
    #expect(pool.keptByteCount == 100 + 200)
    pool.releaseKept()
    #expect(pool.keptCount == 0 && pool.keptByteCount == 0)
  }

  @Test func handsOutTheSmallestScratchThatFitsElseGrowsTheLargest() {
    let pool = DecodeWorkspacePool(limit: 3)
    let small = pool.take(scratchByteCount: 200)
    let large = pool.take(scratchByteCount: 1000)
    pool.give(small)
    pool.give(large)
    let fitting = pool.take(scratchByteCount: 150)
    #expect(fitting === small)
    pool.give(fitting)
    // None fits: the largest is grown (not a third kept beside it).
    let grown = pool.take(scratchByteCount: 4000)
    #expect(grown === large)
    pool.give(grown)
    #expect(pool.keptCount == 2)
    #expect(pool.keptByteCount == 200 + 4000)
  }

  @Test func concurrentDecodesSharingAPoolAreExactAndItStaysWithinItsLimit() throws {
    var rng = SplitMix64(seed: 11)
    let chunkByteCount = 4096
    // bf16-like words over five chunks, the last one short.
    let raw = (0..<(chunkByteCount * 4 + 1234) / 2).flatMap { _ -> [UInt8] in
      [UInt8(truncatingIfNeeded: rng.next()), UInt8(0x3C + rng.next() % 3)]
    }
    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode(
        $0, dtype: .bf16, chunkByteCount: chunkByteCount, encoding: .planes, compressor: ZstdCompressor(level: 1))
    }
    #expect(chunks.count == 5)
    let pool = DecodeWorkspacePool(limit: 2)
    let wrong = Mutex(0)
    DispatchQueue.concurrentPerform(iterations: 8) { _ in
      var out = [UInt8](repeating: 0, count: raw.count)
      let decoded: Void? = try? out.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decode(
          chunkCount: chunks.count, dtype: .bf16, chunkByteCount: chunkByteCount, encoding: .planes, tensor: "w",
          into: destination, workspaces: pool
        ) { i, sink in try chunks[i].withUnsafeBytes(sink) }
      }
      if decoded == nil || out != raw { wrong.withLock { $0 += 1 } }
      #expect(pool.keptCount <= 2)
    }
    #expect(wrong.withLock { $0 } == 0)
    #expect(pool.keptCount >= 1 && pool.keptCount <= 2)
  }
}
