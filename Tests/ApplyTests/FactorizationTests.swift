import TestSupport
import Testing

@testable import Apply

/// `U·Vᵀ` built in Float64 and rounded once to Float32, optionally with extra uniform noise of up
/// to ±½ ulp added before the rounding (so up to about 1 ulp in total).
func lowRankDelta(
  rows: Int, cols: Int, rank: Int, seed: UInt64, extraHalfULPNoise: Bool
) -> [Float] {
  let (u, v) = randomFactors(rows: rows, cols: cols, rank: rank, seed: seed)
  let exact = denseProduct(u: u, v: v, rows: rows, cols: cols, rank: rank)
  var rng = SplitMix64(seed: seed ^ 0xABCD)
  return exact.map { x in
    guard extraHalfULPNoise else { return Float(x) }
    let ulp = Double(Float(x).ulp)
    return Float(x + (Double(rng.nextUnitFloat()) - 0.5) * ulp)
  }
}

func factorize(_ a: [Float], rows: Int, cols: Int, noiseRMS: Double, maxRank: Int) throws
  -> LowRankFactors?
{
  try a.withUnsafeBufferPointer { p in
    guard let base = p.baseAddress else { return nil }
    return try Factorization.lowRank(
      of: base, rows: rows, cols: cols, noiseRMS: noiseRMS, maxRank: maxRank)
  }
}

@Suite("Rank-revealing factorization")
struct FactorizationTests {
  let rows = 300
  let cols = 500

  @Test("recovers exact ranks from a Float32-rounded product", arguments: [1, 8, 64])
  func exactRank(rank: Int) throws {
    let a = lowRankDelta(rows: rows, cols: cols, rank: rank, seed: 100, extraHalfULPNoise: false)
    let noise = Factorization.float32RoundingNoiseRMS(a, count: a.count)
    let f = try #require(try factorize(a, rows: rows, cols: cols, noiseRMS: noise, maxRank: 100))
    #expect(f.rank == rank)
    #expect(f.u.count == rows * rank && f.v.count == cols * rank)
    #expect(f.singularValues.count == rank)
    #expect(zip(f.singularValues, f.singularValues.dropFirst()).allSatisfy { $0 >= $1 })
    let reconstructed = denseProduct(u: f.u, v: f.v, rows: rows, cols: cols, rank: f.rank)
    expectClose(reconstructed, a.map(Double.init), relative: 1e-6)
    // The reported residual is the one we measure.
    let measured =
      relativeError(reconstructed, a.map(Double.init))
      * DenseNorms.frobenius(a, count: a.count)
    #expect(abs(f.residualFrobenius - measured) <= 1e-9 * max(measured, 1e-30) + 1e-12)
  }

  /// The commit's rank finder never holds ΔW: it hands the rows over a block at a time. The same
  /// rows and norm give the very factors of the pointer form.
  @Test("rows handed over by blocks give the pointer form's factors", arguments: [1, 8])
  func rowsByBlocks(rank: Int) throws {
    let a = lowRankDelta(rows: rows, cols: cols, rank: rank, seed: 300, extraHalfULPNoise: true)
    let noise = 2 * Factorization.float32RoundingNoiseRMS(a, count: a.count)
    let whole = try #require(try factorize(a, rows: rows, cols: cols, noiseRMS: noise, maxRank: 100))
    // The norm over blocks of 8·k elements (and a shorter last one) is the one-call norm.
    var sum = DenseNorms.FrobeniusSum()
    a.withUnsafeBufferPointer { p in
      guard let base = p.baseAddress else { return }
      var first = 0
      while first < a.count {
        let count = min(8 * 97, a.count - first)
        sum.add(base + first, count: count)
        first += count
      }
    }
    #expect(sum.value == DenseNorms.frobenius(a, count: a.count))
    var calls = 0
    let blocks = try #require(
      try Factorization.lowRank(rows: rows, cols: cols, frobenius: sum.value, noiseRMS: noise, maxRank: 100) {
        first, count, block in
        calls += 1
        for k in 0..<(count * cols) { block[k] = Double(a[first * cols + k]) }
      })
    #expect(blocks == whole)
    #expect(calls >= 5)
  }

  /// A tensor of several row blocks is cut into two row parts, each converted and multiplied
  /// on a thread of its own and summed in part order: one worker or two, the same factors, and
  /// the rank of the delta; without the power iteration (what `mvc commit` asks for factors it
  /// refines) the same rank and as close a product.
  @Test("row parts on two workers give the factors of one")
  func rowPartsOnTwoWorkers() throws {
    let (rows, cols, rank) = (512, 8192, 3)
    let a = lowRankDelta(rows: rows, cols: cols, rank: rank, seed: 500, extraHalfULPNoise: true)
    let noise = 2 * Factorization.float32RoundingNoiseRMS(a, count: a.count)
    let norm = DenseNorms.frobenius(a, count: a.count)
    let found = try [(1, 1), (2, 1), (2, 0)].map { workers, powerIterations in
      try #require(
        try Factorization.lowRank(
          rows: rows, cols: cols, frobenius: norm, noiseRMS: noise, maxRank: 100,
          powerIterations: powerIterations, workers: workers
        ) { first, count, block in
          for k in 0..<(count * cols) { block[k] = Double(a[first * cols + k]) }
        })
    }
    #expect(found[0].rank == rank)
    #expect(found[1] == found[0])
    #expect(found[2].rank == rank)
    for factors in found[1...] {
      let reconstructed = denseProduct(u: factors.u, v: factors.v, rows: rows, cols: cols, rank: rank)
      #expect(relativeError(reconstructed, a.map(Double.init)) < 1e-6)
    }
  }

  @Test("recovers the rank under extra ±½-ulp noise", arguments: [1, 8, 64])
  func noisyRank(rank: Int) throws {
    let a = lowRankDelta(rows: rows, cols: cols, rank: rank, seed: 200, extraHalfULPNoise: true)
    // Two independent ±½-ulp errors: the caller's estimate doubles the single-rounding RMS.
    let noise = 2 * Factorization.float32RoundingNoiseRMS(a, count: a.count)
    let f = try #require(try factorize(a, rows: rows, cols: cols, noiseRMS: noise, maxRank: 100))
    #expect(f.rank == rank)
    let reconstructed = denseProduct(u: f.u, v: f.v, rows: rows, cols: cols, rank: f.rank)
    expectClose(reconstructed, a.map(Double.init), relative: 1e-6)
  }

  @Test("a purely relative threshold (noiseRMS 0) also finds the rank")
  func zeroNoiseEstimate() throws {
    let a = lowRankDelta(rows: 120, cols: 80, rank: 8, seed: 300, extraHalfULPNoise: false)
    let f = try #require(try factorize(a, rows: 120, cols: 80, noiseRMS: 0, maxRank: 40))
    #expect(f.rank == 8)
  }

  @Test("a dense random matrix is not low-rank")
  func denseReturnsNil() throws {
    var rng = SplitMix64(seed: 400)
    let a = rng.gaussianArray(count: 200 * 300)
    let noise = Factorization.float32RoundingNoiseRMS(a, count: a.count)
    #expect(try factorize(a, rows: 200, cols: 300, noiseRMS: noise, maxRank: 4) == nil)
    #expect(try factorize(a, rows: 200, cols: 300, noiseRMS: noise, maxRank: 40) == nil)
  }

  @Test("rank above maxRank returns nil")
  func rankAboveMax() throws {
    let a = lowRankDelta(rows: 100, cols: 90, rank: 12, seed: 500, extraHalfULPNoise: false)
    let noise = Factorization.float32RoundingNoiseRMS(a, count: a.count)
    #expect(try factorize(a, rows: 100, cols: 90, noiseRMS: noise, maxRank: 11) == nil)
    #expect(try factorize(a, rows: 100, cols: 90, noiseRMS: noise, maxRank: 12)?.rank == 12)
  }

  @Test("an all-zero delta has rank 0")
  func zeroDelta() throws {
    let a = [Float](repeating: 0, count: 64 * 48)
    let f = try #require(try factorize(a, rows: 64, cols: 48, noiseRMS: 1e-8, maxRank: 8))
    #expect(f.rank == 0 && f.u.isEmpty && f.v.isEmpty && f.residualFrobenius == 0)
  }

  @Test("the same seed gives the same factors")
  func deterministic() throws {
    let a = lowRankDelta(rows: 60, cols: 50, rank: 3, seed: 600, extraHalfULPNoise: true)
    let f1 = try factorize(a, rows: 60, cols: 50, noiseRMS: 1e-7, maxRank: 10)
    let f2 = try factorize(a, rows: 60, cols: 50, noiseRMS: 1e-7, maxRank: 10)
    #expect(f1 != nil && f1 == f2)
  }

  @Test("NaN in the delta throws nonFinite with its index")
  func nonFiniteThrows() {
    var a = [Float](repeating: 1, count: 20)
    a[5] = .nan
    #expect(throws: ApplyError.nonFinite(operation: "low-rank factorization", elementIndex: 5)) {
      try factorize(a, rows: 4, cols: 5, noiseRMS: 0, maxRank: 2)
    }
    a[5] = 1
    a[17] = -.infinity
    #expect(throws: ApplyError.nonFinite(operation: "low-rank factorization", elementIndex: 17)) {
      try factorize(a, rows: 4, cols: 5, noiseRMS: 0, maxRank: 2)
    }
  }

  @Test("error messages follow git's wording")
  func errorWording() {
    let errors: [ApplyError] = [
      .nonFinite(operation: "low-rank factorization", elementIndex: 3),
      .dimensionTooLarge(operation: "low-rank factorization", rows: 1 << 32, cols: 2),
      .lapackFailure(function: "LAPACKE_dgesdd", info: 4, meaning: "did not converge"),
    ]
    for error in errors {
      let text = error.errorDescription ?? ""
      #expect(!text.isEmpty && !text.hasSuffix(".") && !text.contains("\n"))
      #expect(text.first?.isLowercase == true || text.first == "'")
      #expect(error.recoverySuggestion?.isEmpty == false)
    }
  }
}
