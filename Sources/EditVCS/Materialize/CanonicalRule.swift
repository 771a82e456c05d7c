import Apply
import DeltaStore
import Foundation

/// The canonical reconstruction rule of docs/FORMAT.md, for tests and tools that check it.
package enum CanonicalRule {
  /// `raw = round_dtype(raw + U·Vᵀ)` in place (raw: rows×cols elements of `dtype`).
  /// - Parameter generalPathOnly: skip the fused F32 rank-one kernel (to check they agree).
  package static func apply(
    to raw: UnsafeMutableRawBufferPointer, dtype: DType, rows: Int, cols: Int, u: [Float], v: [Float], rank: Int,
    generalPathOnly: Bool = false
  ) throws {
    try u.withUnsafeBufferPointer { up in
      try v.withUnsafeBufferPointer { vp in
        try TensorMath.addLowRankCanonical(
          raw, dtype: dtype, rows: rows, cols: cols, u: up, v: vp, rank: rank, allowFastPath: !generalPathOnly)
      }
    }
  }
}
