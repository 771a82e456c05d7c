import TestSupport
import Testing

@testable import Apply

/// Largest singular value of a dense row-major matrix by power iteration on AᵀA, in Float64.
func bruteSpectral(_ a: [Double], rows: Int, cols: Int) -> Double {
  var x = [Double](repeating: 1, count: cols)
  var sigma = 0.0
  for _ in 0..<3000 {
    var y = [Double](repeating: 0, count: rows)
    for i in 0..<rows { for j in 0..<cols { y[i] += a[i * cols + j] * x[j] } }
    var z = [Double](repeating: 0, count: cols)
    for i in 0..<rows { for j in 0..<cols { z[j] += a[i * cols + j] * y[i] } }
    let n = z.reduce(0) { $0 + $1 * $1 }.squareRoot()
    sigma = n.squareRoot()
    x = z.map { $0 / n }
  }
  return sigma
}

@Suite("Norms")
struct NormsTests {
  @Test("low-rank Frobenius and spectral norms match dense computation", arguments: [1, 2, 5, 12])
  func lowRankNorms(rank: Int) throws {
    let rows = 40
    let cols = 30
    let (u, v) = randomFactors(rows: rows, cols: cols, rank: rank, seed: 77 &+ UInt64(rank))
    let dense = denseProduct(u: u, v: v, rows: rows, cols: cols, rank: rank)
    let frob = dense.reduce(0) { $0 + $1 * $1 }.squareRoot()
    let got = LowRankNorms.frobenius(u: u, v: v, rows: rows, cols: cols, rank: rank)
    #expect(abs(got - frob) <= 1e-12 * frob)
    let spectral = try LowRankNorms.spectral(u: u, v: v, rows: rows, cols: cols, rank: rank)
    let brute = bruteSpectral(dense, rows: rows, cols: cols)
    #expect(abs(spectral - brute) <= 1e-9 * brute, "\(spectral) vs \(brute)")
    #expect(spectral <= got * (1 + 1e-12))
  }

  @Test("low-rank norms of rank 0 are 0")
  func rankZero() throws {
    #expect(LowRankNorms.frobenius(u: [], v: [], rows: 3, cols: 4, rank: 0) == 0)
    #expect(try LowRankNorms.spectral(u: [], v: [], rows: 3, cols: 4, rank: 0) == 0)
  }

  @Test("dense Frobenius and max-abs")
  func denseNorms() {
    var rng = SplitMix64(seed: 5)
    let a = rng.gaussianArray(count: 1003)
    let brute = a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    #expect(abs(DenseNorms.frobenius(a, count: a.count) - brute) <= 1e-14 * brute)
    #expect(DenseNorms.maxAbs(a, count: a.count) == a.map { abs($0) }.max())
    #expect(DenseNorms.maxAbs([], count: 0) == 0)
    #expect(DenseNorms.maxAbs([1, .nan, -3], count: 3).isNaN)
    #expect(DenseNorms.frobenius([3, 4], count: 2) == 5)
  }
}
