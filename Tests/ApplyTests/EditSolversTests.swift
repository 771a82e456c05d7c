import Apply
import TestSupport
import Testing

// An independent Float64 reference: dense matrices, explicit Gauss–Jordan inverses and the paper
// formulas written out literally (docs/editing-science.md §2). Sizes are tiny on purpose.

/// Row-major dense matrix for the reference computations.
private struct Dense: Equatable {
  var rows: Int
  var columns: Int
  var elements: [Double]

  init(rows: Int, columns: Int, elements: [Double]) {
    precondition(elements.count == rows * columns)
    self.rows = rows
    self.columns = columns
    self.elements = elements
  }

  static func identity(_ n: Int, scale: Double = 1) -> Dense {
    var m = Dense(rows: n, columns: n, elements: .init(repeating: 0, count: n * n))
    for i in 0..<n { m[i, i] = scale }
    return m
  }

  subscript(i: Int, j: Int) -> Double {
    get { elements[i * columns + j] }
    set { elements[i * columns + j] = newValue }
  }

  var transposed: Dense {
    var t = Dense(
      rows: columns, columns: rows, elements: .init(repeating: 0, count: elements.count))
    for i in 0..<rows { for j in 0..<columns { t[j, i] = self[i, j] } }
    return t
  }

  static func * (a: Dense, b: Dense) -> Dense {
    precondition(a.columns == b.rows)
    var c = Dense(
      rows: a.rows, columns: b.columns, elements: .init(repeating: 0, count: a.rows * b.columns))
    for i in 0..<a.rows {
      for k in 0..<a.columns {
        let aik = a[i, k]
        for j in 0..<b.columns { c[i, j] += aik * b[k, j] }
      }
    }
    return c
  }

  static func + (a: Dense, b: Dense) -> Dense {
    precondition(a.rows == b.rows && a.columns == b.columns)
    return Dense(rows: a.rows, columns: a.columns, elements: zip(a.elements, b.elements).map(+))
  }

  static func - (a: Dense, b: Dense) -> Dense {
    precondition(a.rows == b.rows && a.columns == b.columns)
    return Dense(rows: a.rows, columns: a.columns, elements: zip(a.elements, b.elements).map(-))
  }

  static func * (s: Double, a: Dense) -> Dense {
    Dense(rows: a.rows, columns: a.columns, elements: a.elements.map { s * $0 })
  }

  /// Gauss–Jordan with partial pivoting; the reference is allowed the explicit inverse.
  var inverse: Dense {
    precondition(rows == columns)
    let n = rows
    var a = self
    var inv = Dense.identity(n)
    for col in 0..<n {
      var pivot = col
      for r in col..<n where abs(a[r, col]) > abs(a[pivot, col]) { pivot = r }
      precondition(a[pivot, col] != 0, "singular reference matrix")
      if pivot != col {
        for j in 0..<n {
          a.elements.swapAt(col * n + j, pivot * n + j)
          inv.elements.swapAt(col * n + j, pivot * n + j)
        }
      }
      let p = a[col, col]
      for j in 0..<n {
        a[col, j] /= p
        inv[col, j] /= p
      }
      for r in 0..<n where r != col {
        let f = a[r, col]
        if f == 0 { continue }
        for j in 0..<n {
          a[r, j] -= f * a[col, j]
          inv[r, j] -= f * inv[col, j]
        }
      }
    }
    return inv
  }

  var frobenius: Double { elements.reduce(0) { $0 + $1 * $1 }.squareRoot() }

  /// Cyclic Jacobi eigendecomposition of a symmetric matrix: (eigenvalues, eigenvectors as the
  /// columns of the second result). Independent of LAPACK; fine for the reference's sizes.
  var symmetricEigen: (values: [Double], vectors: Dense) {
    precondition(rows == columns)
    let n = rows
    var a = self
    var v = Dense.identity(n)
    for _ in 0..<100 {
      var off = 0.0
      for i in 0..<n { for j in 0..<n where i != j { off += a[i, j] * a[i, j] } }
      if off < 1e-30 * max(frobenius * frobenius, 1e-300) { break }
      for p in 0..<n {
        for q in (p + 1)..<n where a[p, q] != 0 {
          let theta = (a[q, q] - a[p, p]) / (2 * a[p, q])
          let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
          let c = 1 / (t * t + 1).squareRoot()
          let s = t * c
          for k in 0..<n {  // A ← A·J
            let akp = a[k, p]
            let akq = a[k, q]
            a[k, p] = c * akp - s * akq
            a[k, q] = s * akp + c * akq
          }
          for k in 0..<n {  // A ← Jᵀ·A
            let apk = a[p, k]
            let aqk = a[q, k]
            a[p, k] = c * apk - s * aqk
            a[q, k] = s * apk + c * aqk
          }
          for k in 0..<n {
            let vkp = v[k, p]
            let vkq = v[k, q]
            v[k, p] = c * vkp - s * vkq
            v[k, q] = s * vkp + c * vkq
          }
        }
      }
    }
    return ((0..<n).map { a[$0, $0] }, v)
  }
}

private func relativeError(
  _ actual: Dense, _ expected: Dense, sourceLocation: SourceLocation = #_sourceLocation
) -> Double {
  #expect(
    actual.rows == expected.rows && actual.columns == expected.columns,
    sourceLocation: sourceLocation)
  return (actual - expected).frobenius / expected.frobenius
}

/// A seeded edit problem in math orientation, plus the rows the API takes.
private struct Fixture {
  var dOut: Int
  var dIn: Int
  var n: Int
  var w0: Dense  // d_out×d_in
  var keyRows: [Double]  // n×d_in
  var valueRows: [Double]  // n×d_out
  var preservationRows: [Double]  // m×d_in
  var c0: Dense  // d_in×d_in, K₀ᵀK₀/m computed naively
  /// AlphaEdit/ENCORE: Σ KKᵀ of 30 earlier keys, and P from a Jacobi eigendecomposition of C₀
  /// keeping the eigenvalues below `threshold` (half-way between the 20th and 21st smallest).
  var accumulator: Dense
  var projector: Dense
  var threshold: Double
  var l2 = 10.0
  var normLambda = 20.0

  init(dOut: Int = 24, dIn: Int = 40, n: Int, seed: UInt64, preservationCount m: Int = 200) {
    var rng = SplitMix64(seed: seed)
    func gaussians(_ count: Int, _ scale: Double = 1) -> [Double] {
      (0..<count).map { _ in Double(rng.nextGaussian()) * scale }
    }
    self.dOut = dOut
    self.dIn = dIn
    self.n = n
    w0 = Dense(rows: dOut, columns: dIn, elements: gaussians(dOut * dIn, 0.2))
    keyRows = gaussians(n * dIn)
    valueRows = gaussians(n * dOut)
    preservationRows = gaussians(m * dIn)
    let k0 = Dense(rows: m, columns: dIn, elements: preservationRows)
    c0 = (1 / Double(m)) * (k0.transposed * k0)
    let earlier = Dense(rows: 30, columns: dIn, elements: gaussians(30 * dIn))
    accumulator = earlier.transposed * earlier
    let (eigenvalues, vectors) = c0.symmetricEigen
    let sorted = eigenvalues.sorted()
    threshold = sorted.count > 21 ? 0.5 * (sorted[19] + sorted[20]) : 1
    var p = Dense(rows: dIn, columns: dIn, elements: .init(repeating: 0, count: dIn * dIn))
    for (j, value) in eigenvalues.enumerated() where abs(value) < threshold {
      for a in 0..<dIn { for b in 0..<dIn { p[a, b] += vectors[a, j] * vectors[b, j] } }
    }
    projector = p
  }

  /// K_E, d_in×n (keys as columns).
  var keys: Dense { Dense(rows: n, columns: dIn, elements: keyRows).transposed }
  /// V_E, d_out×n.
  var values: Dense { Dense(rows: n, columns: dOut, elements: valueRows).transposed }

  func problem(
    lambda: Double = 1, mu: Double = 0.1, float32: Bool = false, transposed: Bool = false
  ) -> EditProblem {
    let stored = transposed ? w0.transposed.elements : w0.elements
    var problem = EditProblem(
      w0: float32 ? .float32(stored.map { Float($0) }) : .float64(stored), dOut: dOut, dIn: dIn,
      weightIsTransposed: transposed, keys: keyRows, values: valueRows,
      covariance: c0.elements, lambda: lambda, mu: mu)
    problem.accumulator = accumulator.elements
    problem.projector = projector.elements
    problem.l2 = l2
    problem.normLambda = normLambda
    return problem
  }

  /// The paper formulas, with explicit inverses.
  func referenceDelta(_ method: EditMethod, lambda: Double = 1, mu: Double = 0.1) -> Dense {
    let k = keys
    let r = values - w0 * k
    let c = lambda * c0
    switch method {
    case .rome:
      let cInvK = c.inverse * k
      let denominator = (k.transposed * cInvK)[0, 0]
      return (1 / denominator) * (r * cInvK.transposed)
    case .emmet:
      let cInv = c.inverse
      var d = k.transposed * cInv * k
      if n > 1 { d = d + Dense.identity(n, scale: mu) }
      return r * d.inverse * k.transposed * cInv
    case .memit:
      return r * k.transposed * (c + k * k.transposed).inverse
    case .alphaedit:
      // upd = solve(P(KKᵀ + cache_c) + L2·I, P K Rᵀ), ΔW = updᵀ (AlphaEdit_main.py).
      let a = projector * (k * k.transposed + accumulator) + Dense.identity(dIn, scale: l2)
      return (a.inverse * projector * k * r.transposed).transposed
    case .encore:
      // adj_k = solve(λC₀ + α·I + SEQ_CACHE + KKᵀ, K), upd = resid·adj_kᵀ (encore_main.py).
      let a = c + Dense.identity(dIn, scale: normLambda) + accumulator + k * k.transposed
      return r * (a.inverse * k).transposed
    }
  }
}

private func delta(_ update: EditUpdate) -> Dense {
  Dense(rows: update.dOut, columns: update.rank, elements: update.u)
    * Dense(rows: update.dIn, columns: update.rank, elements: update.v).transposed
}

/// Applies the update to k through the factors: W₀k + U(Vᵀk).
private func editedOutputs(_ fixture: Fixture, _ update: EditUpdate) -> Dense {
  let u = Dense(rows: update.dOut, columns: update.rank, elements: update.u)
  let v = Dense(rows: update.dIn, columns: update.rank, elements: update.v)
  return fixture.w0 * fixture.keys + u * (v.transposed * fixture.keys)
}

private func expectError(
  _ expected: (ApplyError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation,
  _ body: () throws -> Void
) {
  do {
    try body()
    Issue.record("expected an ApplyError, nothing was thrown", sourceLocation: sourceLocation)
  } catch let error as ApplyError {
    #expect(expected(error), "unexpected case \(error)", sourceLocation: sourceLocation)
    #expect(error.errorDescription?.isEmpty == false, sourceLocation: sourceLocation)
    #expect(error.recoverySuggestion?.isEmpty == false, sourceLocation: sourceLocation)
  } catch {
    Issue.record("expected an ApplyError, got \(error)", sourceLocation: sourceLocation)
  }
}

@Suite("EditSolvers")
struct EditSolversTests {
  static let cases: [(EditMethod, Int)] = [
    (.rome, 1), (.emmet, 1), (.emmet, 3), (.emmet, 8), (.memit, 1), (.memit, 3), (.memit, 8),
    (.alphaedit, 1), (.alphaedit, 3), (.alphaedit, 8), (.encore, 1), (.encore, 3), (.encore, 8),
  ]

  @Test("factors match the dense reference", arguments: cases)
  func matchesReference(method: EditMethod, n: Int) throws {
    let fixture = Fixture(n: n, seed: 42 + UInt64(n))
    for lambda in [1.0, 20.0] {
      let update = try EditSolvers.solve(fixture.problem(lambda: lambda), method: method)
      #expect(update.rank == (method == .rome ? 1 : n))
      #expect(update.u.count == fixture.dOut * update.rank)
      #expect(update.v.count == fixture.dIn * update.rank)
      let error = relativeError(delta(update), fixture.referenceDelta(method, lambda: lambda))
      #expect(error < 1e-6, "\(method) n=\(n) λ=\(lambda): relative error \(error)")
    }
  }

  @Test("ROME and EMMET (μ = 0) map every key to its target", arguments: [1, 3, 8])
  func equalityConstraintsHold(n: Int) throws {
    let fixture = Fixture(n: n, seed: 7 + UInt64(n))
    let methods: [EditMethod] = n == 1 ? [.rome, .emmet] : [.emmet]
    for method in methods {
      let update = try EditSolvers.solve(fixture.problem(lambda: 5, mu: 0), method: method)
      let outputs = editedOutputs(fixture, update)
      let asked = fixture.values - fixture.w0 * fixture.keys
      for i in 0..<n {
        var miss = 0.0
        var scale = 0.0
        for j in 0..<fixture.dOut {
          miss += pow2(outputs[j, i] - fixture.values[j, i])
          scale += pow2(asked[j, i])
        }
        #expect((miss / scale).squareRoot() < 1e-5, "\(method) edit \(i)")
      }
    }
  }

  @Test("MEMIT satisfies its normal equations", arguments: [1, 3, 8])
  func memitNormalEquations(n: Int) throws {
    let fixture = Fixture(n: n, seed: 99 + UInt64(n))
    let lambda = 15.0
    let update = try EditSolvers.solve(fixture.problem(lambda: lambda), method: .memit)
    let k = fixture.keys
    let a = lambda * fixture.c0 + k * k.transposed
    let lhs = (fixture.w0 + delta(update)) * a
    let rhs = lambda * (fixture.w0 * fixture.c0) + fixture.values * k.transposed
    #expect(relativeError(lhs, rhs) < 1e-8)
  }

  @Test("EMMET(λ = 1000, μ = 0.1) equals EMMET(λ = 1, μ = 100)")
  func emmetLambdaEquivalence() throws {
    let fixture = Fixture(n: 8, seed: 1234)
    let a = try EditSolvers.solve(fixture.problem(lambda: 1000, mu: 0.1), method: .emmet)
    let b = try EditSolvers.solve(fixture.problem(lambda: 1, mu: 100), method: .emmet)
    #expect(relativeError(delta(a), delta(b)) < 1e-10)
    #expect(a.diagnostics.ridge == 0.1 && b.diagnostics.ridge == 100)
    // And the ridge matters: λ = 1, μ = 0.1 is a different update.
    let c = try EditSolvers.solve(fixture.problem(lambda: 1, mu: 0.1), method: .emmet)
    #expect(relativeError(delta(c), delta(b)) > 1e-3)
  }

  @Test("the null-space projector equals a Jacobi eigendecomposition's, and is one")
  func nullSpaceProjector() throws {
    let fixture = Fixture(n: 3, seed: 31)
    let p = try EditSolvers.nullSpaceProjector(
      covariance: fixture.c0.elements, dimension: fixture.dIn, threshold: fixture.threshold)
    #expect(p.keptCount == 20)
    let dense = Dense(rows: fixture.dIn, columns: fixture.dIn, elements: p.projector)
    #expect(relativeError(dense, fixture.projector) < 1e-9)
    #expect(relativeError(dense * dense, dense) < 1e-12)  // P² = P
    // P·C₀ keeps only the small directions: ‖P C₀‖ ≤ threshold · ‖P‖.
    #expect((dense * fixture.c0).frobenius <= fixture.threshold * dense.frobenius * (1 + 1e-9))
    let none = try EditSolvers.nullSpaceProjector(
      covariance: fixture.c0.elements, dimension: fixture.dIn, threshold: 1e-9)
    #expect(none.keptCount == 0 && none.projector.allSatisfy { $0 == 0 })
    expectError({ if case .invalidParameter = $0 { true } else { false } }) {
      _ = try EditSolvers.nullSpaceProjector(
        covariance: fixture.c0.elements, dimension: fixture.dIn, threshold: 0)
    }
  }

  @Test("ENCORE without α and Σ is MEMIT; AlphaEdit's update lies in P's range")
  func sequentialTermsMatter() throws {
    var fixture = Fixture(n: 3, seed: 32)
    let with = try EditSolvers.solve(fixture.problem(), method: .encore)
    fixture.accumulator = Dense.identity(fixture.dIn, scale: 0)
    fixture.normLambda = 0
    let without = try EditSolvers.solve(fixture.problem(lambda: 3), method: .encore)
    let memit = try EditSolvers.solve(fixture.problem(lambda: 3), method: .memit)
    #expect(relativeError(delta(without), delta(memit)) < 1e-10)  // α = 0, Σ = 0: MEMIT
    #expect(relativeError(delta(with), delta(memit)) > 1e-3)
    // AlphaEdit's update lies in the null space: ΔW·P = ΔW (its rows are in P's range).
    let alpha = try EditSolvers.solve(fixture.problem(), method: .alphaedit)
    #expect(relativeError(delta(alpha) * fixture.projector, delta(alpha)) < 1e-9)
    var missing = fixture.problem()
    missing.projector = nil
    expectError({ if case .shapeMismatch = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(missing, method: .alphaedit)
    }
  }

  @Test("EMMET with one edit ignores μ and equals ROME")
  func emmetSingleEditIsRome() throws {
    let fixture = Fixture(n: 1, seed: 5)
    let rome = try EditSolvers.solve(fixture.problem(mu: 0.1), method: .rome)
    let emmet = try EditSolvers.solve(fixture.problem(mu: 0.1), method: .emmet)
    #expect(emmet.diagnostics.ridge == 0)
    #expect(relativeError(delta(emmet), delta(rome)) < 1e-12)
    let denominator = try #require(rome.diagnostics.romeDenominator)
    let normalized = try #require(rome.diagnostics.romeNormalizedDenominator)
    #expect(denominator > 0 && normalized > 0)
  }

  @Test(
    "Float32 weights give the update of their widened Float64 values",
    arguments: EditMethod.allCases)
  func float32Weights(method: EditMethod) throws {
    var fixture = Fixture(n: method == .rome ? 1 : 3, seed: 77)
    fixture.w0.elements = fixture.w0.elements.map { Double(Float($0)) }
    let a = try EditSolvers.solve(fixture.problem(float32: true), method: method)
    let b = try EditSolvers.solve(fixture.problem(float32: false), method: method)
    #expect(relativeError(delta(a), delta(b)) < 1e-12)
  }

  @Test("Conv1D storage gives the transposed update", arguments: EditMethod.allCases)
  func conv1DOrientation(method: EditMethod) throws {
    let fixture = Fixture(n: method == .rome ? 1 : 3, seed: 2024)
    for float32 in [false, true] {
      let linear = try EditSolvers.solve(fixture.problem(float32: float32), method: method)
      let conv = try EditSolvers.solve(
        fixture.problem(float32: float32, transposed: true), method: method)
      #expect(relativeError(delta(conv), delta(linear)) < 1e-12)
      #expect(conv.weightIsTransposed && !linear.weightIsTransposed)
      #expect(conv.storageRowCount == fixture.dIn && conv.storageColumnCount == fixture.dOut)
      let stored =
        Dense(rows: conv.storageRowCount, columns: conv.rank, elements: conv.storageLeft)
        * Dense(rows: conv.storageColumnCount, columns: conv.rank, elements: conv.storageRight)
        .transposed
      #expect(relativeError(stored, delta(linear).transposed) < 1e-12)
      let linearStored =
        Dense(rows: linear.storageRowCount, columns: linear.rank, elements: linear.storageLeft)
        * Dense(
          rows: linear.storageColumnCount, columns: linear.rank, elements: linear.storageRight
        )
        .transposed
      #expect(relativeError(linearStored, delta(linear)) < 1e-15)
    }
  }

  @Test("secondMoment is K₀ᵀK₀/m")
  func secondMoment() throws {
    let fixture = Fixture(n: 1, seed: 3)
    let c0 = try EditSolvers.secondMoment(
      ofKeys: fixture.preservationRows, count: 200, dIn: fixture.dIn)
    let result = Dense(rows: fixture.dIn, columns: fixture.dIn, elements: c0)
    #expect(relativeError(result, fixture.c0) < 1e-13)
    #expect(result == result.transposed)
  }

  // MARK: - Errors

  @Test("shape mismatches name the input")
  func shapeMismatches() {
    let fixture = Fixture(n: 3, seed: 11)
    var p = fixture.problem()
    p.keys.removeLast()
    expectError({ if case .shapeMismatch("keys", _, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .emmet)
    }
    p = fixture.problem()
    p.values.append(0)
    expectError({ if case .shapeMismatch("values", _, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem()
    p.covariance.removeLast(fixture.dIn)
    expectError({ if case .shapeMismatch("covariance", _, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem()
    p.w0 = .float32([Float](repeating: 0, count: 10))
    expectError({ if case .shapeMismatch("w0", _, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .emmet)
    }
    p = fixture.problem()
    expectError({ if case .shapeMismatch("keys", _, "[3, 40]") = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .rome)
    }
    p = fixture.problem()
    p.dIn = 0
    expectError({ if case .invalidDimension("d_in", 0) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem(lambda: 0)
    expectError({ if case .invalidParameter("lambda", 0, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem(mu: -1)
    expectError({ if case .invalidParameter("mu", -1, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(p, method: .emmet)
    }
  }

  @Test("NaN/Inf is reported with the input and first index")
  func nonFiniteInputs() {
    let fixture = Fixture(n: 3, seed: 12)
    var p = fixture.problem()
    p.keys[57] = .nan
    p.keys[90] = .nan
    expectError({ $0 == .nonFiniteInput(input: "keys", index: 57, rowLength: 40) }) {
      _ = try EditSolvers.solve(p, method: .emmet)
    }
    #expect(
      ApplyError.nonFiniteInput(input: "keys", index: 57, rowLength: 40).errorDescription
        == "input 'keys' has a non-finite value at element 57 (row 1, column 17)")
    p = fixture.problem(float32: true, transposed: true)
    if case .float32(var w) = p.w0 {
      w[100] = .infinity
      p.w0 = .float32(w)
    }
    expectError({ $0 == .nonFiniteInput(input: "w0", index: 100, rowLength: 24) }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem()
    p.values[5] = -.infinity
    expectError({ $0 == .nonFiniteInput(input: "values", index: 5, rowLength: 24) }) {
      _ = try EditSolvers.solve(p, method: .memit)
    }
    p = fixture.problem()
    p.covariance[41] = .nan
    expectError({ $0 == .nonFiniteInput(input: "covariance", index: 41, rowLength: 40) }) {
      _ = try EditSolvers.solve(p, method: .emmet)
    }
  }

  @Test(
    "a covariance from fewer than d_in keys is rejected",
    arguments: EditMethod.allCases.filter { $0 != .alphaedit })
  func covarianceNotPositiveDefinite(method: EditMethod) throws {
    var fixture = Fixture(n: method == .rome ? 1 : 3, seed: 13, preservationCount: 10)
    // ENCORE's α·I and Σ make any C₀ definite; without them it is MEMIT's matrix.
    fixture.normLambda = 0
    fixture.accumulator = Dense.identity(fixture.dIn, scale: 0)
    expectError({
      if case .covarianceNotPositiveDefinite(_, 40, _, _, 1) = $0 { true } else { false }
    }) {
      _ = try EditSolvers.solve(fixture.problem(), method: method)
    }
    let message = ApplyError.covarianceNotPositiveDefinite(
      matrix: "λ·C₀", dimension: 40, leadingMinor: 11, reciprocalCondition: nil, lambda: 1)
    #expect(
      message.errorDescription
        == "'λ·C₀' (40×40) is not positive definite: leading minor 11 is not positive")
    #expect(message.recoverySuggestion?.contains("fewer than 40") == true)
  }

  @Test("collinear EMMET keys are named when μ = 0")
  func collinearKeys() throws {
    var fixture = Fixture(n: 4, seed: 14)
    for j in 0..<fixture.dIn {  // key 2 = key 0 + key 1
      fixture.keyRows[2 * fixture.dIn + j] = fixture.keyRows[j] + fixture.keyRows[fixture.dIn + j]
    }
    expectError({ if case .keysCollinear(2, 4, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.solve(fixture.problem(mu: 0), method: .emmet)
    }
    // The ridge makes the same batch solvable, and MEMIT never needs it.
    _ = try EditSolvers.solve(fixture.problem(mu: 0.1), method: .emmet)
    _ = try EditSolvers.solve(fixture.problem(), method: .memit)
  }

  @Test("a zero ROME key has no positive denominator")
  func romeZeroKey() {
    var fixture = Fixture(n: 1, seed: 15)
    fixture.keyRows = [Double](repeating: 0, count: fixture.dIn)
    expectError({ $0 == .romeDenominatorNotPositive(denominator: 0) }) {
      _ = try EditSolvers.solve(fixture.problem(), method: .rome)
    }
  }

  // MARK: - Scores

  @Test("retention and preservation error from Float32 weights", arguments: [false, true])
  func scores(transposed: Bool) throws {
    let fixture = Fixture(n: 3, seed: 16)
    let update = try EditSolvers.solve(fixture.problem(mu: 0), method: .emmet)
    let revisedMath = fixture.w0 + delta(update)
    let storedOriginal = (transposed ? fixture.w0.transposed : fixture.w0).elements.map {
      Float($0)
    }
    let storedRevised = (transposed ? revisedMath.transposed : revisedMath).elements.map {
      Float($0)
    }

    let kept = try storedRevised.withUnsafeBufferPointer { revised in
      try storedOriginal.withUnsafeBufferPointer { original in
        try EditSolvers.retention(
          revised: revised, original: original, dOut: fixture.dOut, dIn: fixture.dIn,
          weightIsTransposed: transposed, keys: fixture.keyRows, values: fixture.valueRows)
      }
    }
    #expect(kept.count == 3)
    for value in kept { #expect(abs(1 - value) < 1e-4) }

    let none = try storedOriginal.withUnsafeBufferPointer { original in
      try EditSolvers.retention(
        revised: original, original: original, dOut: fixture.dOut, dIn: fixture.dIn,
        weightIsTransposed: transposed, keys: fixture.keyRows, values: fixture.valueRows)
    }
    #expect(none == [0, 0, 0])

    // Preservation error against the dense Float64 formula on the widened Float32 weights.
    let k0 = Dense(rows: 200, columns: fixture.dIn, elements: fixture.preservationRows).transposed
    let w0f = Dense(
      rows: fixture.dOut, columns: fixture.dIn,
      elements: fixture.w0.elements.map { Double(Float($0)) })
    let wrf = Dense(
      rows: fixture.dOut, columns: fixture.dIn,
      elements: revisedMath.elements.map { Double(Float($0)) })
    let expected = ((wrf - w0f) * k0).frobenius / (w0f * k0).frobenius
    let drift = try storedRevised.withUnsafeBufferPointer { revised in
      try storedOriginal.withUnsafeBufferPointer { original in
        try EditSolvers.preservationError(
          revised: revised, original: original, dOut: fixture.dOut, dIn: fixture.dIn,
          weightIsTransposed: transposed, keys: fixture.preservationRows)
      }
    }
    #expect(abs(drift - expected) / expected < 1e-12)
    let zero = try storedOriginal.withUnsafeBufferPointer { original in
      try EditSolvers.preservationError(
        revised: original, original: original, dOut: fixture.dOut, dIn: fixture.dIn,
        weightIsTransposed: transposed, keys: fixture.preservationRows)
    }
    #expect(zero == 0)

    let projected = try storedOriginal.withUnsafeBufferPointer { original in
      try EditSolvers.project(
        keys: fixture.keyRows, through: original, dOut: fixture.dOut, dIn: fixture.dIn,
        weightIsTransposed: transposed)
    }
    let expectedProjection = (w0f * fixture.keys).transposed
    #expect(
      relativeError(Dense(rows: 3, columns: fixture.dOut, elements: projected), expectedProjection)
        < 1e-14)
  }

  @Test("retention rejects mismatched shapes")
  func retentionShapes() {
    expectError({ if case .shapeMismatch("revised outputs", _, _) = $0 { true } else { false } }) {
      _ = try EditSolvers.retention(
        revisedOutputs: [1, 2], originalOutputs: [1, 2, 3], values: [1, 2, 3], dOut: 3)
    }
    expectError({ if case .shapeMismatch("revised weights", _, _) = $0 { true } else { false } }) {
      let w: [Float] = [1, 2, 3]
      _ = try w.withUnsafeBufferPointer { buffer in
        try EditSolvers.retention(
          revised: buffer, original: buffer, dOut: 2, dIn: 2, weightIsTransposed: false,
          keys: [1, 2], values: [1, 2])
      }
    }
  }
}

private func pow2(_ x: Double) -> Double { x * x }
