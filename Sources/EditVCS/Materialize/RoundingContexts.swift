import Apply
import DeltaStore

/// The rounding contexts of an F32 low-rank state (`CanonicalRule.roundingContexts`): what a
/// conditioned residual is encoded at commit and decoded at checkout against, computed alike
/// from the parent's bytes and the state's factors.
enum RoundingContexts {
  /// One context byte per element of the `rows × cols` F32 `parent`.
  static func compute(parent: [UInt8], rows: Int, cols: Int, u: [Float], v: [Float], rank: Int) -> [UInt8] {
    let count = rows * cols
    return [UInt8](unsafeUninitializedCapacity: count) { codes, initialized in
      parent.withUnsafeBytes { parent in
        u.withUnsafeBufferPointer { u in
          v.withUnsafeBufferPointer { v in
            CanonicalRule.roundingContexts(
              parent: parent, rows: rows, cols: cols, u: u, v: v, rank: rank, into: codes)
          }
        }
      }
      initialized = count
    }
  }

  /// Runs `body` with `codes` as the codec's `ResidualContexts` (nil stays nil).
  static func with<T>(_ codes: [UInt8]?, _ body: (ResidualContexts?) throws -> T) rethrows -> T {
    guard let codes else { return try body(nil) }
    return try codes.withUnsafeBufferPointer {
      try body(ResidualContexts(codes: $0, bucketCount: CanonicalRule.roundingContextBucketCount))
    }
  }
}
