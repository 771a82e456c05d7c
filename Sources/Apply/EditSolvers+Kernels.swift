internal import CBLAS

/// A borrowed weight matrix in its file precision.
enum WeightElements {
  case float32(UnsafeBufferPointer<Float>)
  case float64(UnsafeBufferPointer<Double>)
}

/// The BLAS/LAPACK calls behind ``EditSolvers``. All CBLAS calls pass `CblasRowMajor`; LAPACK is
/// called column-major (`LAPACK_COL_MAJOR`, no hidden transposes) on buffers whose column-major
/// reading is stated at each call site. Dimensions were checked to fit Int32 by the caller.
enum DenseKernels {
  /// Elements of storage rows widened to Float64 per block (2 MB of Double).
  static let blockElementCount = 1 << 18

  static let lower = CChar(UInt8(ascii: "L"))
  static let oneNorm = CChar(UInt8(ascii: "1"))

  // MARK: - Checks and small helpers

  static func requireFinite(_ a: [Double], input: String, rowLength: Int) throws {
    if let index = a.firstIndex(where: { !$0.isFinite }) {
      throw ApplyError.nonFiniteInput(input: input, index: index, rowLength: rowLength)
    }
  }

  static func requireFinite(_ a: [Float], input: String, rowLength: Int) throws {
    try a.withUnsafeBufferPointer { try requireFinite($0, input: input, rowLength: rowLength) }
  }

  static func requireFinite(
    _ a: UnsafeBufferPointer<Float>, input: String, rowLength: Int
  ) throws {
    if let index = a.firstIndex(where: { !$0.isFinite }) {
      throw ApplyError.nonFiniteInput(input: input, index: index, rowLength: rowLength)
    }
  }

  static func scaled(_ a: [Double], by factor: Double) -> [Double] {
    factor == 1 ? a : a.map { $0 * factor }
  }

  /// Σ aᵢ² accumulated in Float64, then the square root.
  static func frobeniusNorm(_ a: [Double]) -> Double {
    guard !a.isEmpty else { return 0 }
    return cblas_dnrm2(Int32(a.count), a, 1)
  }

  static func dot(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    return cblas_ddot(Int32(a.count), a, 1, b, 1)
  }

  static func transposed(_ a: [Double], rows: Int, columns: Int) -> [Double] {
    precondition(a.count == rows * columns)
    if rows == 1 || columns == 1 { return a }
    var result = [Double](repeating: 0, count: a.count)
    a.withUnsafeBufferPointer { src in
      result.withUnsafeMutableBufferPointer { dst in
        for i in 0..<rows {
          for j in 0..<columns { dst[j * rows + i] = src[i * columns + j] }
        }
      }
    }
    return result
  }

  static func symmetrize(_ a: inout [Double], dimension n: Int) {
    for i in 0..<n {
      for j in (i + 1)..<max(i + 1, n) {
        let mean = 0.5 * (a[i * n + j] + a[j * n + i])
        a[i * n + j] = mean
        a[j * n + i] = mean
      }
    }
  }

  static func mirrorUpperToLower(_ a: inout [Double], dimension n: Int) {
    for i in 0..<n {
      for j in (i + 1)..<max(i + 1, n) { a[j * n + i] = a[i * n + j] }
    }
  }

  // MARK: - Products

  /// a (rows×inner) · bᵀ (inner×rows) → rows×rows, row-major. Wraps `cblas_dgemm`.
  static func multiplyByTranspose(_ a: [Double], _ b: [Double], rows: Int, inner: Int) -> [Double] {
    precondition(a.count == rows * inner && b.count == rows * inner)
    var c = [Double](repeating: 0, count: rows * rows)
    cblas_dgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(rows), Int32(inner),
      1, a, Int32(inner), b, Int32(inner), 0, &c, Int32(rows))
    return c
  }

  /// c += scale · Kᵀ K for K given as `count` rows of length `dimension`; updates only the
  /// row-major upper triangle of c (≡ column-major lower, what `dpotrf('L')` reads).
  /// Wraps `cblas_dsyrk`.
  static func addGram(
    ofRows keys: [Double], count: Int, dimension: Int, into c: inout [Double], scale: Double = 1
  ) {
    precondition(keys.count == count * dimension && c.count == dimension * dimension)
    cblas_dsyrk(
      CblasRowMajor, CblasUpper, CblasTrans, Int32(dimension), Int32(count), scale, keys,
      Int32(dimension), 1, &c, Int32(dimension))
  }

  /// P = Keys · W₀ᵀ (n×d_out, row-major, Float64) for keys as n×d_in rows.
  ///
  /// Float32 weights are widened one block of storage rows at a time, so no d_out×d_in Float64
  /// copy exists. Stored W₀ (d_out×d_in): P[:, r0..<r1] = Keys · W[r0..<r1, :]ᵀ. Stored W₀ᵀ
  /// (d_in×d_out): P += Keys[:, i0..<i1] · Wᵀ[i0..<i1, :]. Wraps `cblas_dgemm`.
  static func project(
    keys: [Double], count n: Int, weights: WeightElements, dOut: Int, dIn: Int, transposed: Bool
  ) -> [Double] {
    precondition(keys.count == n * dIn)
    var p = [Double](repeating: 0, count: n * dOut)
    switch weights {
    case .float64(let w):
      precondition(w.count == dOut * dIn)
      guard let base = w.baseAddress else { return p }
      if transposed {
        cblas_dgemm(
          CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(dOut), Int32(dIn),
          1, keys, Int32(dIn), base, Int32(dOut), 0, &p, Int32(dOut))
      } else {
        cblas_dgemm(
          CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(dOut), Int32(dIn),
          1, keys, Int32(dIn), base, Int32(dIn), 0, &p, Int32(dOut))
      }
    case .float32(let w):
      precondition(w.count == dOut * dIn)
      let storageRows = transposed ? dIn : dOut
      let storageColumns = transposed ? dOut : dIn
      forEachWidenedBlock(w, storageRows: storageRows, storageColumns: storageColumns) {
        first, rowCount, block in
        accumulateBlock(
          keys: keys, n: n, dOut: dOut, dIn: dIn, transposed: transposed, firstRow: first,
          rowCount: rowCount, block: block, into: &p, scale: 1)
      }
    }
    return p
  }

  /// Calls `body(firstRow, rowCount, block)` with consecutive storage rows widened to Float64.
  static func forEachWidenedBlock(
    _ w: UnsafeBufferPointer<Float>, storageRows: Int, storageColumns: Int,
    _ body: (Int, Int, UnsafePointer<Double>) -> Void
  ) {
    let rowsPerBlock = max(1, min(storageRows, blockElementCount / max(storageColumns, 1)))
    var block = [Double](repeating: 0, count: rowsPerBlock * storageColumns)
    block.withUnsafeMutableBufferPointer { buffer in
      guard let blockBase = buffer.baseAddress else { return }
      var first = 0
      while first < storageRows {
        let rowCount = min(rowsPerBlock, storageRows - first)
        let offset = first * storageColumns
        for index in 0..<(rowCount * storageColumns) {
          blockBase[index] = Double(w[offset + index])
        }
        body(first, rowCount, UnsafePointer(blockBase))
        first += rowCount
      }
    }
  }

  /// Adds `scale` · (the contribution of one block of storage rows) to P = Keys · Wᵀ.
  static func accumulateBlock(
    keys: [Double], n: Int, dOut: Int, dIn: Int, transposed: Bool, firstRow: Int, rowCount: Int,
    block: UnsafePointer<Double>, into p: inout [Double], scale: Double
  ) {
    keys.withUnsafeBufferPointer { k in
      p.withUnsafeMutableBufferPointer { out in
        guard let kBase = k.baseAddress, let outBase = out.baseAddress else { return }
        if transposed {
          // Block = Wᵀ[i0..<i1, :] (rowCount×d_out); Keys[:, i0..<i1] is n×rowCount, lda = d_in.
          cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(dOut), Int32(rowCount),
            scale, kBase + firstRow, Int32(dIn), block, Int32(dOut), 1, outBase, Int32(dOut))
        } else {
          // Block = W[r0..<r1, :] (rowCount×d_in); writes columns r0..<r1 of P (ldc = d_out).
          cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(rowCount), Int32(dIn),
            scale, kBase, Int32(dIn), block, Int32(dIn), 1, outBase + firstRow, Int32(dOut))
        }
      }
    }
  }

  // MARK: - Factorizations and solves

  /// Cholesky A = L·Lᵀ in place, reading the column-major lower triangle (≡ row-major upper).
  /// Returns `dpotrf`'s info (> 0: leading minor `info` not positive) and, on success, `dpocon`'s
  /// reciprocal 1-norm condition estimate. Wraps `LAPACKE_dlansy`, `LAPACKE_dpotrf`,
  /// `LAPACKE_dpocon`.
  static func choleskyFactor(_ a: inout [Double], dimension n: Int) -> (info: Int, rcond: Double) {
    precondition(a.count == n * n)
    let norm = LAPACKE_dlansy(LAPACK_COL_MAJOR, oneNorm, lower, Int32(n), &a, Int32(n))
    let info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, lower, Int32(n), &a, Int32(n))
    precondition(info >= 0, "dpotrf rejected argument \(-info)")
    guard info == 0 else { return (Int(info), 0) }
    var rcond = 0.0
    let conInfo = LAPACKE_dpocon(LAPACK_COL_MAJOR, lower, Int32(n), &a, Int32(n), norm, &rcond)
    precondition(conInfo == 0, "dpocon rejected argument \(-conInfo)")
    return (0, rcond)
  }

  /// Solves A·X = B with A's Cholesky factor; B is column-major n×count (ld = n) and is
  /// overwritten by X. Wraps `LAPACKE_dpotrs`.
  static func choleskySolve(
    factor: [Double], dimension n: Int, rightHandSides b: inout [Double], count: Int
  ) {
    precondition(factor.count == n * n && b.count == n * count)
    let info = LAPACKE_dpotrs(
      LAPACK_COL_MAJOR, lower, Int32(n), Int32(count), factor, Int32(n), &b, Int32(n))
    precondition(info == 0, "dpotrs rejected argument \(-info)")
  }

  /// LU with partial pivoting (`dgesv`) and the reciprocal 1-norm condition (`dgecon`). A is
  /// column-major n×n (overwritten by its factors), B column-major n×count (overwritten by X).
  static func luSolve(
    _ a: inout [Double], dimension n: Int, rightHandSides b: inout [Double], count: Int
  ) -> (info: Int, rcond: Double) {
    precondition(a.count == n * n && b.count == n * count)
    let norm = LAPACKE_dlange(LAPACK_COL_MAJOR, oneNorm, Int32(n), Int32(n), &a, Int32(n))
    var pivots = [Int32](repeating: 0, count: n)
    let info = LAPACKE_dgesv(
      LAPACK_COL_MAJOR, Int32(n), Int32(count), &a, Int32(n), &pivots, &b, Int32(n))
    precondition(info >= 0, "dgesv rejected argument \(-info)")
    guard info == 0 else { return (Int(info), 0) }
    var rcond = 0.0
    let conInfo = LAPACKE_dgecon(LAPACK_COL_MAJOR, oneNorm, Int32(n), &a, Int32(n), norm, &rcond)
    precondition(conInfo == 0, "dgecon rejected argument \(-conInfo)")
    return (0, rcond)
  }
}
