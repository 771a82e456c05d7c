internal import CBLAS

/// How a delta given as Float64 factors is best stored, after `LowRankAlgebra.recompress`.
package enum RecompressedDelta: Sendable, Equatable {
  /// `ΔW = U·Vᵀ` at the numerical rank, SVD-ordered and rounded to Float32 once:
  /// `U = Q_u·X·Σ` (rows × rank, columns scaled by the singular values, descending) and
  /// `V = Q_v·Y` (cols × rank, orthonormal columns), both row-major.
  case factors(u: [Float], v: [Float], rank: Int)
  /// The rows × cols difference in Float64, row-major: the factors would hold at least as many
  /// elements as the matrix.
  case dense([Double])
}

extension LowRankAlgebra {
  /// The singular-value tail dropped by `recompress`, relative to `‖ΔW‖_F`: far below the
  /// Float32 rounding of the factors (≈ 6e-8), so the rank kept is the one the matrix needs.
  package static let recompressionTolerance = 1e-10

  /// Recompresses `ΔW = U·Vᵀ` (Float64 factors of any width) to its numerical rank, in Float64.
  ///
  /// Factors whose columns are not orthogonal (EMMET's `R·G⁻¹` and `C⁻¹K`, concatenated
  /// batches) cancel heavily in `U·Vᵀ`: rounding them to Float32 as they are loses digits in
  /// proportion to the cancellation (1.6e-5 relative for 300 EMMET edits of a 64 × 256 matrix).
  /// The SVD form rounds orthonormal columns instead, whose rounding errors stay at Float32's
  /// ε relative to `‖ΔW‖_F`.
  /// - When `rank < min(rows, cols)`: thin QR of both factors (`U = Q_u·R_u`, `V = Q_v·R_v`), the
  ///   SVD of the `rank × rank` core `R_u·R_vᵀ = X·Σ·Yᵀ`, then `Q_u·X·Σ` and `Q_v·Y`.
  /// - Otherwise (a batch wider than the matrix): the dense `U·Vᵀ` (`cblas_dgemm`) and its SVD.
  ///
  /// Singular values are kept until the dropped tail `√(Σ_{i≥r} σᵢ²)` is at most
  /// `recompressionTolerance·‖ΔW‖_F`. When the kept factors would hold at least `rows·cols`
  /// elements (`r·(rows + cols) ≥ rows·cols`), the dense difference is returned instead.
  ///
  /// - Parameters:
  ///   - u: `rows × rank` row-major.
  ///   - v: `cols × rank` row-major.
  /// - Throws: `ApplyError.nonFinite` for NaN/Inf factors, `.dimensionTooLarge`,
  ///   `.lapackFailure` when `dgesdd` does not converge.
  package static func recompress(
    u: [Double], v: [Double], rows: Int, cols: Int, rank: Int
  ) throws -> RecompressedDelta {
    precondition(rows >= 0 && cols >= 0 && rank >= 0)
    precondition(u.count == rows * rank && v.count == cols * rank, "factor sizes disagree")
    let operation = "recompressing a batch"
    guard MatrixShape(rows: rows, cols: cols).fitsBLAS, MatrixShape(rows: max(rows, cols), cols: rank).fitsBLAS,
      rows.multipliedReportingOverflow(by: cols).partialValue <= Int(Int32.max)
    else {
      throw ApplyError.dimensionTooLarge(operation: operation, rows: rows, cols: cols)
    }
    for (factor, values) in [u, v].enumerated() {
      if let bad = values.firstIndex(where: { !$0.isFinite }) {
        throw ApplyError.nonFinite(operation: operation + (factor == 0 ? " (U)" : " (V)"), elementIndex: bad)
      }
    }
    if rank == 0 || rows == 0 || cols == 0 { return .factors(u: [], v: [], rank: 0) }
    if rank >= min(rows, cols) {
      let dense = product(u, v, rows: rows, cols: cols, rank: rank)
      return try recompressDense(dense, rows: rows, cols: cols)
    }
    let (qu, ru, _) = thinQR(u, rows: rows, cols: rank)
    let (qv, rv, _) = thinQR(v, rows: cols, cols: rank)
    // Core C = R_u·R_vᵀ (rank × rank), column-major.
    var core = [Double](repeating: 0, count: rank * rank)
    cblas_dgemm(
      CblasColMajor, CblasNoTrans, CblasTrans, blasInt(rank), blasInt(rank), blasInt(rank), 1, ru,
      blasInt(rank), rv, blasInt(rank), 0, &core, blasInt(rank))
    let svd = try singularValueDecomposition(&core, rows: rank, cols: rank, layout: LAPACK_COL_MAJOR)
    let t = keptRank(svd.sigma)
    if t == 0 { return .factors(u: [], v: [], rank: 0) }
    if t * (rows + cols) >= rows * cols {
      return .dense(product(u, v, rows: rows, cols: cols, rank: rank))
    }
    // U_r = Q_u (rows × rank) · X[:, :t] · Σ_t and V_r = Q_v (cols × rank) · Y[:, :t], Y = (Yᵀ)ᵀ;
    // both computed column-major, then stored row-major.
    var ur = [Double](repeating: 0, count: rows * t)
    cblas_dgemm(
      CblasColMajor, CblasNoTrans, CblasNoTrans, blasInt(rows), blasInt(t), blasInt(rank), 1, qu,
      blasInt(rows), svd.left, blasInt(rank), 0, &ur, blasInt(rows))
    var vr = [Double](repeating: 0, count: cols * t)
    cblas_dgemm(
      CblasColMajor, CblasNoTrans, CblasTrans, blasInt(cols), blasInt(t), blasInt(rank), 1, qv,
      blasInt(cols), svd.rightTransposed, blasInt(rank), 0, &vr, blasInt(cols))
    var uOut = [Float](repeating: 0, count: rows * t)
    var vOut = [Float](repeating: 0, count: cols * t)
    for c in 0..<t {
      for i in 0..<rows { uOut[i * t + c] = Float(ur[i + c * rows] * svd.sigma[c]) }
      for j in 0..<cols { vOut[j * t + c] = Float(vr[j + c * cols]) }
    }
    return .factors(u: uOut, v: vOut, rank: t)
  }

  /// The recompression of a dense Float64 `rows × cols` difference (row-major): its SVD's
  /// factors at the numerical rank, or the matrix itself when they are not smaller.
  private static func recompressDense(_ dense: [Double], rows: Int, cols: Int) throws -> RecompressedDelta {
    var work = dense
    let svd = try singularValueDecomposition(&work, rows: rows, cols: cols, layout: LAPACK_ROW_MAJOR)
    let t = keptRank(svd.sigma)
    if t == 0 { return .factors(u: [], v: [], rank: 0) }
    if t * (rows + cols) >= rows * cols { return .dense(dense) }
    // Row-major results: left is rows × s, rightTransposed is s × cols (s = min(rows, cols)).
    let s = svd.sigma.count
    var uOut = [Float](repeating: 0, count: rows * t)
    var vOut = [Float](repeating: 0, count: cols * t)
    for i in 0..<rows { for c in 0..<t { uOut[i * t + c] = Float(svd.left[i * s + c] * svd.sigma[c]) } }
    for c in 0..<t { for j in 0..<cols { vOut[j * t + c] = Float(svd.rightTransposed[c * cols + j]) } }
    return .factors(u: uOut, v: vOut, rank: t)
  }

  /// The number of leading singular values (descending) to keep: the dropped tail is at most
  /// `recompressionTolerance` of the total in the Frobenius norm.
  static func keptRank(_ sigma: [Double]) -> Int {
    let total = sigma.reduce(0) { $0 + $1 * $1 }
    guard total > 0 else { return 0 }
    let allowed = total * recompressionTolerance * recompressionTolerance
    var tail = 0.0
    var t = sigma.count
    while t > 0, tail + sigma[t - 1] * sigma[t - 1] <= allowed {
      tail += sigma[t - 1] * sigma[t - 1]
      t -= 1
    }
    return t
  }

  /// `U·Vᵀ` (rows × cols, row-major) from row-major `rows × rank` and `cols × rank` factors.
  static func product(_ u: [Double], _ v: [Double], rows: Int, cols: Int, rank: Int) -> [Double] {
    var out = [Double](repeating: 0, count: rows * cols)
    cblas_dgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(rows), blasInt(cols), blasInt(rank), 1, u,
      blasInt(rank), v, blasInt(rank), 0, &out, blasInt(cols))
    return out
  }

  /// `LAPACKE_dgesdd` (`jobz = S`) of `a` (destroyed), in the given layout.
  /// - Returns: σ descending; `left` rows × s and `rightTransposed` s × cols, in `layout`
  ///   (s = min(rows, cols)).
  private static func singularValueDecomposition(
    _ a: inout [Double], rows: Int, cols: Int, layout: Int32
  ) throws -> (sigma: [Double], left: [Double], rightTransposed: [Double]) {
    let s = min(rows, cols)
    var sigma = [Double](repeating: 0, count: s)
    var left = [Double](repeating: 0, count: rows * s)
    var rightT = [Double](repeating: 0, count: s * cols)
    let columnMajor = layout == LAPACK_COL_MAJOR
    let info = LAPACKE_dgesdd(
      layout, CChar(UInt8(ascii: "S")), blasInt(rows), blasInt(cols), &a, blasInt(columnMajor ? rows : cols),
      &sigma, &left, blasInt(columnMajor ? rows : s), &rightT, blasInt(columnMajor ? s : cols))
    precondition(info >= 0, "LAPACKE_dgesdd: argument \(-info) is invalid")
    if info > 0 {
      throw ApplyError.lapackFailure(
        function: "LAPACKE_dgesdd", info: Int(info),
        meaning: "the SVD of the \(rows) × \(cols) batch delta did not converge")
    }
    return (sigma, left, rightT)
  }
}
