import Apply
import DeltaStore

/// The rounding contexts of an F32 low-rank state (`CanonicalRule.roundingContexts`): what a
/// conditioned residual is encoded at commit and decoded at checkout against, computed alike
/// from the parent's bytes and the state's factors.
enum RoundingContexts {
  /// One context byte per element of the `rows × cols` F32 `parent`, rows cut into parts on up to
  /// `workers` threads (each element's byte depends on its own values alone: the same bytes for
  /// any count).
  static func compute(
    parent: [UInt8], rows: Int, cols: Int, u: [Float], v: [Float], rank: Int, workers: Int
  ) -> [UInt8] {
    let count = rows * cols
    precondition(parent.count == count * 4 && u.count == rows * rank && v.count == cols * rank)
    // Parts of at least 64K elements: a thread costs more than fewer.
    let parts = ParallelParts.ranges(rows, parts: workers, minimum: max(1, (1 << 16) / max(cols, 1)))
    return [UInt8](unsafeUninitializedCapacity: count) { codes, initialized in
      parent.withUnsafeBytes { parent in
        u.withUnsafeBufferPointer { u in
          v.withUnsafeBufferPointer { v in
            nonisolated(unsafe) let (parent, u, v, codes) = (parent, u, v, codes)
            ParallelParts.run(parts.count, workers: workers) { part in
              let rows = parts[part]
              CanonicalRule.roundingContexts(
                parent: UnsafeRawBufferPointer(
                  rebasing: parent[(rows.lowerBound * cols * 4)..<(rows.upperBound * cols * 4)]),
                rows: rows.count, cols: cols,
                u: UnsafeBufferPointer(rebasing: u[(rows.lowerBound * rank)..<(rows.upperBound * rank)]), v: v,
                rank: rank,
                into: UnsafeMutableBufferPointer(rebasing: codes[(rows.lowerBound * cols)..<(rows.upperBound * cols)]))
            }
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
