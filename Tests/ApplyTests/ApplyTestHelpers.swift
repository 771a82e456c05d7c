import TestSupport
import Testing

/// `‖a − b‖_F / ‖b‖_F` in Float64.
func relativeError(_ a: [Double], _ b: [Double]) -> Double {
  precondition(a.count == b.count)
  var num = 0.0
  var den = 0.0
  for k in a.indices {
    let d = a[k] - b[k]
    num += d * d
    den += b[k] * b[k]
  }
  return den == 0 ? num.squareRoot() : (num / den).squareRoot()
}

/// Expects `relativeError(actual, expected) < tolerance`, reporting at the caller's line.
func expectClose(
  _ actual: [Double], _ expected: [Double], relative tolerance: Double,
  sourceLocation: SourceLocation = #_sourceLocation
) {
  let error = relativeError(actual, expected)
  #expect(
    error < tolerance, "relative error \(error) ≥ \(tolerance)", sourceLocation: sourceLocation)
}

/// `U·Vᵀ` in Float64 (`U` rows × rank, `V` cols × rank, row-major Float32), summed in increasing r.
func denseProduct(u: [Float], v: [Float], rows: Int, cols: Int, rank: Int) -> [Double] {
  var out = [Double](repeating: 0, count: rows * cols)
  for i in 0..<rows {
    for j in 0..<cols {
      var s = 0.0
      for r in 0..<rank { s += Double(u[i * rank + r]) * Double(v[j * rank + r]) }
      out[i * cols + j] = s
    }
  }
  return out
}

/// A seeded low-rank test matrix: `U` (rows × rank) and `V` (cols × rank) Gaussian Float32.
func randomFactors(rows: Int, cols: Int, rank: Int, seed: UInt64) -> (u: [Float], v: [Float]) {
  var rng = SplitMix64(seed: seed)
  return (rng.gaussianArray(count: rows * rank), rng.gaussianArray(count: cols * rank))
}
