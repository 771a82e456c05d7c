internal import CBLAS

/// Materializes `X + U·Vᵀ` the one way every machine agrees on: the exactness contract of mvc.
///
/// Checkout decodes the parent tensor to Float64, calls ``addLowRank(into:rowRange:columnCount:u:v:rank:)``
/// for each stored delta, rounds once to the storage dtype and adds the stored integer-ulp
/// residual. The residual was computed at commit time against this same function, so the result
/// is bit-identical to what was committed on any CPU, compiler or BLAS kernel.
///
/// **The contract**, for every row `i` in `rowRange` and column `j` in `0..<columnCount`:
/// ```
/// p_r = Double(u[i, r]) * Double(v[j, r])          // exact: 24 + 24 significand bits ≤ 53
/// d   = ((p_0 + p_1) + p_2) + … + p_(rank-1)        // increasing r, each + rounded to Double
/// x[i, j] = x[i, j] + d                              // one rounded add, after the sum
/// ```
/// (`rank == 0` leaves `x` untouched.) Swift does not contract `a * b + c` into an FMA, and even
/// if a compiler did, it would not change the result: the product of two Float32 values is exact in
/// Float64, so `fma(a, b, c) == a * b + c` bit for bit. What the contract really pins down is the
/// summation order, and that `x` is added last; that is what BLAS does not promise.
public enum CanonicalReconstruction {
  /// `true`: for rank 1 the canonical path and ``addLowRankBLAS(into:rowRange:columnCount:u:v:rank:)``
  /// agree bit for bit. Each element gets `x + p_0` with `p_0` exact, so there is one rounding
  /// whether or not the kernel fuses, reorders or splits the work across threads (barring a
  /// kernel that scales by `alpha`/`beta` in a way that rounds, which OpenBLAS does not do for 1.0).
  public static var canonicalIsExactForRankOne: Bool { true }

  /// Adds `U·Vᵀ` to rows `rowRange` of a row-major Float64 matrix, in the canonical order above.
  ///
  /// The work is split by `rowRange` so callers can run disjoint row blocks on different threads;
  /// the result does not depend on how the rows are split.
  ///
  /// - Parameters:
  ///   - matrix: the whole `totalRows × columnCount` row-major Float64 matrix (row 0 at
  ///     `matrix[0]`, dense, leading dimension `columnCount`); only rows in `rowRange` are read
  ///     and written.
  ///   - rowRange: the rows to update, indices into the whole matrix (and into `u`).
  ///   - columnCount: number of columns of the matrix and number of rows of `v`.
  ///   - u: the whole `totalRows × rank` row-major Float32 left factor.
  ///   - v: the `columnCount × rank` row-major Float32 right factor.
  ///   - rank: number of columns of `u` and `v`; `0` is a no-op.
  public static func addLowRank(
    into matrix: UnsafeMutablePointer<Double>, rowRange: Range<Int>, columnCount: Int,
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rank: Int
  ) {
    precondition(rowRange.lowerBound >= 0 && columnCount >= 0 && rank >= 0)
    guard rank > 0, columnCount > 0, !rowRange.isEmpty else { return }
    if rank == 1 {
      addRankOne(into: matrix, rowRange: rowRange, columnCount: columnCount, u: u, v: v)
      return
    }
    // vᵀ in Float64, rank × columnCount, so the inner loop runs over contiguous j and vectorizes
    // across columns while keeping the r order per element. Converting once costs rank·cols.
    let vt = UnsafeMutablePointer<Double>.allocate(capacity: rank * columnCount)
    defer { vt.deallocate() }
    for j in 0..<columnCount {
      for r in 0..<rank { vt[r * columnCount + j] = Double(v[j * rank + r]) }
    }
    // Columns are done in tiles so the accumulator stays in L1 while r runs over the whole rank.
    let tile = 512
    let acc = UnsafeMutablePointer<Double>.allocate(capacity: tile)
    defer { acc.deallocate() }
    for i in rowRange {
      let x = matrix + i * columnCount
      let ui = u + i * rank
      var j0 = 0
      while j0 < columnCount {
        let width = min(tile, columnCount - j0)
        let u0 = Double(ui[0])
        let v0 = vt + j0
        for jj in 0..<width { acc[jj] = u0 * v0[jj] }
        for r in 1..<rank {
          let ur = Double(ui[r])
          let vr = vt + r * columnCount + j0
          for jj in 0..<width { acc[jj] = acc[jj] + ur * vr[jj] }
        }
        let xt = x + j0
        for jj in 0..<width { xt[jj] = xt[jj] + acc[jj] }
        j0 += width
      }
    }
  }

  /// Rank 1 is a pure streaming update, `x[i, j] += Double(u[i]) * Double(v[j])`: memory-bound.
  private static func addRankOne(
    into matrix: UnsafeMutablePointer<Double>, rowRange: Range<Int>, columnCount: Int,
    u: UnsafePointer<Float>, v: UnsafePointer<Float>
  ) {
    let vd = UnsafeMutablePointer<Double>.allocate(capacity: columnCount)
    defer { vd.deallocate() }
    for j in 0..<columnCount { vd[j] = Double(v[j]) }
    for i in rowRange {
      let ui = Double(u[i])
      let x = matrix + i * columnCount
      for j in 0..<columnCount { x[j] = x[j] + ui * vd[j] }
    }
  }

  /// The same update as ``addLowRank(into:rowRange:columnCount:u:v:rank:)`` through `cblas_dgemm`
  /// on Float64 copies of `U` and `V`: faster for large ranks, but **not** canonical.
  ///
  /// For `rank == 1` the result is bit-identical to the canonical path
  /// (``canonicalIsExactForRankOne``). For `rank > 1` the kernel chooses its own summation order
  /// (and may add `x` first), so the result can differ in the last Float64 bit, and after rounding
  /// to the storage dtype, occasionally in the last stored bit. Callers must verify the tensor's
  /// sha256 against the manifest and fall back to the canonical path on a mismatch.
  ///
  /// Same parameters as the canonical path. Dimensions must fit `Int32` (precondition).
  public static func addLowRankBLAS(
    into matrix: UnsafeMutablePointer<Double>, rowRange: Range<Int>, columnCount: Int,
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rank: Int
  ) {
    precondition(rowRange.lowerBound >= 0 && columnCount >= 0 && rank >= 0)
    guard rank > 0, columnCount > 0, !rowRange.isEmpty else { return }
    let rowCount = rowRange.count
    let ud = UnsafeMutablePointer<Double>.allocate(capacity: rowCount * rank)
    defer { ud.deallocate() }
    let vd = UnsafeMutablePointer<Double>.allocate(capacity: columnCount * rank)
    defer { vd.deallocate() }
    let uBlock = u + rowRange.lowerBound * rank
    for k in 0..<(rowCount * rank) { ud[k] = Double(uBlock[k]) }
    for k in 0..<(columnCount * rank) { vd[k] = Double(v[k]) }
    // C (rowCount × cols) += U_block (rowCount × rank) · Vᵀ (rank × cols)
    cblas_dgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans,
      blasInt(rowCount), blasInt(columnCount), blasInt(rank),
      1.0, ud, blasInt(rank), vd, blasInt(rank),
      1.0, matrix + rowRange.lowerBound * columnCount, blasInt(columnCount))
  }
}
