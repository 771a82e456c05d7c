import Apply
import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

/// Big batches are recompressed in Float64 (issue 14): checked against a Float64 reference of
/// the closed-form update computed here by plain Gaussian elimination, independent of the
/// solvers' LAPACK path.
@Suite struct BatchRecompressionTests {
  static let tensor = "model.layers.0.mlp.down_proj.weight"
  static let (rows, cols) = (64, 256)  // d_out × d_in (nn.Linear)

  /// Solves `A·X = B` (A n×n, B n×m, row-major) by Gaussian elimination with partial pivoting.
  static func solve(_ a: [Double], _ b: [Double], n: Int, m: Int) -> [Double] {
    var a = a
    var b = b
    for k in 0..<n {
      let pivot = (k..<n).max { abs(a[$0 * n + k]) < abs(a[$1 * n + k]) } ?? k
      if pivot != k {
        for j in 0..<n { a.swapAt(k * n + j, pivot * n + j) }
        for j in 0..<m { b.swapAt(k * m + j, pivot * m + j) }
      }
      for i in (k + 1)..<n {
        let f = a[i * n + k] / a[k * n + k]
        if f == 0 { continue }
        for j in k..<n { a[i * n + j] -= f * a[k * n + j] }
        for j in 0..<m { b[i * m + j] -= f * b[k * m + j] }
      }
    }
    for k in stride(from: n - 1, through: 0, by: -1) {
      for j in 0..<m {
        var s = b[k * m + j]
        for i in (k + 1)..<n { s -= a[k * n + i] * b[i * m + j] }
        b[k * m + j] = s / a[k * n + k]
      }
    }
    return b
  }

  /// `a (p×q) · b (q×r)`, row-major.
  static func multiply(_ a: [Double], _ b: [Double], _ p: Int, _ q: Int, _ r: Int) -> [Double] {
    var out = [Double](repeating: 0, count: p * r)
    for i in 0..<p {
      for k in 0..<q where a[i * q + k] != 0 {
        let x = a[i * q + k]
        for j in 0..<r { out[i * r + j] += x * b[k * r + j] }
      }
    }
    return out
  }

  static func transpose(_ a: [Double], _ p: Int, _ q: Int) -> [Double] {
    var out = [Double](repeating: 0, count: p * q)
    for i in 0..<p { for j in 0..<q { out[j * p + i] = a[i * q + j] } }
    return out
  }

  /// ΔW_ref (d_out×d_in) of EMMET `R (KᵀC⁻¹K + μI)⁻¹ KᵀC⁻¹` or MEMIT `R Kᵀ (C + KKᵀ)⁻¹`, C = λC₀.
  static func reference(
    method: EditMethod, w0: [Float], keys: [Double], values: [Double], c0: [Double], n: Int, lambda: Double,
    mu: Double
  ) -> [Double] {
    let (dOut, dIn) = (rows, cols)
    let k = transpose(keys, n, dIn)  // K_E, d_in×n
    let wk = multiply(w0.map(Double.init), k, dOut, dIn, n)  // W₀K_E, d_out×n
    let valuesT = transpose(values, n, dOut)
    let r = (0..<(dOut * n)).map { valuesT[$0] - wk[$0] }  // R, d_out×n
    let c = c0.map { $0 * lambda }
    switch method {
    case .memit:
      var m = c
      let kkT = multiply(k, keys, dIn, n, dIn)
      for i in m.indices { m[i] += kkT[i] }
      // ΔW = R Kᵀ M⁻¹ = (M⁻¹ K Rᵀ)ᵀ since M is symmetric.
      let x = solve(m, multiply(k, transpose(r, dOut, n), dIn, n, dOut), n: dIn, m: dOut)
      return transpose(x, dIn, dOut)
    default:
      let cInvK = solve(c, k, n: dIn, m: n)  // C⁻¹K, d_in×n
      var g = multiply(keys, cInvK, n, dIn, n)
      if n > 1 { for i in 0..<n { g[i * n + i] += mu } }
      let y = solve(g, transpose(cInvK, dIn, n), n: n, m: dIn)  // G⁻¹ KᵀC⁻¹, n×d_in
      return multiply(r, y, dOut, n, dIn)
    }
  }

  struct Setup {
    var dir: URL
    var repository: EditRepository
    var w0: [Float]
  }

  static func withModel(_ body: (Setup) throws -> Void) throws {
    try withTemporaryDirectory { dir in
      let tensors = transformerFixture(blocks: 1, hidden: rows, intermediate: cols, seed: 5)
      try writeSafetensors(tensors, to: dir.appendingPathComponent("model.safetensors"))
      let (repository, _) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      let w0 = try #require(tensors.first { $0.name == tensor }).floats
      try body(Setup(dir: dir, repository: repository, w0: w0))
    }
  }

  /// The committed tensor at HEAD, read back from the working model.
  static func headWeights(_ setup: Setup) throws -> [Float] {
    let file = try SafetensorsFile(path: setup.dir.appendingPathComponent("model.safetensors").path)
    let info = try #require(file.tensor(named: tensor))
    return try file.read(info).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
  }

  /// The largest distance between the stored weights and `round(W₀ + ΔW_ref)`, in ulps of
  /// max|round(W₀ + ΔW_ref)| (the unit: Float32 factors carry an absolute error of
  /// about ε₃₂·‖ΔW‖, so an element near zero can be many of its own ulps away).
  static func maxUlpDistance(_ stored: [Float], w0: [Float], reference: [Double]) -> Double {
    var worst: Float = 0
    var largest: Float = 0
    for i in stored.indices {
      let expected = Float(Double(w0[i]) + reference[i])
      worst = max(worst, abs(stored[i] - expected))
      largest = max(largest, abs(expected))
    }
    return Double(worst / largest.ulp)
  }

  static func relativeError(_ product: [Double], _ reference: [Double]) -> Double {
    var num = 0.0
    var den = 0.0
    for i in reference.indices {
      num += (product[i] - reference[i]) * (product[i] - reference[i])
      den += reference[i] * reference[i]
    }
    return (num / den).squareRoot()
  }

  /// One batch of `n` random keys and targets committed by `mvc edit`, against its reference.
  static func checkBatch(method: EditMethod, n: Int, expectDense: Bool) throws {
    try withModel { setup in
      var rng = SplitMix64(seed: UInt64(n) &* 31 &+ (method == .emmet ? 1 : 2))
      let keys = (0..<(n * cols)).map { _ in Double(rng.nextGaussian()) }
      let values = (0..<(n * rows)).map { _ in Double(rng.nextGaussian()) * 0.5 }
      let m = 4 * cols
      let k0 = (0..<(m * cols)).map { _ in Double(rng.nextGaussian()) }
      let c0 = multiply(transpose(k0, m, cols), k0, cols, m, cols).map { $0 / Double(m) }
      let request = KnowledgeEditRequest(
        method: method, tensor: tensor, keys: NpyArray(shape: [n, cols], values: keys),
        values: NpyArray(shape: [n, rows], values: values), covariance: NpyArray(shape: [cols, cols], values: c0),
        covarianceKeys: nil, lambda: 2, mu: 0.1, facts: nil, message: "batch of \(n)")
      let (result, _) = try setup.repository.edit(request)
      let reference = reference(
        method: method, w0: setup.w0, keys: keys, values: values, c0: c0, n: n, lambda: 2, mu: 0.1)
      let change = try #require(result.record.changes.first)
      #expect(change.storedByteCount <= rows * cols * 4, "stored bytes above dense")
      let state = try setup.repository.storedState(
        try #require(try setup.repository.contents(of: result.commit).tensorTrees[tensor]), tensor: tensor)
      if expectDense {
        #expect(change.storage == "full")
      } else {
        #expect(change.storage == "low_rank")
        let f = try setup.repository.factors(of: state, tensor: tensor)
        #expect(f.rank <= min(n, rows, cols))
        var product = [Double](repeating: 0, count: rows * cols)
        for i in 0..<rows {
          for j in 0..<cols {
            var s = 0.0
            for r in 0..<f.rank { s += Double(f.u[i * f.rank + r]) * Double(f.v[j * f.rank + r]) }
            product[i * cols + j] = s
          }
        }
        let error = relativeError(product, reference)
        #expect(error <= 1e-6, "‖UVᵀ − ΔW_ref‖/‖ΔW_ref‖ = \(error)")
      }
      let stored = try headWeights(setup)
      let ulps = maxUlpDistance(stored, w0: setup.w0, reference: reference)
      #expect(ulps <= 1, "stored weights are \(ulps) ulp from round(W₀ + ΔW_ref)")
      // Every state checks out to the bytes committed.
      let parent = try #require(try setup.repository.commitInfo(result.commit).parents.first)
      _ = try setup.repository.checkout(parent, branch: nil, force: false)
      #expect(try headWeights(setup) == setup.w0)
      _ = try setup.repository.checkout(result.commit, branch: nil, force: false)
      #expect(try headWeights(setup) == stored)
    }
  }

  @Test func emmetBatchBelowTheMatrixRankIsStoredAsOrthogonalFactors() throws {
    try Self.checkBatch(method: .emmet, n: 40, expectDense: false)
  }

  @Test func emmetBatchWiderThanTheMatrixIsStoredDense() throws {
    try Self.checkBatch(method: .emmet, n: 300, expectDense: true)
  }

  @Test func memitBatchWiderThanTheMatrixIsStoredDense() throws {
    try Self.checkBatch(method: .memit, n: 300, expectDense: true)
  }

  /// Factors of 300 columns whose product has rank 8 (`commit-factors`) are stored at rank 8.
  @Test func wideFactorsOfALowRankProductAreRecompressed() throws {
    try Self.withModel { setup in
      var rng = SplitMix64(seed: 77)
      let (n, inner) = (300, 8)
      let a = (0..<(Self.rows * inner)).map { _ in Double(rng.nextGaussian()) * 0.01 }
      // Column j of U is column j mod 8 of A times a power of two: rank 8 exactly in Float32.
      let b = (0..<(inner * n)).map { i in i / n == (i % n) % inner ? Double(1 << ((i % n) / inner % 4)) : 0 }
      let c = (0..<(Self.cols * n)).map { _ in Double(rng.nextGaussian()) * 0.01 }
      let u = Self.multiply(a.map { Double(Float($0)) }, b, Self.rows, inner, n).map { Float($0) }
      let v = c.map { Float($0) }
      let product = Self.multiply(
        u.map(Double.init), Self.transpose(v.map(Double.init), Self.cols, n), Self.rows, n, Self.cols)
      let file = setup.dir.appendingPathComponent("factors.safetensors")
      try writeSafetensors(
        [
          FixtureTensor(name: Self.tensor + ".u", shape: [Self.rows, n], floats: u),
          FixtureTensor(name: Self.tensor + ".v", shape: [Self.cols, n], floats: v),
        ], to: file)
      let result = try setup.repository.commitFactors(
        FactorCommitRequest(file: file.path, message: "wide factors", method: "memit"))
      let change = try #require(result.result.record.changes.first)
      #expect(change.storage == "low_rank")
      #expect(change.rank == inner)
      let state = try setup.repository.storedState(
        try #require(try setup.repository.contents(of: result.result.commit).tensorTrees[Self.tensor]),
        tensor: Self.tensor)
      let f = try setup.repository.factors(of: state, tensor: Self.tensor)
      var stored = [Double](repeating: 0, count: Self.rows * Self.cols)
      for i in 0..<Self.rows {
        for j in 0..<Self.cols {
          var s = 0.0
          for r in 0..<f.rank { s += Double(f.u[i * f.rank + r]) * Double(f.v[j * f.rank + r]) }
          stored[i * Self.cols + j] = s
        }
      }
      let error = Self.relativeError(stored, product)
      #expect(error <= 1e-6, "relative error \(error)")
      #expect(Self.maxUlpDistance(try Self.headWeights(setup), w0: setup.w0, reference: product) <= 1)
    }
  }
}
