internal import CBLAS

/// Norms of a dense Float32 buffer, accumulated in Float64.
package enum DenseNorms {
  /// `‖p‖_F = sqrt(Σ p[k]²)` over `count` elements, squares summed in Float64 (eight interleaved
  /// partial sums, so the result is deterministic but not the naive left-to-right sum).
  /// Returns NaN if any element is NaN, +Inf if any is infinite.
  package static func frobenius(_ p: UnsafePointer<Float>, count: Int) -> Double {
    var sum = FrobeniusSum()
    sum.add(p, count: count)
    return sum.value
  }

  /// ``frobenius(_:count:)`` of elements handed over in consecutive blocks, for a matrix that is
  /// never held whole: the same value as one call over all of them, as long as every block but
  /// the last holds a multiple of eight elements (the interleaved sums then line up).
  package struct FrobeniusSum {
    private var partial = SIMD8<Double>()
    private var ended = false

    package init() {}

    /// Adds the squares of `count` more elements.
    package mutating func add(_ p: UnsafePointer<Float>, count: Int) {
      precondition(count >= 0)
      precondition(!ended, "a block of a count that is not a multiple of 8 must be the last")
      var k = 0
      while k + 8 <= count {
        let a = SIMD8<Double>(
          Double(p[k]), Double(p[k + 1]), Double(p[k + 2]), Double(p[k + 3]),
          Double(p[k + 4]), Double(p[k + 5]), Double(p[k + 6]), Double(p[k + 7]))
        partial += a * a
        k += 8
      }
      while k < count {
        let a = Double(p[k])
        partial[0] += a * a
        k += 1
      }
      ended = count % 8 != 0
    }

    /// The norm of every element added so far.
    package var value: Double {
      let sum =
        ((partial[0] + partial[1]) + (partial[2] + partial[3]))
        + ((partial[4] + partial[5]) + (partial[6] + partial[7]))
      return sum.squareRoot()
    }
  }

  /// `max_k |p[k]|` over `count` elements (`0` when `count == 0`); NaN if any element is NaN.
  package static func maxAbs(_ p: UnsafePointer<Float>, count: Int) -> Float {
    precondition(count >= 0)
    var m: Float = 0
    var sawNaN = false
    for k in 0..<count {
      let a = abs(p[k])
      m = a > m ? a : m
      sawNaN = sawNaN || a.isNaN
    }
    return sawNaN ? .nan : m
  }
}

/// Norms of `U·Vᵀ` computed from the factors alone, through the `rank × rank` Gram matrices
/// `Gᵤ = UᵀU` and `Gᵥ = VᵀV` (Float64), never forming the `rows × cols` product.
///
/// `U` is `rows × rank` row-major Float32, `V` is `cols × rank` row-major Float32 (the layout of
/// ``LowRankFactors``). Squaring through Gram matrices loses relative accuracy below about
/// `1e-8 · ‖U·Vᵀ‖₂`, which is fine for reporting and thresholds.
package enum LowRankNorms {
  /// `‖U·Vᵀ‖_F = sqrt(tr(Gᵤ·Gᵥ)) = sqrt(Σ_ab Gᵤ[a,b]·Gᵥ[a,b])`. `0` when `rank == 0`.
  package static func frobenius(
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rows: Int, cols: Int, rank: Int
  ) -> Double {
    guard rank > 0, rows > 0, cols > 0 else { return 0 }
    let gu = gram(u, count: rows, rank: rank)
    let gv = gram(v, count: cols, rank: rank)
    var s = 0.0
    for k in 0..<(rank * rank) { s += gu[k] * gv[k] }
    return max(0, s).squareRoot()
  }

  /// `‖U·Vᵀ‖₂ = sqrt(λ_max(Gᵤ·Gᵥ))`, the largest singular value. `0` when `rank == 0`.
  ///
  /// `Gᵤ·Gᵥ` is not symmetric, so it is symmetrized: with `Gᵤ = P·Λ·Pᵀ` (`LAPACKE_dsyev`) and
  /// `S = Λ^½·Pᵀ`, `Gᵤ·Gᵥ = Sᵀ·S·Gᵥ` has the same non-zero eigenvalues as the symmetric
  /// `S·Gᵥ·Sᵀ`, whose largest eigenvalue comes from a second `LAPACKE_dsyev`.
  /// - Throws: `ApplyError.lapackFailure` if `dsyev` does not converge (`info > 0`).
  package static func spectral(
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rows: Int, cols: Int, rank: Int
  ) throws -> Double {
    guard rank > 0, rows > 0, cols > 0 else { return 0 }
    var gu = gram(u, count: rows, rank: rank)
    let gv = gram(v, count: cols, rank: rank)
    // Afterwards gu holds P column-major, i.e. Pᵀ when read row-major.
    let lambda = try symmetricEigen(&gu, order: rank)
    // S = Λ^½ Pᵀ: row a of S is sqrt(λ_a) · (column a of P). `gu` column-major means row-major
    // reading gives Pᵀ, so row a of that buffer is column a of P.
    var s = [Double](repeating: 0, count: rank * rank)
    for a in 0..<rank {
      let scale = max(0, lambda[a]).squareRoot()
      for b in 0..<rank { s[a * rank + b] = scale * gu[a * rank + b] }
    }
    // M = S · Gᵥ · Sᵀ (rank × rank), two small dgemms.
    var t = [Double](repeating: 0, count: rank * rank)
    var m = [Double](repeating: 0, count: rank * rank)
    let n = blasInt(rank)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, s, n, gv, n, 0, &t, n)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, t, n, s, n, 0, &m, n)
    // Round-off can leave M slightly asymmetric; dsyev reads one triangle, so symmetrize first.
    for a in 0..<rank {
      for b in (a + 1)..<rank {
        let mean = 0.5 * (m[a * rank + b] + m[b * rank + a])
        m[a * rank + b] = mean
        m[b * rank + a] = mean
      }
    }
    let mu = try symmetricEigen(&m, order: rank)
    return max(0, mu.last ?? 0).squareRoot()
  }

  /// `XᵀX` (rank × rank, Float64, full symmetric) of a `count × rank` row-major Float32 matrix.
  static func gram(_ x: UnsafePointer<Float>, count: Int, rank: Int) -> [Double] {
    var xd = [Double](repeating: 0, count: count * rank)
    for k in 0..<(count * rank) { xd[k] = Double(x[k]) }
    var g = [Double](repeating: 0, count: rank * rank)
    cblas_dsyrk(
      CblasRowMajor, CblasUpper, CblasTrans, blasInt(rank), blasInt(count),
      1, xd, blasInt(rank), 0, &g, blasInt(rank))
    for a in 0..<rank {
      for b in 0..<a { g[a * rank + b] = g[b * rank + a] }
    }
    return g
  }
}

/// Eigen-decomposition of a small symmetric matrix in place (`LAPACKE_dsyev`, jobz 'V').
/// On return `a` holds the eigenvectors column-major (row-major reading gives them as rows) and
/// the result holds the eigenvalues in ascending order.
func symmetricEigen(_ a: inout [Double], order n: Int) throws -> [Double] {
  var w = [Double](repeating: 0, count: n)
  // A symmetric matrix is its own transpose, so the row-major buffer is also valid column-major.
  let info = LAPACKE_dsyev(
    LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "U")), blasInt(n), &a,
    blasInt(n), &w)
  precondition(info >= 0, "LAPACKE_dsyev: argument \(-info) is invalid")
  if info > 0 {
    throw ApplyError.lapackFailure(
      function: "LAPACKE_dsyev", info: Int(info),
      meaning: "\(info) off-diagonal elements did not converge to zero")
  }
  return w
}
