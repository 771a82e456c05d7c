internal import CBLAS
import Dispatch

/// A rank-`rank` factorization `ΔW ≈ U·Vᵀ` with the singular values folded into `U`.
package struct LowRankFactors: Sendable, Equatable {
  /// Number of columns of `u` and `v` (`0` for an all-zero delta).
  package var rank: Int
  /// Left factor, `rows × rank` row-major Float32: `U = Q·U_B·Σ` (columns scaled by σ).
  package var u: [Float]
  /// Right factor, `cols × rank` row-major Float32, orthonormal columns (right singular vectors).
  package var v: [Float]
  /// The `rank` kept singular values, descending, in Float64.
  package var singularValues: [Double]
  /// `‖ΔW − U·Vᵀ‖_F` in Float64, measured with the **Float32** factors that are returned.
  package var residualFrobenius: Double

  /// Memberwise initializer.
  package init(
    rank: Int, u: [Float], v: [Float], singularValues: [Double], residualFrobenius: Double
  ) {
    self.rank = rank
    self.u = u
    self.v = v
    self.singularValues = singularValues
    self.residualFrobenius = residualFrobenius
  }
}

/// Rank-revealing factorization of dense deltas.
package enum Factorization {
  /// Columns added to the sketch beyond the rank being looked for (HMT §4.2 suggests 5–10).
  package static let oversampling = 8
  /// The rank the first sketch looks for; a larger one grows the sketch ×4 (one more round).
  package static let firstSketchRank = 4

  /// The RMS rounding noise of storing `count` values as Float32: `sqrt(mean(ulp(x)² / 12))`,
  /// the standard deviation of a uniform error of ±½ ulp. A caller that computed a delta as
  /// `W_new − W_old` from Float32 tensors passes the noise of `W_new` (the larger operand).
  package static func float32RoundingNoiseRMS(_ p: UnsafePointer<Float>, count: Int) -> Double {
    guard count > 0 else { return 0 }
    var s = 0.0
    for k in 0..<count {
      let x = p[k]
      guard x.isFinite else { continue }
      let ulp = Double(x.ulp)
      s += ulp * ulp
    }
    return (s / (12 * Double(count))).squareRoot()
  }

  /// Finds the numerical rank of a dense Float32 delta and factors it as `ΔW ≈ U·Vᵀ`.
  ///
  /// Randomized range finder (Halko–Martinsson–Tropp 2011, Alg. 4.4 with one power iteration),
  /// all arithmetic in Float64 so that the computation's own error (~1e-16) stays far below the
  /// Float32 rounding noise it must tell apart from signal:
  /// 1. `Ω` (cols × k): approximately Gaussian (Irwin–Hall, 4 uniforms) from a SplitMix64
  ///    stream seeded with `seed`, so the same input gives the same factors everywhere.
  /// 2. `Y = ΔW·Ω`, `Q₁ = qr(Y)`, `Q₂ = qr(ΔWᵀ·Q₁)`, `Q = qr(ΔW·Q₂)` (`LAPACKE_dgeqrf`/`dorgqr`).
  /// 3. `B = Qᵀ·ΔW` (k × cols) and its SVD `B = U_B·Σ·V_Bᵀ` (`LAPACKE_dgesdd`).
  /// 4. Rank `r` = number of `σ_i > τ`, with `τ = 4·noiseRMS·(√rows + √cols)` (about 4× the
  ///    largest singular value of an i.i.d. noise matrix of that RMS); when `noiseRMS == 0`,
  ///    `τ = 1e-7·σ₀` (Float32's ε scale).
  /// 5. `U = Q·U_B[:, :r]·Σ_r`, `V = V_B[:, :r]`, rounded to Float32.
  /// 6. Verify: `‖ΔW − U·Vᵀ‖_F ≤ 2·noiseRMS·√(rows·cols) + 1e-6·‖ΔW‖_F`, computed one row block
  ///    at a time with the Float32 factors.
  ///
  /// `k` starts at `min(firstSketchRank, maxRank) + oversampling` (each pass over ΔW costs `k`
  /// multiply-adds per element, and the common case is one edit of rank 1 or 2, where 12
  /// columns are plenty). If every singular value of the sketch is
  /// above `τ`, or the check in step 6 fails, `k` grows ×4, up to `maxRank + oversampling`.
  /// ΔW is never copied whole: it is converted to Float64 one row block (~4 MB) at a time.
  ///
  /// - Parameters:
  ///   - delta: `rows × cols` row-major dense ΔW.
  ///   - noiseRMS: the caller's estimate of the per-element rounding noise in `delta` (see
  ///     ``float32RoundingNoiseRMS(_:count:)``), or `0` for a purely relative threshold.
  ///   - maxRank: the largest rank worth storing as factors.
  ///   - seed: seeds the test matrix `Ω`.
  /// - Returns: the factors (rank `0` with empty `u`/`v` for an all-zero delta), or nil when the
  ///   numerical rank exceeds `maxRank` or the factors cannot meet the residual bound — the caller
  ///   then stores the tensor densely.
  /// - Throws: `ApplyError.nonFinite` if `delta` holds NaN/Inf, `ApplyError.dimensionTooLarge`
  ///   if a dimension exceeds `Int32.max`, `ApplyError.lapackFailure` if `dgesdd` does not
  ///   converge.
  package static func lowRank(
    of delta: UnsafePointer<Float>, rows: Int, cols: Int, noiseRMS: Double, maxRank: Int,
    seed: UInt64 = 0x6D7663
  ) throws -> LowRankFactors? {
    precondition(rows >= 0 && cols >= 0 && maxRank >= 0 && noiseRMS >= 0)
    let operation = "low-rank factorization"
    guard MatrixShape(rows: rows, cols: cols).fitsBLAS else {
      throw ApplyError.dimensionTooLarge(operation: operation, rows: rows, cols: cols)
    }
    if let bad = firstNonFinite(delta, count: rows * cols) {
      throw ApplyError.nonFinite(operation: operation, elementIndex: bad)
    }
    return try lowRank(
      rows: rows, cols: cols, frobenius: DenseNorms.frobenius(delta, count: rows * cols), noiseRMS: noiseRMS,
      maxRank: maxRank, seed: seed
    ) { first, count, block in
      let source = delta + first * cols
      for k in 0..<(count * cols) { block[k] = Double(source[k]) }
    }
  }

  /// ``lowRank(of:rows:cols:noiseRMS:maxRank:seed:)`` of a ΔW that is never held whole:
  /// `deltaRows(first, count, block)` writes rows `first..<first + count` into `block`
  /// (row-major Float64, finite; called once per row block and pass, in order within each of
  /// the row parts, and from `workers` threads at once). The same factors as the pointer form
  /// when the rows are its Float32 elements widened and `frobenius` is
  /// ``DenseNorms/frobenius(_:count:)`` of them, and the same on any number of workers.
  ///
  /// `powerIterations` 0 skips step 2's power iteration (two of the five passes over ΔW): for
  /// factors that are refined afterwards (``refineAgainstRounding``), whose least-squares start
  /// does more than the iteration would (a bf16 rank-one edit of 4096×14336 stored 4% more
  /// bytes, an fp16 one 9% fewer, fp32 the same).
  package static func lowRank(
    rows: Int, cols: Int, frobenius norm: Double, noiseRMS: Double, maxRank: Int, seed: UInt64 = 0x6D7663,
    powerIterations: Int = 1, workers: Int = 1,
    deltaRows: (_ first: Int, _ count: Int, _ block: UnsafeMutablePointer<Double>) -> Void
  ) throws -> LowRankFactors? {
    precondition(rows >= 0 && cols >= 0 && maxRank >= 0 && noiseRMS >= 0)
    guard MatrixShape(rows: rows, cols: cols).fitsBLAS else {
      throw ApplyError.dimensionTooLarge(operation: "low-rank factorization", rows: rows, cols: cols)
    }
    if norm == 0 {
      return LowRankFactors(rank: 0, u: [], v: [], singularValues: [], residualFrobenius: 0)
    }
    return try withoutActuallyEscaping(deltaRows) { deltaRows in
      try lowRank(
        RowBlockedDelta(rows: rows, cols: cols, workers: workers, deltaRows: deltaRows), norm: norm, noiseRMS: noiseRMS,
        maxRank: maxRank, seed: seed, powerIterations: powerIterations)
    }
  }

  private static func lowRank(
    _ sketch: RowBlockedDelta, norm: Double, noiseRMS: Double, maxRank: Int, seed: UInt64, powerIterations: Int = 1
  ) throws -> LowRankFactors? {
    let (rows, cols) = (sketch.rows, sketch.cols)
    let fullRank = min(rows, cols)
    let kLimit = min(maxRank + oversampling, fullRank)
    let residualBound = 2 * noiseRMS * (Double(rows) * Double(cols)).squareRoot() + 1e-6 * norm
    let absoluteThreshold = 4 * noiseRMS * (Double(rows).squareRoot() + Double(cols).squareRoot())

    var k = min(min(firstSketchRank, maxRank) + oversampling, kLimit)
    while true {
      let svd = try sketch.randomizedSVD(sketchColumns: k, seed: seed, powerIterations: powerIterations)
      let threshold = noiseRMS > 0 ? absoluteThreshold : 1e-7 * (svd.sigma.first ?? 0)
      let rank = svd.sigma.prefix { $0 > threshold }.count
      if rank > maxRank { return nil }
      let sketchSaturated = rank == k && k < fullRank
      if !sketchSaturated {
        let factors = svd.factors(rank: rank)
        let residual = sketch.residualFrobenius(u: factors.u, v: factors.v, rank: rank)
        if residual <= residualBound {
          return LowRankFactors(
            rank: rank, u: factors.u, v: factors.v, singularValues: Array(svd.sigma.prefix(rank)),
            residualFrobenius: residual)
        }
      }
      if k >= kLimit { return nil }
      k = min(k * 4, kLimit)
    }
  }
}

/// A read-only ΔW that is multiplied in Float64 one row block at a time, so the working set is
/// one ~4 MB block rather than a Float64 copy of the whole tensor (or the tensor at all: the
/// rows come from `deltaRows`).
///
/// The rows are cut into ``partCount`` contiguous parts, fixed by the shape alone: each part's
/// blocks are converted and multiplied on a thread of their own (one BLAS thread each: the
/// caller keeps BLAS to one thread while `workers > 1`), and sums over rows are added part by
/// part in order, so the result does not depend on how many workers there are. One worker
/// converting while BLAS's threads wait for it spent a fifth of a commit's CPU in `sched_yield`.
private struct RowBlockedDelta {
  let rows: Int
  let cols: Int
  let blockRows: Int
  let workers: Int
  let deltaRows: (Int, Int, UnsafeMutablePointer<Double>) -> Void

  init(rows: Int, cols: Int, workers: Int, deltaRows: @escaping (Int, Int, UnsafeMutablePointer<Double>) -> Void) {
    self.rows = rows
    self.cols = cols
    self.blockRows = max(1, min(rows, (1 << 19) / max(cols, 1)))
    self.workers = max(1, workers)
    self.deltaRows = deltaRows
  }

  /// Two parts once each holds a few blocks (a tensor worth splitting), else one.
  var partCount: Int { rows >= 8 * blockRows ? 2 : 1 }

  /// Rows of part `p`.
  func part(_ p: Int) -> Range<Int> { (rows * p / partCount)..<(rows * (p + 1) / partCount) }

  /// `body(p)` for each part, on up to `workers` threads; the results in part order.
  func eachPart<T>(_ body: (Int) -> T) -> [T] {
    let count = partCount
    guard workers > 1 && count > 1 else { return (0..<count).map(body) }
    var results = [T?](repeating: nil, count: count)
    results.withUnsafeMutableBufferPointer { out in
      nonisolated(unsafe) let out = out
      withoutActuallyEscaping(body) { body in
        // Each call writes its own slot and reads ΔW's rows of its own part only.
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: count) { out[$0] = body($0) }
      }
    }
    // concurrentPerform returns once every iteration has, so every slot is filled.
    return results.compactMap { $0 }
  }

  /// Calls `body(firstRow, rowCount, block)` with each row block of `rows` in Float64.
  func forEachBlock(in range: Range<Int>, _ body: (Int, Int, UnsafeMutablePointer<Double>) -> Void) {
    let block = UnsafeMutablePointer<Double>.allocate(capacity: blockRows * cols)
    defer { block.deallocate() }
    var first = range.lowerBound
    while first < range.upperBound {
      let count = min(blockRows, range.upperBound - first)
      deltaRows(first, count, block)
      body(first, count, block)
      first += count
    }
  }

  /// `Yᵀ = G·ΔWᵀ` (k × rows row-major) for `G` k × cols row-major; i.e. `Y = ΔW·Gᵀ`.
  /// Row-major `Yᵀ` (k × rows) ≡ column-major `Y` (rows × k, lda = rows): ready for dgeqrf.
  func timesTransposed(_ g: [Double], k: Int) -> [Double] {
    var yt = [Double](repeating: 0, count: k * rows)
    yt.withUnsafeMutableBufferPointer { ytp in
      guard let base = ytp.baseAddress else { return }
      // Each part writes its own columns of Yᵀ.
      nonisolated(unsafe) let yt = base
      _ = eachPart { p in
        forEachBlock(in: part(p)) { first, count, block in
          // Yᵀ[:, first..<first+count] (k × count, ld = rows) = G (k × cols) · blockᵀ (cols × count)
          cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(k), blasInt(count), blasInt(cols),
            1, g, blasInt(cols), block, blasInt(cols), 0, yt + first, blasInt(rows))
        }
      }
    }
    return yt
  }

  /// `B = Qᵀ·ΔW` (k × cols row-major) for `Qᵀ` given as k × rows row-major, summed part by part.
  /// Row-major `B` (k × cols) ≡ column-major `Bᵀ = ΔWᵀ·Q` (cols × k, lda = cols).
  func projected(_ qt: [Double], k: Int) -> [Double] {
    let parts = eachPart { p -> [Double] in
      var b = [Double](repeating: 0, count: k * cols)
      let range = part(p)
      forEachBlock(in: range) { first, count, block in
        // B (k × cols) += Qᵀ[:, first..<first+count] (k × count, ld = rows) · block (count × cols)
        qt.withUnsafeBufferPointer { qtp in
          guard let qt = qtp.baseAddress else { return }
          cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, blasInt(k), blasInt(cols), blasInt(count),
            1, qt + first, blasInt(rows), block, blasInt(cols),
            first == range.lowerBound ? 0 : 1, &b, blasInt(cols))
        }
      }
      return b
    }
    var b = parts[0]
    for other in parts.dropFirst() {
      for index in b.indices { b[index] += other[index] }
    }
    return b
  }

  /// `‖ΔW − U·Vᵀ‖_F` with the Float32 factors, in Float64, one row block at a time.
  func residualFrobenius(u: [Float], v: [Float], rank: Int) -> Double {
    let ud = u.map(Double.init)
    let vd = v.map(Double.init)
    let sums = eachPart { p -> Double in
      var sum = 0.0
      forEachBlock(in: part(p)) { first, count, block in
        if rank > 0 {
          ud.withUnsafeBufferPointer { up in
            guard let u = up.baseAddress else { return }
            // block (count × cols) −= U[first..<first+count] (count × rank) · Vᵀ (rank × cols)
            cblas_dgemm(
              CblasRowMajor, CblasNoTrans, CblasTrans, blasInt(count), blasInt(cols),
              blasInt(rank), -1, u + first * rank, blasInt(rank), vd, blasInt(rank),
              1, block, blasInt(cols))
          }
        }
        for k in 0..<(count * cols) { sum += block[k] * block[k] }
      }
      return sum
    }
    return sums.reduce(0, +).squareRoot()
  }

  /// Steps 1–3 of ``Factorization/lowRank(of:rows:cols:noiseRMS:maxRank:seed:)`` for a sketch of
  /// `k` columns (`k ≤ min(rows, cols)`).
  func randomizedSVD(sketchColumns k: Int, seed: UInt64, powerIterations: Int) throws -> SketchSVD {
    var rng = SplitMix64(seed: seed)
    // Ωᵀ (k × cols) row-major; Y = ΔW·Ω.
    var omegaT = [Double](repeating: 0, count: k * cols)
    for idx in 0..<omegaT.count { omegaT[idx] = rng.nextGaussianDouble() }
    var qt = timesTransposed(omegaT, k: k)
    orthonormalizeColumns(&qt, m: rows, n: k)  // column-major Q₁ (rows × k) ≡ row-major Q₁ᵀ
    // Power iterations: Z = ΔWᵀ·Q₁ is column-major (cols × k) ≡ row-major Qᵀ·ΔW.
    for _ in 0..<powerIterations {
      var zt = projected(qt, k: k)
      orthonormalizeColumns(&zt, m: cols, n: k)
      qt = timesTransposed(zt, k: k)
      orthonormalizeColumns(&qt, m: rows, n: k)
    }
    var b = projected(qt, k: k)

    // SVD of B (k × cols row-major) ≡ SVD of column-major Bᵀ (cols × k, lda = cols):
    // Bᵀ = V_B·Σ·U_Bᵀ, so LAPACK's "U" (cols × k column-major) is V_B — read row-major it is V_Bᵀ,
    // one right singular vector per row — and its "VT" (k × k column-major) is U_Bᵀ, which read
    // row-major is U_B.
    var sigma = [Double](repeating: 0, count: k)
    var vbT = [Double](repeating: 0, count: k * cols)
    var ub = [Double](repeating: 0, count: k * k)
    let info = LAPACKE_dgesdd(
      LAPACK_COL_MAJOR, CChar(UInt8(ascii: "S")), blasInt(cols), blasInt(k), &b, blasInt(cols),
      &sigma, &vbT, blasInt(cols), &ub, blasInt(k))
    precondition(info >= 0, "LAPACKE_dgesdd: argument \(-info) is invalid")
    if info > 0 {
      throw ApplyError.lapackFailure(
        function: "LAPACKE_dgesdd", info: Int(info),
        meaning: "the divide-and-conquer SVD of the \(k) × \(cols) sketch did not converge")
    }
    return SketchSVD(qt: qt, ub: ub, vbT: vbT, sigma: sigma, k: k, rows: rows, cols: cols)
  }
}

/// The SVD of a sketch: `ΔW ≈ Q·U_B·Σ·V_Bᵀ`.
private struct SketchSVD {
  let qt: [Double]  // Qᵀ, k × rows row-major
  let ub: [Double]  // U_B, k × k row-major
  let vbT: [Double]  // V_Bᵀ, k × cols row-major
  let sigma: [Double]  // descending
  let k: Int
  let rows: Int
  let cols: Int

  /// `U = Q·U_B[:, :r]·Σ_r` (rows × r) and `V = V_B[:, :r]` (cols × r), row-major Float32.
  func factors(rank r: Int) -> (u: [Float], v: [Float]) {
    guard r > 0 else { return ([], []) }
    var ud = [Double](repeating: 0, count: rows * r)
    // U (rows × r) = (Qᵀ)ᵀ (rows × k) · U_B[:, :r] (k × r, ld = k)
    cblas_dgemm(
      CblasRowMajor, CblasTrans, CblasNoTrans, blasInt(rows), blasInt(r), blasInt(k),
      1, qt, blasInt(rows), ub, blasInt(k), 0, &ud, blasInt(r))
    var u = [Float](repeating: 0, count: rows * r)
    for i in 0..<rows {
      for t in 0..<r { u[i * r + t] = Float(ud[i * r + t] * sigma[t]) }
    }
    var v = [Float](repeating: 0, count: cols * r)
    for t in 0..<r {
      for j in 0..<cols { v[j * r + t] = Float(vbT[t * cols + j]) }
    }
    return (u, v)
  }
}

/// Replaces column-major `a` (m × n, lda = m, n ≤ m) by an orthonormal basis of its columns
/// (`LAPACKE_dgeqrf` then `LAPACKE_dorgqr`). Neither returns `info > 0`.
private func orthonormalizeColumns(_ a: inout [Double], m: Int, n: Int) {
  var tau = [Double](repeating: 0, count: n)
  var info = LAPACKE_dgeqrf(LAPACK_COL_MAJOR, blasInt(m), blasInt(n), &a, blasInt(m), &tau)
  precondition(info == 0, "LAPACKE_dgeqrf returned \(info)")
  info = LAPACKE_dorgqr(
    LAPACK_COL_MAJOR, blasInt(m), blasInt(n), blasInt(n), &a, blasInt(m), tau)
  precondition(info == 0, "LAPACKE_dorgqr returned \(info)")
}
