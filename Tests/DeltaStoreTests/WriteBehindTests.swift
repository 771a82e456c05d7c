import DeltaStore
import Foundation
import TestSupport
import Testing

/// Write-behind (`AtomicFileWriter(writeBehind:)`) changes where pages live, never the bytes:
/// pieces written in any order, adjacent or not, with ranges dropped from the page cache as the
/// window fills, read back exactly.
@Suite struct WriteBehindTests {
  @Test(arguments: [0, 64 << 10, 1 << 30])
  func bytesAreExactWhateverTheWindow(window: Int) throws {
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("model.safetensors")
      var rng = SplitMix64(seed: UInt64(window))
      let payload = randomBytes(1 << 20, &rng)
      let piece = 48 << 10
      // Offsets shuffled: adjacent writes (merged ranges) and jumps both occur.
      var starts = Array(stride(from: 0, to: payload.count, by: piece))
      for i in stride(from: starts.count - 1, to: 0, by: -1) where i % 3 == 0 {
        starts.swapAt(i, Int(rng.next() % UInt64(i + 1)))
      }
      let writer = try AtomicFileWriter(path: target.path, byteCount: payload.count, writeBehind: window)
      try payload.withUnsafeBytes { all in
        for start in starts {
          try writer.write(UnsafeRawBufferPointer(rebasing: all[start..<min(all.count, start + piece)]), at: start)
        }
      }
      try writer.commit(durable: false)
      #expect(try [UInt8](Data(contentsOf: target)) == payload)
    }
  }
}
