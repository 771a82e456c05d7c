internal import CBLAS

/// A best rank-`rank` approximation of a product `U·Vᵀ` given as factors.
package struct TruncatedFactors: Sendable, Equatable {
  /// Columns kept (≤ the target rank; numerically zero singular values are dropped).
  package var rank: Int
  /// `rows × rank` row-major Float32, columns scaled by their singular values.
  package var u: [Float]
  /// `cols × rank` row-major Float32, orthonormal columns.
  package var v: [Float]
  /// Every singular value of `U·Vᵀ`, descending, in Float64 (not only the kept ones).
  package var singularValues: [Double]
  /// `‖U·Vᵀ − U_r·V_rᵀ‖_F / ‖U·Vᵀ‖_F` in exact arithmetic: `√(Σ_{i≥r} σᵢ²) / √(Σ σᵢ²)`.
  package var relativeFrobeniusError: Double
}

/// Algebra on deltas held as factors, without forming the dense `rows × cols` product.
package enum LowRankAlgebra {
  /// The best rank-`targetRank` approximation (Eckart–Young) of `U·Vᵀ`, from the factors only.
  ///
  /// `U = Q_u·R_u`, `V = Q_v·R_v` (`LAPACKE_dgeqrf`/`dorgqr`), then the SVD of the small core
  /// `R_u·R_vᵀ = X·Σ·Yᵀ` (`LAPACKE_dgesdd`), so that `U·Vᵀ = (Q_u·X)·Σ·(Q_v·Y)ᵀ` is an SVD and
  /// its leading `targetRank` terms are optimal in both the Frobenius and the spectral norm.
  /// All arithmetic is Float64; the returned factors are rounded to Float32 once.
  ///
  /// - Parameters:
  ///   - u: `rows × rank` row-major.
  ///   - v: `cols × rank` row-major.
  ///   - targetRank: the rank to keep (≥ 0).
  /// - Returns: the truncated factors, `U_r = Q_u·X_r·Σ_r` and `V_r = Q_v·Y_r`.
  /// - Throws: `ApplyError.nonFinite` for NaN/Inf factors, `ApplyError.dimensionTooLarge`,
  ///   `ApplyError.lapackFailure` when `dgesdd` does not converge.
  package static func truncate(
    u: [Float], v: [Float], rows: Int, cols: Int, rank: Int, to targetRank: Int
  ) throws -> TruncatedFactors {
    precondition(rows >= 0 && cols >= 0 && rank >= 0 && targetRank >= 0)
    precondition(u.count == rows * rank && v.count == cols * rank, "factor sizes disagree")
    let operation = "truncated SVD"
    guard MatrixShape(rows: rows, cols: rank).fitsBLAS, MatrixShape(rows: cols, cols: rank).fitsBLAS
    else {
      throw ApplyError.dimensionTooLarge(operation: operation, rows: rows, cols: cols)
    }
    for (factor, values) in [u, v].enumerated() {
      if let bad = values.withUnsafeBufferPointer({
        $0.baseAddress.flatMap { firstNonFinite($0, count: values.count) }
      }) {
        throw ApplyError.nonFinite(
          operation: operation + (factor == 0 ? " (U)" : " (V)"), elementIndex: bad)
      }
    }
    if rank == 0 || rows == 0 || cols == 0 {
      return TruncatedFactors(rank: 0, u: [], v: [], singularValues: [], relativeFrobeniusError: 0)
    }
    let (qu, ru, p) = thinQR(u, rows: rows, cols: rank)
    let (qv, rv, q) = thinQR(v, rows: cols, cols: rank)
    // Core C = R_u·R_vᵀ (p × q), column-major: C[i,j] = Σ_k R_u[i,k]·R_v[j,k].
    var core = [Double](repeating: 0, count: p * q)
    for j in 0..<q {
      for i in 0..<p {
        var s = 0.0
        for k in 0..<rank { s += ru[i + k * p] * rv[j + k * q] }
        core[i + j * p] = s
      }
    }
    let s = min(p, q)
    var sigma = [Double](repeating: 0, count: s)
    var x = [Double](repeating: 0, count: p * s)  // column-major p × s
    var yt = [Double](repeating: 0, count: s * q)  // column-major s × q (= Yᵀ)
    let info = LAPACKE_dgesdd(
      LAPACK_COL_MAJOR, CChar(UInt8(ascii: "S")), blasInt(p), blasInt(q), &core, blasInt(p),
      &sigma, &x, blasInt(p), &yt, blasInt(s))
    precondition(info >= 0, "LAPACKE_dgesdd: argument \(-info) is invalid")
    if info > 0 {
      throw ApplyError.lapackFailure(
        function: "LAPACKE_dgesdd", info: Int(info),
        meaning: "the SVD of the \(p) × \(q) core of the factors did not converge")
    }
    // Singular values below σ₀·1e-13 are zero in Float64 arithmetic: keeping them would only add
    // arbitrary directions.
    let floor = (sigma.first ?? 0) * 1e-13
    let t = min(targetRank, sigma.prefix { $0 > floor }.count)
    var total = 0.0
    var dropped = 0.0
    for (i, value) in sigma.enumerated() {
      total += value * value
      if i >= t { dropped += value * value }
    }
    // U_r = Q_u (rows × p) · X[:, :t] · Σ_t; V_r = Q_v (cols × q) · Y[:, :t], Y[j, c] = Yᵀ[c, j].
    var ur = [Float](repeating: 0, count: rows * t)
    for i in 0..<rows {
      for c in 0..<t {
        var acc = 0.0
        for k in 0..<p { acc += qu[i + k * rows] * x[k + c * p] }
        ur[i * t + c] = Float(acc * sigma[c])
      }
    }
    var vr = [Float](repeating: 0, count: cols * t)
    for j in 0..<cols {
      for c in 0..<t {
        var acc = 0.0
        for k in 0..<q { acc += qv[j + k * cols] * yt[c + k * s] }
        vr[j * t + c] = Float(acc)
      }
    }
    return TruncatedFactors(
      rank: t, u: ur, v: vr, singularValues: sigma,
      relativeFrobeniusError: total > 0 ? (dropped / total).squareRoot() : 0)
  }

  /// Calls `body(firstRow, rowCount, block)` with consecutive row blocks of `U·Vᵀ` in Float64
  /// (`block` is `rowCount × cols` row-major), one `cblas_dgemm` per block, so the dense product
  /// is never held whole.
  /// - Parameters:
  ///   - u: `rows × rank` row-major.
  ///   - v: `cols × rank` row-major.
  package static func forEachProductBlock(
    u: [Double], v: [Double], rows: Int, cols: Int, rank: Int,
    _ body: (Int, Int, UnsafePointer<Double>) throws -> Void
  ) rethrows {
    precondition(u.count == rows * rank && v.count == cols * rank, "factor sizes disagree")
    let blockRows = max(1, min(rows, (1 << 19) / max(cols, 1)))
    let block = UnsafeMutablePointer<Double>.allocate(capacity: max(1, blockRows * cols))
    defer { block.deallocate() }
    var first = 0
    while first < rows {
      let count = min(blockRows, rows - first)
      if rank == 0 {
        block.initialize(repeating: 0, count: count * cols)
      } else {
        u.withUnsafeBufferPointer { up in
          guard let u = up.baseAddress else { return }
          // block (count × cols) = U[first..<first+count] (count × rank) · Vᵀ (rank × cols)
          cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(count), blasInt(cols), blasInt(rank),
            1, u + first * rank, blasInt(rank), v, blasInt(rank), 0, block,
            blasInt(cols))
        }
      }
      try body(first, count, block)
      first += count
    }
  }
}

/// Thin QR of a row-major `rows × cols` Float32 or Float64 matrix `A = Q·R`, in Float64.
/// - Returns: `Q` column-major `rows × p` (orthonormal columns), `R` column-major `p × cols`
///   (upper trapezoidal), with `p = min(rows, cols)`.
func thinQR<Element: BinaryFloatingPoint>(_ a: [Element], rows m: Int, cols n: Int) -> (
  q: [Double], r: [Double], p: Int
) {
  // row-major A (m × n) → column-major copy (lda = m) for LAPACK.
  var work = [Double](repeating: 0, count: m * n)
  for i in 0..<m { for j in 0..<n { work[i + j * m] = Double(a[i * n + j]) } }
  let p = min(m, n)
  var tau = [Double](repeating: 0, count: p)
  var info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, blasInt(m), blasInt(n), &work, blasInt(m), &tau)
  precondition(info == 0, "LAPACKE_dgeqrf returned \(info)")
  var r = [Double](repeating: 0, count: p * n)
  for j in 0..<n { for i in 0...min(j, p - 1) { r[i + j * p] = work[i + j * m] } }
  var q = Array(work.prefix(m * p))
  info = LAPACKE_dorgqr(LAPACK_COL_MAJOR, blasInt(m), blasInt(p), blasInt(p), &q, blasInt(m), tau)
  precondition(info == 0, "LAPACKE_dorgqr returned \(info)")
  return (q, r, p)
}
