// Closed-form knowledge-edit updates (ROME, EMMET, single-layer MEMIT), returned as factors.
//
// Conventions used throughout this file (docs/editing-science.md §1–§2):
// - W is d_out×d_in in *math orientation*: v = W·k. Keys k are d_in-vectors (the input of the MLP
//   down-projection), values v are d_out-vectors.
// - In the formulas, K_E (d_in×n) and V_E (d_out×n) hold the edit keys and targets as *columns*.
//   The public API takes them as *rows* (n×d_in and n×d_out, row-major), the way files store them.
// - R = V_E − W₀K_E is the residual; C₀ = E[kkᵀ] is the uncentred second moment of the preservation
//   keys (d_in×d_in); λ = `mom2_update_weight`, C = λC₀; μ is EMMET's ridge (`emmet_lambda`).
// - Every update is ΔW = U·Vᵀ with U d_out×r and V d_in×r, row-major. No d_out×d_in matrix is ever
//   formed, and no inverse: only Cholesky (`dpotrf`/`dpotrs`) and, for EMMET's n×n system, an LU
//   fallback (`dgesv`).
//
// Buffer identities used with LAPACK (column-major) on row-major buffers:
// - the keys buffer, row-major n×d_in, *is* column-major K_E (d_in×n, ld = d_in);
// - a symmetric matrix is the same buffer in either order; its column-major lower triangle is the
//   row-major upper triangle.

// Foundation only for `LocalizedError` (the module's error convention); no hot loop uses it.
import Foundation

/// The elements of a weight matrix, in the precision the file stores them.
public enum EditWeights: Sendable {
  /// Float32 elements (converted to Float64 block by block, never all at once).
  case float32([Float])
  /// Float64 elements.
  case float64([Double])

  /// The number of elements.
  package var elementCount: Int {
    switch self {
    case .float32(let values): return values.count
    case .float64(let values): return values.count
    }
  }
}

/// One closed-form edit of one weight matrix.
///
/// Shapes (row-major):
/// - `w0`: d_out×d_in, or d_in×d_out when `weightIsTransposed` (GPT-2 `Conv1D` stores Wᵀ);
/// - `keys`: n×d_in, one edit key per row (row i is column i of K_E);
/// - `values`: n×d_out, one target per row (row i is column i of V_E);
/// - `covariance`: d_in×d_in, C₀ = E[kkᵀ] (not yet multiplied by λ). It must be symmetric; only its
///   upper triangle (row-major) is read by the factorizations.
public struct EditProblem: Sendable {
  /// The unedited weights W₀.
  package var w0: EditWeights
  /// d_out, the length of a value vector.
  package var dOut: Int
  /// d_in, the length of a key vector.
  package var dIn: Int
  /// `true` when `w0` is stored d_in×d_out (Wᵀ, GPT-2 `Conv1D`); the result's storage factors follow.
  package var weightIsTransposed: Bool
  /// Edit keys as rows, n×d_in.
  package var keys: [Double]
  /// Edit targets as rows, n×d_out.
  package var values: [Double]
  /// C₀, d_in×d_in, the uncentred second moment of the preservation keys.
  package var covariance: [Double]
  /// λ = `mom2_update_weight`; C = λC₀. Must be finite and positive.
  package var lambda: Double
  /// μ, EMMET's ridge on Kᵀ C⁻¹ K, added only when n > 1 (as `emmet_main.py` does). Must be ≥ 0.
  package var mu: Double
  /// AlphaEdit and ENCORE (EditSolvers+AlphaEdit.swift, +Encore.swift): Σ KKᵀ over the keys of
  /// the earlier edits (`cache_c`, `SEQ_CACHE`), d_in×d_in symmetric; nil means no earlier edit.
  package var accumulator: [Double]? = nil
  /// AlphaEdit: the null-space projector P = ÛÛᵀ, d_in×d_in symmetric (``EditSolvers/nullSpaceProjector(covariance:dimension:threshold:)``).
  package var projector: [Double]? = nil
  /// AlphaEdit: `L2`, the ridge on P(KKᵀ + cache_c). Must be finite and > 0.
  package var l2: Double = 10
  /// ENCORE: α = `update_norm_lambda`, the norm penalty α·I. Must be finite and ≥ 0.
  package var normLambda: Double = 20

  /// n, the number of edits (rows of `keys`).
  package var editCount: Int { dIn > 0 ? keys.count / dIn : 0 }

  /// Creates a problem; nothing is checked until ``EditSolvers/solve(_:method:)``.
  public init(
    w0: EditWeights, dOut: Int, dIn: Int, weightIsTransposed: Bool = false,
    keys: [Double], values: [Double], covariance: [Double], lambda: Double = 1, mu: Double = 0.1
  ) {
    self.w0 = w0
    self.dOut = dOut
    self.dIn = dIn
    self.weightIsTransposed = weightIsTransposed
    self.keys = keys
    self.values = values
    self.covariance = covariance
    self.lambda = lambda
    self.mu = mu
  }
}

/// The closed-form update rule.
public enum EditMethod: String, Sendable, CaseIterable {
  /// ΔW = (v − W₀k)(C⁻¹k)ᵀ / (kᵀC⁻¹k): one key, rank 1, equality constraint.
  case rome
  /// ΔW = R (K_EᵀC⁻¹K_E + μI)⁻¹ K_EᵀC⁻¹: n equality constraints (ridge μ when n > 1).
  case emmet
  /// ΔW = R K_Eᵀ (λC₀ + K_EK_Eᵀ)⁻¹: least squares, one layer (the caller divides R across layers).
  case memit
  /// ΔW = updᵀ, upd = (P(K_EK_Eᵀ + cache_c) + L2·I)⁻¹ P K_E Rᵀ: MEMIT's update projected on the
  /// null space of the preserved keys (Fang et al., ICLR 2025).
  case alphaedit
  /// ΔW = R K_Eᵀ (λC₀ + α·I + SEQ_CACHE + K_EK_Eᵀ)⁻¹: MEMIT with the earlier edits' keys and a
  /// norm penalty (Gupta et al. 2025).
  case encore
}

/// Numbers worth keeping beside an edit (docs/editing-science.md §3.1, §4.5).
public struct EditDiagnostics: Sendable, Equatable {
  /// ROME only: kᵀC⁻¹k with C = λC₀ (scales as 1/λ).
  public var romeDenominator: Double?
  /// ROME only: kᵀC⁻¹k / ‖C⁻¹k‖, the λ-invariant "|k·u|" of the authors' code; below ≈0.1 is suspect.
  public var romeNormalizedDenominator: Double?
  /// ‖R‖_F = ‖V_E − W₀K_E‖_F.
  package var residualNorm: Double
  /// LAPACK's reciprocal condition estimate (`dpocon`, 1-norm) of the d_in×d_in matrix factored:
  /// λC₀ (ROME, EMMET) or λC₀ + K_EK_Eᵀ (MEMIT).
  package var covarianceReciprocalCondition: Double
  /// EMMET only: reciprocal condition estimate of G = K_EᵀC⁻¹K_E + μI.
  package var gramReciprocalCondition: Double?
  /// The ridge actually added to G (μ when n > 1, else 0); `nil` for ROME and MEMIT.
  package var ridge: Double?
  /// `true` when G failed Cholesky (not numerically positive definite) and was solved by LU.
  package var usedLUFallback: Bool
}

/// A low-rank update ΔW = U·Vᵀ in math orientation.
///
/// `u` is d_out×`rank` and `v` is d_in×`rank`, both row-major Float64. `rank` is the factor width
/// (1 for ROME, n for EMMET and MEMIT), not a numerical rank.
/// In storage orientation, ΔW_storage = `storageLeft`·`storageRightᵀ`: U·Vᵀ for `nn.Linear`
/// (d_out×d_in) and V·Uᵀ for GPT-2 `Conv1D` (d_in×d_out, `weightIsTransposed`).
public struct EditUpdate: Sendable {
  /// U, d_out×rank, row-major.
  public var u: [Double]
  /// V, d_in×rank, row-major.
  public var v: [Double]
  /// The factor width r.
  public var rank: Int
  /// d_out.
  package var dOut: Int
  /// d_in.
  package var dIn: Int
  /// Copied from the problem: whether the stored weight is d_in×d_out.
  package var weightIsTransposed: Bool
  /// Conditioning and ROME figures.
  public var diagnostics: EditDiagnostics

  /// The left factor in storage orientation (rows of the stored matrix × rank): `v` when transposed.
  public var storageLeft: [Double] { weightIsTransposed ? v : u }
  /// The right factor in storage orientation (columns of the stored matrix × rank).
  public var storageRight: [Double] { weightIsTransposed ? u : v }
  /// The stored matrix's row count: d_in when transposed, else d_out.
  public var storageRowCount: Int { weightIsTransposed ? dIn : dOut }
  /// The stored matrix's column count.
  public var storageColumnCount: Int { weightIsTransposed ? dOut : dIn }
}

/// Closed-form edit solvers and the weight-only scores built on them.
public enum EditSolvers {
  /// A factorization whose reciprocal condition estimate is below `dimension · ε` (Float64) is
  /// treated as singular: beyond that, solves lose all digits.
  static func singularityLimit(dimension: Int) -> Double {
    Double(max(dimension, 1)) * Double.ulpOfOne
  }

  /// Solves one edit in Float64 and returns it as factors.
  ///
  /// - ROME (n = 1): U = (v − W₀k)/(kᵀC⁻¹k) (d_out×1), V = C⁻¹k (d_in×1), with C = λC₀. U and V
  ///   each depend on λ; their product does not.
  /// - EMMET: V = C⁻¹K_E (d_in×n, Cholesky solve), G = K_EᵀV + μI (μ only when n > 1),
  ///   U = R·G⁻¹ (solve with G), so ΔW = R (K_EᵀC⁻¹K_E + μI)⁻¹ K_EᵀC⁻¹ = U·Vᵀ.
  ///   Note EMMET(λ, μ) = EMMET(1, λμ): scaling C by λ is a ridge λμ on K_EᵀC₀⁻¹K_E.
  /// - MEMIT (one layer): U = R (d_out×n), V = (λC₀ + K_EK_Eᵀ)⁻¹K_E (d_in×n, Cholesky solve).
  ///
  /// W₀K_E is accumulated in Float64 (Float32 weights are widened in blocks of rows).
  ///
  /// - Parameters:
  ///   - problem: the weights, keys, targets, covariance, λ and μ.
  ///   - method: the update rule.
  /// - Returns: ΔW = U·Vᵀ in math orientation; see ``EditUpdate`` for the storage orientation.
  /// - Throws: ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/invalidParameter(name:value:requirement:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``,
  ///   ``ApplyError/covarianceNotPositiveDefinite(matrix:dimension:leadingMinor:reciprocalCondition:lambda:)``,
  ///   ``ApplyError/keysCollinear(keyIndex:editCount:reciprocalCondition:)`` (EMMET),
  ///   ``ApplyError/romeDenominatorNotPositive(denominator:)`` (ROME).
  public static func solve(_ problem: EditProblem, method: EditMethod) throws -> EditUpdate {
    try validate(problem, method: method)
    let n = problem.editCount
    let dOut = problem.dOut
    let dIn = problem.dIn

    // residualRows (n×d_out) = V_Eᵀ − K_EᵀW₀ᵀ, i.e. row i is v_i − W₀k_i.
    var residualRows = try project(problem)
    for index in residualRows.indices {
      residualRows[index] = problem.values[index] - residualRows[index]
    }
    try DenseKernels.requireFinite(residualRows, input: "V_E − W₀·K_E", rowLength: dOut)
    let residualNorm = DenseKernels.frobeniusNorm(residualRows)

    switch method {
    case .rome:
      var c = DenseKernels.scaled(problem.covariance, by: problem.lambda)
      let cFactor = try factorCovariance(&c, dimension: dIn, name: "λ·C₀", lambda: problem.lambda)
      var x = problem.keys  // k, d_in×1
      DenseKernels.choleskySolve(factor: c, dimension: dIn, rightHandSides: &x, count: 1)
      let denominator = DenseKernels.dot(problem.keys, x)
      guard denominator > 0, denominator.isFinite else {
        throw ApplyError.romeDenominatorNotPositive(denominator: denominator)
      }
      let u = residualRows.map { $0 / denominator }
      let diagnostics = EditDiagnostics(
        romeDenominator: denominator,
        romeNormalizedDenominator: denominator / DenseKernels.frobeniusNorm(x),
        residualNorm: residualNorm, covarianceReciprocalCondition: cFactor,
        gramReciprocalCondition: nil, ridge: nil, usedLUFallback: false)
      return EditUpdate(
        u: u, v: x, rank: 1, dOut: dOut, dIn: dIn,
        weightIsTransposed: problem.weightIsTransposed, diagnostics: diagnostics)

    case .emmet:
      var c = DenseKernels.scaled(problem.covariance, by: problem.lambda)
      let cRcond = try factorCovariance(&c, dimension: dIn, name: "λ·C₀", lambda: problem.lambda)
      // keys buffer (n×d_in row-major) ≡ col-major K_E (d_in×n, ld = d_in); after the solve it
      // holds col-major C⁻¹K_E ≡ row-major (C⁻¹K_E)ᵀ, n×d_in.
      var solvedRows = problem.keys
      DenseKernels.choleskySolve(factor: c, dimension: dIn, rightHandSides: &solvedRows, count: n)
      c = []  // release d_in² doubles before the n×n work
      try DenseKernels.requireFinite(solvedRows, input: "C⁻¹·K_E", rowLength: dIn)

      // G = K_Eᵀ (C⁻¹K_E): n×n = keys (n×d_in) · solvedRowsᵀ. Symmetrized, since rounding is not.
      var gram = DenseKernels.multiplyByTranspose(problem.keys, solvedRows, rows: n, inner: dIn)
      DenseKernels.symmetrize(&gram, dimension: n)
      let ridge = n > 1 ? problem.mu : 0
      if ridge != 0 {
        for i in 0..<n { gram[i * n + i] += ridge }
      }
      try DenseKernels.requireFinite(gram, input: "K_Eᵀ·C⁻¹·K_E", rowLength: n)

      // Row-major R (d_out×n) ≡ col-major Rᵀ (n×d_out, ld = n); solving G·X = Rᵀ leaves
      // col-major G⁻¹Rᵀ ≡ row-major R·G⁻¹ (G symmetric) = U, d_out×n.
      var u = DenseKernels.transposed(residualRows, rows: n, columns: dOut)
      let gramSolve = try solveGram(gram, dimension: n, rightHandSides: &u, count: dOut)
      let diagnostics = EditDiagnostics(
        romeDenominator: nil, romeNormalizedDenominator: nil, residualNorm: residualNorm,
        covarianceReciprocalCondition: cRcond, gramReciprocalCondition: gramSolve.rcond,
        ridge: ridge, usedLUFallback: gramSolve.usedLU)
      return EditUpdate(
        u: u, v: DenseKernels.transposed(solvedRows, rows: n, columns: dIn), rank: n,
        dOut: dOut, dIn: dIn, weightIsTransposed: problem.weightIsTransposed,
        diagnostics: diagnostics)

    case .memit:
      // A = λC₀ + K_EK_Eᵀ (only the row-major upper triangle is updated and read).
      var a = DenseKernels.scaled(problem.covariance, by: problem.lambda)
      DenseKernels.addGram(ofRows: problem.keys, count: n, dimension: dIn, into: &a)
      let aRcond = try factorCovariance(
        &a, dimension: dIn, name: "λ·C₀ + K_E·K_Eᵀ", lambda: problem.lambda)
      var solvedRows = problem.keys  // ≡ col-major K_E; becomes col-major A⁻¹K_E
      DenseKernels.choleskySolve(factor: a, dimension: dIn, rightHandSides: &solvedRows, count: n)
      try DenseKernels.requireFinite(solvedRows, input: "(λ·C₀ + K_E·K_Eᵀ)⁻¹·K_E", rowLength: dIn)
      let diagnostics = EditDiagnostics(
        romeDenominator: nil, romeNormalizedDenominator: nil, residualNorm: residualNorm,
        covarianceReciprocalCondition: aRcond, gramReciprocalCondition: nil, ridge: nil,
        usedLUFallback: false)
      return EditUpdate(
        u: DenseKernels.transposed(residualRows, rows: n, columns: dOut),
        v: DenseKernels.transposed(solvedRows, rows: n, columns: dIn), rank: n,
        dOut: dOut, dIn: dIn, weightIsTransposed: problem.weightIsTransposed,
        diagnostics: diagnostics)

    case .alphaedit:
      return try solveAlphaEdit(problem, residualRows: residualRows, residualNorm: residualNorm)

    case .encore:
      return try solveEncore(problem, residualRows: residualRows, residualNorm: residualNorm)
    }
  }

  /// The uncentred second moment C₀ = K₀ᵀK₀/m of preservation keys given as rows.
  ///
  /// With fewer than `dIn` linearly independent keys the result is singular and every solver
  /// rejects it (``ApplyError/covarianceNotPositiveDefinite(matrix:dimension:leadingMinor:reciprocalCondition:lambda:)``).
  /// - Parameters:
  ///   - keys: K₀ as rows, m×d_in row-major.
  ///   - m: the number of keys (rows).
  ///   - dIn: the key length.
  /// - Returns: C₀, d_in×d_in row-major, symmetric (both triangles filled). Wraps `cblas_dsyrk`.
  /// - Throws: ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  public static func secondMoment(ofKeys keys: [Double], count m: Int, dIn: Int) throws -> [Double] {
    try requireDimension("m", m)
    try requireDimension("d_in", dIn)
    let (count, overflow) = m.multipliedReportingOverflow(by: dIn)
    guard !overflow, keys.count == count else {
      throw ApplyError.shapeMismatch(
        input: "preservation keys", expected: "[\(m), \(dIn)]", actual: "\(keys.count) elements")
    }
    try DenseKernels.requireFinite(keys, input: "preservation keys", rowLength: dIn)
    var c = [Double](repeating: 0, count: dIn * dIn)
    DenseKernels.addGram(ofRows: keys, count: m, dimension: dIn, into: &c, scale: 1 / Double(m))
    DenseKernels.mirrorUpperToLower(&c, dimension: dIn)
    return c
  }

  // MARK: - Checks

  static func requireDimension(_ name: String, _ value: Int) throws {
    guard value > 0, value <= Int(Int32.max) else {
      throw ApplyError.invalidDimension(name: name, value: value)
    }
  }

  static func validate(_ p: EditProblem, method: EditMethod) throws {
    try requireDimension("d_out", p.dOut)
    try requireDimension("d_in", p.dIn)
    let (weightCount, overflow1) = p.dOut.multipliedReportingOverflow(by: p.dIn)
    let (covarianceCount, overflow2) = p.dIn.multipliedReportingOverflow(by: p.dIn)
    guard !overflow1, !overflow2 else {
      throw ApplyError.invalidDimension(name: "d_out×d_in", value: Int.max)
    }
    let weightShape = p.weightIsTransposed ? "[\(p.dIn), \(p.dOut)]" : "[\(p.dOut), \(p.dIn)]"
    guard p.w0.elementCount == weightCount else {
      throw ApplyError.shapeMismatch(
        input: "w0", expected: weightShape, actual: "\(p.w0.elementCount) elements")
    }
    guard !p.keys.isEmpty, p.keys.count % p.dIn == 0 else {
      throw ApplyError.shapeMismatch(
        input: "keys", expected: "[n, \(p.dIn)] with n ≥ 1", actual: "\(p.keys.count) elements")
    }
    let n = p.editCount
    try requireDimension("n", n)
    if method == .rome && n != 1 {
      throw ApplyError.shapeMismatch(
        input: "keys", expected: "[1, \(p.dIn)] (rome edits one key)", actual: "[\(n), \(p.dIn)]")
    }
    guard p.values.count == n * p.dOut else {
      throw ApplyError.shapeMismatch(
        input: "values", expected: "[\(n), \(p.dOut)]", actual: "\(p.values.count) elements")
    }
    guard p.covariance.count == covarianceCount else {
      throw ApplyError.shapeMismatch(
        input: "covariance", expected: "[\(p.dIn), \(p.dIn)]",
        actual: "\(p.covariance.count) elements")
    }
    guard p.lambda.isFinite, p.lambda > 0 else {
      throw ApplyError.invalidParameter(
        name: "lambda", value: p.lambda, requirement: "a finite value > 0")
    }
    guard p.mu.isFinite, p.mu >= 0 else {
      throw ApplyError.invalidParameter(
        name: "mu", value: p.mu, requirement: "a finite value ≥ 0")
    }
    let storageRowLength = p.weightIsTransposed ? p.dOut : p.dIn
    switch p.w0 {
    case .float32(let w):
      try DenseKernels.requireFinite(w, input: "w0", rowLength: storageRowLength)
    case .float64(let w):
      try DenseKernels.requireFinite(w, input: "w0", rowLength: storageRowLength)
    }
    try DenseKernels.requireFinite(p.keys, input: "keys", rowLength: p.dIn)
    try DenseKernels.requireFinite(p.values, input: "values", rowLength: p.dOut)
    try DenseKernels.requireFinite(p.covariance, input: "covariance", rowLength: p.dIn)
  }

  // MARK: - Pieces

  /// K_EᵀW₀ᵀ as n×d_out rows, in Float64.
  static func project(_ p: EditProblem) throws -> [Double] {
    switch p.w0 {
    case .float32(let w):
      return w.withUnsafeBufferPointer {
        DenseKernels.project(
          keys: p.keys, count: p.editCount, weights: .float32($0), dOut: p.dOut, dIn: p.dIn,
          transposed: p.weightIsTransposed)
      }
    case .float64(let w):
      return w.withUnsafeBufferPointer {
        DenseKernels.project(
          keys: p.keys, count: p.editCount, weights: .float64($0), dOut: p.dOut, dIn: p.dIn,
          transposed: p.weightIsTransposed)
      }
    }
  }

  /// Cholesky-factors a d_in×d_in SPD matrix in place and returns its reciprocal condition.
  static func factorCovariance(
    _ a: inout [Double], dimension: Int, name: String, lambda: Double
  ) throws -> Double {
    let result = DenseKernels.choleskyFactor(&a, dimension: dimension)
    if result.info > 0 {
      throw ApplyError.covarianceNotPositiveDefinite(
        matrix: name, dimension: dimension, leadingMinor: result.info, reciprocalCondition: nil,
        lambda: lambda)
    }
    guard result.rcond >= singularityLimit(dimension: dimension) else {
      throw ApplyError.covarianceNotPositiveDefinite(
        matrix: name, dimension: dimension, leadingMinor: nil,
        reciprocalCondition: result.rcond, lambda: lambda)
    }
    return result.rcond
  }

  /// Solves G·X = B for EMMET's n×n G: Cholesky first, LU (`dgesv`) if Cholesky fails; throws
  /// ``ApplyError/keysCollinear(keyIndex:editCount:reciprocalCondition:)`` if both say singular.
  static func solveGram(
    _ gram: [Double], dimension n: Int, rightHandSides b: inout [Double], count: Int
  ) throws -> (rcond: Double, usedLU: Bool) {
    let limit = singularityLimit(dimension: n)
    var factor = gram
    let cholesky = DenseKernels.choleskyFactor(&factor, dimension: n)
    if cholesky.info == 0 && cholesky.rcond >= limit {
      DenseKernels.choleskySolve(factor: factor, dimension: n, rightHandSides: &b, count: count)
      return (cholesky.rcond, false)
    }
    // Which key is dependent: Cholesky's failing column, or (when it squeaked through) the column
    // whose pivot L_jj² lost the most of G_jj, i.e. the key best explained by its predecessors.
    let keyIndex: Int
    if cholesky.info > 0 {
      keyIndex = cholesky.info - 1
    } else {
      var worst = 0
      var worstRatio = Double.infinity
      for j in 0..<n {
        let ratio =
          factor[j * n + j] * factor[j * n + j] / max(gram[j * n + j], .leastNormalMagnitude)
        if ratio < worstRatio {
          worstRatio = ratio
          worst = j
        }
      }
      keyIndex = worst
    }
    var lu = gram
    var solution = b
    let luResult = DenseKernels.luSolve(&lu, dimension: n, rightHandSides: &solution, count: count)
    guard luResult.info == 0, luResult.rcond >= limit else {
      throw ApplyError.keysCollinear(
        keyIndex: keyIndex, editCount: n, reciprocalCondition: min(cholesky.rcond, luResult.rcond))
    }
    b = solution
    return (luResult.rcond, true)
  }
}
