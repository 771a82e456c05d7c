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
package enum CanonicalReconstruction {
  /// `true`: for rank 1 the canonical path and ``addLowRankBLAS(into:rowRange:columnCount:u:v:rank:)``
  /// agree bit for bit. Each element gets `x + p_0` with `p_0` exact, so there is one rounding
  /// whether or not the kernel fuses, reorders or splits the work across threads (barring a
  /// kernel that scales by `alpha`/`beta` in a way that rounds, which OpenBLAS does not do for 1.0).
  package static var canonicalIsExactForRankOne: Bool { true }

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
  package static func addLowRank(
    into matrix: UnsafeMutablePointer<Double>, rowRange: Range<Int>, columnCount: Int,
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rank: Int
  ) {
    precondition(rowRange.lowerBound >= 0 && columnCount >= 0 && rank >= 0)
    guard rank > 0, columnCount > 0, !rowRange.isEmpty else { return }
    if rank == 1 {
      addRankOne(into: matrix, rowRange: rowRange, columnCount: columnCount, u: u, v: v)
      return
    }
    addLowRankBlocked(
      into: matrix, rowRange: rowRange, columnCount: columnCount, u: u, v: v, rank: rank)
  }

  /// Rank ≥ 2: register-blocked over 4 rows × 4 columns, which keeps 16 running sums `d` in
  /// registers while `r` runs over the whole rank. Blocking only regroups *which* elements are
  /// computed together; each element still sees `p_0 + p_1 + …` in increasing `r`, then one add to
  /// `x`, so the result is the canonical one (the scalar-reference test checks every bit).
  private static func addLowRankBlocked(
    into matrix: UnsafeMutablePointer<Double>, rowRange: Range<Int>, columnCount: Int,
    u: UnsafePointer<Float>, v: UnsafePointer<Float>, rank: Int
  ) {
    typealias D4 = SIMD4<Double>
    // V is packed per column block: for each group of 4 columns, `rank` consecutive D4s holding
    // v[j..j+3, r] in Float64, so the inner loop reads memory sequentially. A block of 256
    // columns at rank 64 is 128 KB and stays in L2 while all rows stream past it.
    let columnBlock = 256
    let packed = UnsafeMutablePointer<D4>.allocate(capacity: (columnBlock / 4) * rank)
    defer { packed.deallocate() }
    let ud = UnsafeMutablePointer<Double>.allocate(capacity: 4 * rank)
    defer { ud.deallocate() }

    var jb = 0
    while jb < columnCount {
      let width = min(columnBlock, columnCount - jb)
      let quads = width / 4
      for q in 0..<quads {
        let j = jb + 4 * q
        for r in 0..<rank {
          packed[q * rank + r] = D4(
            Double(v[j * rank + r]), Double(v[(j + 1) * rank + r]),
            Double(v[(j + 2) * rank + r]), Double(v[(j + 3) * rank + r]))
        }
      }
      var i = rowRange.lowerBound
      while i + 4 <= rowRange.upperBound {
        for k in 0..<(4 * rank) { ud[k] = Double(u[i * rank + k]) }
        let u0 = ud
        let u1 = ud + rank
        let u2 = ud + 2 * rank
        let u3 = ud + 3 * rank
        for q in 0..<quads {
          let pv = packed + q * rank
          var vr = pv[0]
          var a0 = D4(repeating: u0[0]) * vr
          var a1 = D4(repeating: u1[0]) * vr
          var a2 = D4(repeating: u2[0]) * vr
          var a3 = D4(repeating: u3[0]) * vr
          for r in 1..<rank {
            vr = pv[r]
            a0 = a0 + D4(repeating: u0[r]) * vr
            a1 = a1 + D4(repeating: u1[r]) * vr
            a2 = a2 + D4(repeating: u2[r]) * vr
            a3 = a3 + D4(repeating: u3[r]) * vr
          }
          let x = matrix + i * columnCount + jb + 4 * q
          addInPlace(x, a0)
          addInPlace(x + columnCount, a1)
          addInPlace(x + 2 * columnCount, a2)
          addInPlace(x + 3 * columnCount, a3)
        }
        i += 4
      }
      while i < rowRange.upperBound {
        for k in 0..<rank { ud[k] = Double(u[i * rank + k]) }
        for q in 0..<quads {
          let pv = packed + q * rank
          var a0 = D4(repeating: ud[0]) * pv[0]
          for r in 1..<rank { a0 = a0 + D4(repeating: ud[r]) * pv[r] }
          addInPlace(matrix + i * columnCount + jb + 4 * q, a0)
        }
        i += 1
      }
      // The last (width mod 4) columns of the block, one element at a time.
      for j in (jb + 4 * quads)..<(jb + width) {
        for i in rowRange {
          var d = Double(u[i * rank]) * Double(v[j * rank])
          for r in 1..<rank { d = d + Double(u[i * rank + r]) * Double(v[j * rank + r]) }
          matrix[i * columnCount + j] = matrix[i * columnCount + j] + d
        }
      }
      jb += width
    }
  }

  /// `x[0..<4] += a`, one rounded add per element.
  @inline(__always)
  private static func addInPlace(_ x: UnsafeMutablePointer<Double>, _ a: SIMD4<Double>) {
    let raw = UnsafeMutableRawPointer(x)
    raw.storeBytes(of: raw.loadUnaligned(as: SIMD4<Double>.self) + a, as: SIMD4<Double>.self)
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
  package static func addLowRankBLAS(
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
