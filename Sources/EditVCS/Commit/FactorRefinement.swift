import Apply
import DeltaStore

extension EditRepository {
  /// The largest rank whose factors are refined against the rounding intervals: each rank costs
  /// a pass over the tensor per half-sweep, and large ranks are batches, recovered well enough by
  /// the rank finder (their deltas dwarf the rounding).
  static let refinedRankLimit = 8

  /// Whether factors of a `dtype` tensor are refined against its rounding (ranks up to
  /// ``refinedRankLimit``).
  static func isRefined(_ dtype: DType) -> Bool { [.f32, .f16, .bf16].contains(dtype) }

  /// Row-then-column sweeps after the least-squares start, with `mvc commit --compact`.
  static let compactSweeps = 6

  /// The rank finder's factors of `committed − parent`, moved so that the canonical rule rounds
  /// to the committed bytes almost everywhere (``Factorization/refineAgainstRounding``). The
  /// least-squares start alone takes a bf16 edit's residual from about one element in ten to
  /// five in ten thousand; with `sweeps` (`--compact`) the sweep lines bring it to a few in a
  /// hundred thousand for about three times the time (for F32 they gain nothing: its intervals
  /// are narrow, and the same bytes cost six times the time). Other dtypes (F64), rank 0 and
  /// ranks above ``refinedRankLimit`` come back as they are.
  func refinedAgainstRounding(
    _ factors: LowRankFactors, name: String, dtype: DType, rows: Int, cols: Int, committed: [UInt8], parent: [UInt8],
    sweeps: Bool
  ) -> LowRankFactors {
    guard Self.isRefined(dtype), (1...Self.refinedRankLimit).contains(factors.rank) else { return factors }
    return committed.withUnsafeBytes { new in
      parent.withUnsafeBytes { old in
        let (refined, report) = timed("refine factors of '\(name)'") {
          Factorization.refineAgainstRounding(
            factors, rows: rows, cols: cols, maxSweeps: sweeps ? Self.compactSweeps : 0,
            workers: environment.workerThreads
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
