// ENCORE (Gupta et al. 2025; scalable-model-editing/knowledge-editing-regularization,
// `encore/encore_main.py`), in the conventions of EditSolvers.swift.
//
// The authors' code, per layer and in Float64: cov = λ·C₀ (`mom2_update_weight`), cov += α·I
// (`update_norm_lambda`), cov += SEQ_CACHE (Σ KKᵀ of the earlier edits, `add_prev_edits`),
// `adj_k = solve(cov + K Kᵀ, K)`, `upd = resid @ adj_kᵀ`. Factors U = R (d_out×n), V = adj_k
// (d_in×n). The matrix is symmetric positive definite: one Cholesky, as MEMIT.

extension EditSolvers {
  static func solveEncore(
    _ problem: EditProblem, residualRows: [Double], residualNorm: Double
  ) throws -> EditUpdate {
    let n = problem.editCount
    let d = problem.dIn
    guard problem.normLambda.isFinite, problem.normLambda >= 0 else {
      throw ApplyError.invalidParameter(
        name: "norm lambda", value: problem.normLambda, requirement: "a finite value ≥ 0")
    }
    var a = DenseKernels.scaled(problem.covariance, by: problem.lambda)
    for i in 0..<d { a[i * d + i] += problem.normLambda }
    if let accumulator = problem.accumulator {
      try requireSquare(accumulator, name: "accumulator SEQ_CACHE", dimension: d)
      for index in a.indices { a[index] += accumulator[index] }
    }
    DenseKernels.addGram(ofRows: problem.keys, count: n, dimension: d, into: &a)
    let rcond = try factorCovariance(
      &a, dimension: d, name: "λ·C₀ + α·I + SEQ_CACHE + K_E·K_Eᵀ", lambda: problem.lambda)
    var solvedRows = problem.keys  // ≡ col-major K_E; becomes col-major adj_k = A⁻¹K_E
    DenseKernels.choleskySolve(factor: a, dimension: d, rightHandSides: &solvedRows, count: n)
    try DenseKernels.requireFinite(solvedRows, input: "adj_k", rowLength: d)
    let diagnostics = EditDiagnostics(
      romeDenominator: nil, romeNormalizedDenominator: nil, residualNorm: residualNorm,
      covarianceReciprocalCondition: rcond, gramReciprocalCondition: nil,
      ridge: problem.normLambda, usedLUFallback: false)
    return EditUpdate(
      u: DenseKernels.transposed(residualRows, rows: n, columns: problem.dOut),
      v: DenseKernels.transposed(solvedRows, rows: n, columns: d), rank: n, dOut: problem.dOut,
      dIn: d, weightIsTransposed: problem.weightIsTransposed, diagnostics: diagnostics)
  }
}
