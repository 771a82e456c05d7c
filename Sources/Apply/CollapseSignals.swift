// Weight-space collapse signals of one tensor state against the base (docs/editing-science.md;
// Gupta et al.'s spectral analysis logs ‖W‖, ‖ΔW‖ and the singular values of the update):
// ‖W_t‖_F/‖W_0‖_F, ‖W_t − W_0‖_F, σ₁(W_t − W_0) and σ₁²/‖W_t − W_0‖_F².

internal import CBLAS

/// The signals of one state W_t against the base W_0.
public struct CollapseMeasure: Sendable, Equatable {
  /// ‖W_t‖_F.
  public var weightNorm: Double
  /// ‖W_0‖_F.
  public var baseNorm: Double
  /// ‖W_t − W_0‖_F, the cumulative update's Frobenius norm.
  public var distance: Double
  /// σ₁(W_t − W_0), the cumulative update's spectral norm.
  public var spectral: Double

  /// ‖W_t‖_F/‖W_0‖_F (1 when both are 0).
  public var normGrowth: Double { baseNorm > 0 ? weightNorm / baseNorm : (weightNorm == 0 ? 1 : .infinity) }
  /// σ₁²/‖ΔW‖_F², the share of the update's energy in its top direction; nil when ΔW = 0.
  public var topEnergy: Double? { distance > 0 ? min(1, spectral * spectral / (distance * distance)) : nil }
}

/// Computes ``CollapseMeasure``s; keeps the top singular subspace between calls so the next state
/// of the same tensor (a small change of ΔW) starts from it and converges in a few iterations.
package struct CollapseSignals {
  /// Block width of the subspace iteration: convergence goes as (σ₅/σ₁)² per step.
  static let blockWidth = 4
  var start: [Double]?
  var rng = SplitMix64(seed: 0x5EED, stream: 17)

  package init() {}

  /// The signals of `current` against `base`, both row-major rows×cols Float32 buffers.
  package mutating func measure(
    current: UnsafeBufferPointer<Float>, base: UnsafeBufferPointer<Float>, rows: Int, cols: Int
  ) -> CollapseMeasure {
    precondition(current.count == rows * cols && base.count == rows * cols)
    var difference = [Double](repeating: 0, count: rows * cols)
    var weightSquares = 0.0
    var baseSquares = 0.0
    var distanceSquares = 0.0
    for i in 0..<(rows * cols) {
      let w = Double(current[i])
      let b = Double(base[i])
      let d = w - b
      difference[i] = d
      weightSquares += w * w
      baseSquares += b * b
      distanceSquares += d * d
    }
    let spectral = distanceSquares > 0 ? largestSingularValue(difference, rows: rows, cols: cols) : 0
    return CollapseMeasure(
      weightNorm: weightSquares.squareRoot(), baseNorm: baseSquares.squareRoot(),
      distance: distanceSquares.squareRoot(), spectral: spectral)
  }

  /// σ₁ of a dense rows×cols matrix by block subspace iteration on AᵀA with a Rayleigh–Ritz
  /// step (`cblas_dgemm`, `LAPACKE_dsyev` on the b×b Gram), to a relative change below 1e-13.
  package mutating func largestSingularValue(_ a: [Double], rows: Int, cols: Int) -> Double {
    let b = min(Self.blockWidth, rows, cols)
    guard b > 0 else { return 0 }
    var x = start.flatMap { $0.count == cols * b ? $0 : nil } ?? rng.gaussians(cols * b)
    var y = [Double](repeating: 0, count: rows * b)
    var estimate = 0.0
    for iteration in 0..<300 {
      Self.orthonormalizeColumns(&x, rows: cols, columns: b)
      // Y = A·X (rows×b), then the Ritz value: the largest eigenvalue of YᵀY.
      cblas_dgemm(
        CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(b), Int32(cols), 1, a, Int32(cols), x,
        Int32(b), 0, &y, Int32(b))
      var gram = [Double](repeating: 0, count: b * b)
      cblas_dgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(b), Int32(b), Int32(rows), 1, y, Int32(b), y, Int32(b), 0,
        &gram, Int32(b))
      let eigenvalues = (try? symmetricEigen(&gram, order: b)) ?? [0]
      let next = max(0, eigenvalues.last ?? 0).squareRoot()
      if iteration > 0 && abs(next - estimate) <= 1e-13 * next {
        estimate = next
        break
      }
      estimate = next
      // X = Aᵀ·Y (cols×b).
      cblas_dgemm(
        CblasRowMajor, CblasTrans, CblasNoTrans, Int32(cols), Int32(b), Int32(rows), 1, a, Int32(cols), y,
        Int32(b), 0, &x, Int32(b))
    }
    start = x
    return estimate
  }

  /// Modified Gram–Schmidt, twice, on the columns of a row-major rows×columns matrix; a column
  /// that vanishes is replaced by a unit vector.
  static func orthonormalizeColumns(_ x: inout [Double], rows: Int, columns: Int) {
    for _ in 0..<2 {
      for j in 0..<columns {
        for k in 0..<j {
          var dot = 0.0
          for i in 0..<rows { dot += x[i * columns + j] * x[i * columns + k] }
          for i in 0..<rows { x[i * columns + j] -= dot * x[i * columns + k] }
        }
        var norm = 0.0
        for i in 0..<rows { norm += x[i * columns + j] * x[i * columns + j] }
        norm = norm.squareRoot()
        if norm > 0 {
          for i in 0..<rows { x[i * columns + j] /= norm }
        } else {
          x[(j % rows) * columns + j] = 1
        }
      }
    }
  }
}
