// AlphaEdit (Fang et al., ICLR 2025; jianghoucheng/AlphaEdit `AlphaEdit_main.py` and
// `experiments/evaluate.py::get_project`), in the conventions of EditSolvers.swift.
//
// The authors' code: `U, S, _ = svd(cov)`, P = U[:, S < nullspace_threshold] U[:, S < …]ᵀ on the
// raw second moment C₀ (not multiplied by mom2_update_weight), then per layer
// `upd = solve(P (K Kᵀ + cache_c) + L2·I, P K residᵀ)` (d_in×d_out), `W += updᵀ`, and after the
// batch `cache_c += K Kᵀ`. Here ΔW = updᵀ = R (A⁻¹PK)ᵀ with A = P(KKᵀ + cache_c) + L2·I: factors
// U = R (d_out×n), V = A⁻¹PK (d_in×n), rank ≤ n, and no d_out×d_in matrix is formed.

internal import CBLAS

/// P = ÛÛᵀ, the projector on the span of C₀'s singular directions below a threshold.
public struct NullSpaceProjector: Sendable {
  /// P, d_in×d_in row-major, symmetric (both triangles filled).
  public var projector: [Double]
  /// d_in.
  public var dimension: Int
  /// How many singular directions were kept (the rank of P).
  public var keptCount: Int
  /// The threshold the singular values were compared with.
  public var threshold: Double

  package init(projector: [Double], dimension: Int, keptCount: Int, threshold: Double) {
    self.projector = projector
    self.dimension = dimension
    self.keptCount = keptCount
    self.threshold = threshold
  }
}

extension EditSolvers {
  /// The null-space projector of AlphaEdit: P = Û Ûᵀ where Û holds the singular vectors of C₀
  /// whose singular values are below `threshold` (absolute, as `get_project` compares them).
  ///
  /// C₀ is symmetric positive semi-definite, so its SVD is its eigendecomposition (singular
  /// values = |eigenvalues|); this uses `LAPACKE_dsyevd` (Float64, divide and conquer) and forms
  /// P with one `cblas_dsyrk`. Minutes at d_in = 14336 on 2 cores: callers cache the result.
  /// - Parameters:
  ///   - covariance: C₀, d_in×d_in row-major, symmetric (the upper triangle is read).
  ///   - dimension: d_in.
  ///   - threshold: `nullspace_threshold` (2e-2 in the authors' Llama3-8B setting); finite, > 0.
  /// - Returns: P and the number of directions kept.
  /// - Throws: ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/invalidParameter(name:value:requirement:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``,
  ///   ``ApplyError/lapackFailure(function:info:meaning:)`` (the eigensolver did not converge).
  public static func nullSpaceProjector(
    covariance: [Double], dimension d: Int, threshold: Double
  ) throws -> NullSpaceProjector {
    try requireDimension("d_in", d)
    let (count, overflow) = d.multipliedReportingOverflow(by: d)
    guard !overflow, covariance.count == count else {
      throw ApplyError.shapeMismatch(
        input: "covariance", expected: "[\(d), \(d)]", actual: "\(covariance.count) elements")
    }
    guard threshold.isFinite, threshold > 0 else {
      throw ApplyError.invalidParameter(
        name: "nullspace threshold", value: threshold, requirement: "a finite value > 0")
    }
    try DenseKernels.requireFinite(covariance, input: "covariance", rowLength: d)
    // Row-major upper triangle ≡ col-major lower triangle; on return the buffer holds the
    // eigenvectors column-major (column j at j·d) ≡ row-major with eigenvector j as row j.
    var vectors = covariance
    var eigenvalues = [Double](repeating: 0, count: d)
    let info = LAPACKE_dsyevd(
      LAPACK_COL_MAJOR, CChar(UInt8(ascii: "V")), DenseKernels.lower, Int32(d), &vectors,
      Int32(d), &eigenvalues)
    precondition(info >= 0, "dsyevd rejected argument \(-info)")
    guard info == 0 else {
      throw ApplyError.lapackFailure(
        function: "dsyevd", info: Int(info),
        meaning: "the eigendecomposition of C₀ did not converge")
    }
    let kept = eigenvalues.indices.filter { abs(eigenvalues[$0]) < threshold }
    var selected = [Double](repeating: 0, count: kept.count * d)  // Ûᵀ, k×d row-major
    for (row, j) in kept.enumerated() {
      for i in 0..<d { selected[row * d + i] = vectors[j * d + i] }
    }
    var p = [Double](repeating: 0, count: count)
    if !kept.isEmpty {
      // P = (Ûᵀ)ᵀ(Ûᵀ): dsyrk with Trans on the k×d rows writes the row-major upper triangle.
      cblas_dsyrk(
        CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(kept.count), 1, selected,
        Int32(d), 0, &p, Int32(d))
      DenseKernels.mirrorUpperToLower(&p, dimension: d)
    }
    return NullSpaceProjector(projector: p, dimension: d, keptCount: kept.count, threshold: threshold)
  }

  /// Checks a d_in×d_in input of the sequential editors: element count and finiteness.
  static func requireSquare(_ a: [Double], name: String, dimension d: Int) throws {
    guard a.count == d * d else {
      throw ApplyError.shapeMismatch(input: name, expected: "[\(d), \(d)]", actual: "\(a.count) elements")
    }
    try DenseKernels.requireFinite(a, input: name, rowLength: d)
  }

  /// AlphaEdit's update from the residual rows (n×d_out, row i = v_i − W₀k_i), the projector and
  /// the accumulator of `problem`. A is not symmetric, so it is solved by LU (`dgesv`).
  static func solveAlphaEdit(
    _ problem: EditProblem, residualRows: [Double], residualNorm: Double
  ) throws -> EditUpdate {
    let n = problem.editCount
    let d = problem.dIn
    guard let p = problem.projector else {
      throw ApplyError.shapeMismatch(
        input: "null-space projector P", expected: "[\(d), \(d)]", actual: "none")
    }
    try requireSquare(p, name: "null-space projector P", dimension: d)
    guard problem.l2.isFinite, problem.l2 > 0 else {
      throw ApplyError.invalidParameter(name: "L2", value: problem.l2, requirement: "a finite value > 0")
    }
    // S = KKᵀ + cache_c, row-major, both triangles.
    var s: [Double]
    if let accumulator = problem.accumulator {
      try requireSquare(accumulator, name: "accumulator cache_c", dimension: d)
      s = accumulator
    } else {
      s = [Double](repeating: 0, count: d * d)
    }
    DenseKernels.addGram(ofRows: problem.keys, count: n, dimension: d, into: &s)
    DenseKernels.mirrorUpperToLower(&s, dimension: d)
    // Row-major M = S·P is, read column-major, Mᵀ = P·S (both symmetric): the A of the authors.
    var a = [Double](repeating: 0, count: d * d)
    cblas_dgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(d), Int32(d), Int32(d), 1, s, Int32(d), p,
      Int32(d), 0, &a, Int32(d))
    s = []
    for i in 0..<d { a[i * d + i] += problem.l2 }
    // Row-major Kᵀ·P (n×d, keys as rows) ≡ column-major P·K (d×n, ld = d): the right-hand side.
    var rhs = [Double](repeating: 0, count: n * d)
    cblas_dgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(d), Int32(d), 1, problem.keys,
      Int32(d), p, Int32(d), 0, &rhs, Int32(d))
    let solved = DenseKernels.luSolve(&a, dimension: d, rightHandSides: &rhs, count: n)
    guard solved.info == 0, solved.rcond >= singularityLimit(dimension: d) else {
      throw ApplyError.lapackFailure(
        function: "dgesv", info: solved.info,
        meaning:
          "P(KKᵀ + cache_c) + L2·I is singular (reciprocal condition \(solved.rcond)); raise L2")
    }
    // rhs now holds column-major A⁻¹PK ≡ row-major (A⁻¹PK)ᵀ, n×d.
    try DenseKernels.requireFinite(rhs, input: "A⁻¹·P·K_E", rowLength: d)
    let diagnostics = EditDiagnostics(
      romeDenominator: nil, romeNormalizedDenominator: nil, residualNorm: residualNorm,
      covarianceReciprocalCondition: solved.rcond, gramReciprocalCondition: nil, ridge: problem.l2,
      usedLUFallback: true)
    return EditUpdate(
      u: DenseKernels.transposed(residualRows, rows: n, columns: problem.dOut),
      v: DenseKernels.transposed(rhs, rows: n, columns: d), rank: n, dOut: problem.dOut, dIn: d,
      weightIsTransposed: problem.weightIsTransposed, diagnostics: diagnostics)
  }
}

extension EditSolvers {
  /// c += scale · Σᵢ kᵢkᵢᵀ for keys given as n×d rows, both triangles of c updated (the
  /// accumulator of AlphaEdit and ENCORE). Wraps `cblas_dsyrk`.
  /// - Throws: ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  package static func addGram(
    ofKeys keys: [Double], dimension d: Int, scale: Double, into c: inout [Double]
  ) throws {
    try requireDimension("d_in", d)
    guard c.count == d * d, !keys.isEmpty, keys.count % d == 0 else {
      throw ApplyError.shapeMismatch(
        input: "keys", expected: "[n, \(d)] and a [\(d), \(d)] accumulator",
        actual: "\(keys.count) key elements, \(c.count) accumulator elements")
    }
    try DenseKernels.requireFinite(keys, input: "keys", rowLength: d)
    DenseKernels.addGram(ofRows: keys, count: keys.count / d, dimension: d, into: &c, scale: scale)
    DenseKernels.mirrorUpperToLower(&c, dimension: d)
  }
}
