import Apply
import DeltaStore

extension EditRepository {
  /// The largest rank whose factors are refined against the rounding intervals: each rank costs
  /// a pass over the tensor per half-sweep, and large ranks are batches, recovered well enough by
  /// the rank finder (their deltas dwarf the rounding).
  static let refinedRankLimit = 8

  /// The rank finder's factors of `committed − parent`, moved so that the canonical rule rounds
  /// to the committed bytes almost everywhere (``Factorization/refineAgainstRounding``): for a
  /// bf16 edit the residual falls from about one element in ten to a few in ten thousand. Other
  /// dtypes (F64), rank 0 and ranks above ``refinedRankLimit`` come back as they are.
  func refinedAgainstRounding(
    _ factors: LowRankFactors, name: String, dtype: DType, rows: Int, cols: Int, committed: [UInt8], parent: [UInt8]
  ) -> LowRankFactors {
    guard [.f32, .f16, .bf16].contains(dtype), (1...Self.refinedRankLimit).contains(factors.rank) else {
      return factors
    }
    return committed.withUnsafeBytes { new in
      parent.withUnsafeBytes { old in
        let (refined, report) = timed("refine factors of '\(name)'") {
          Factorization.refineAgainstRounding(
            factors, rows: rows, cols: cols, workers: environment.workerThreads
          ) {
            row, columns, lo, hi in
            FloatConversion.roundingIntervals(
              new: new, old: old, dtype: dtype,
              elements: (row * cols + columns.lowerBound)..<(row * cols + columns.upperBound), lo: lo, hi: hi)
          }
        }
        environment.tracePerformance?(
          "refinement of '\(name)': elements outside their interval "
            + report.violations.map(String.init).joined(separator: " → ") + "; elements visited "
            + report.visited.map(String.init).joined(separator: " → "))
        return refined
      }
    }
  }
}
