import TestSupport
import Testing

@testable import Apply

/// Kept out of line so the optimizer cannot fuse the multiply with the following add: the
/// reference is deliberately unfused (round the product, then round the sum).
@inline(never)
func unfusedProduct(_ a: Double, _ b: Double) -> Double { a * b }

@inline(never)
func unfusedSum(_ a: Double, _ b: Double) -> Double { a + b }

/// The contract, written out one rounding at a time.
func canonicalReference(
  x: [Double], u: [Float], v: [Float], rows: Int, cols: Int, rank: Int
) -> [Double] {
  var out = x
  guard rank > 0 else { return out }
  for i in 0..<rows {
    for j in 0..<cols {
      var d = unfusedProduct(Double(u[i * rank]), Double(v[j * rank]))
      for r in 1..<max(rank, 1) {
        d = unfusedSum(d, unfusedProduct(Double(u[i * rank + r]), Double(v[j * rank + r])))
      }
      out[i * cols + j] = unfusedSum(out[i * cols + j], d)
    }
  }
  return out
}

/// A base matrix with mixed magnitudes so that summation order changes low bits.
func baseMatrix(rows: Int, cols: Int, seed: UInt64) -> [Double] {
  var rng = SplitMix64(seed: seed)
  return (0..<(rows * cols)).map { k in
    Double(rng.nextGaussian()) * (k % 7 == 0 ? 1e3 : 1e-3) + Double(rng.nextGaussian()) * 0x1p-30
  }
}

func bitPatterns(_ a: [Double]) -> [UInt64] { a.map(\.bitPattern) }

@Suite("Canonical reconstruction")
struct CanonicalReconstructionTests {
  @Test("matches the unfused scalar reference bit for bit", arguments: [1, 2, 3, 8, 64])
  func matchesReference(rank: Int) {
    let rows = 37
    let cols = 531  // not a multiple of the 512-column tile
    var (u, v) = randomFactors(rows: rows, cols: cols, rank: rank, seed: 42 &+ UInt64(rank))
    // Mixed scales in the factors too, so partial sums cancel and order matters.
    for k in u.indices where k % 5 == 0 { u[k] *= 4096 }
    for k in v.indices where k % 3 == 0 { v[k] *= 1.0 / 1024 }
    let x = baseMatrix(rows: rows, cols: cols, seed: 7)
    var out = x
    out.withUnsafeMutableBufferPointer { xp in
      CanonicalReconstruction.addLowRank(
        into: xp.baseAddress!, rowRange: 0..<rows, columnCount: cols, u: u, v: v, rank: rank)
    }
    let expected = canonicalReference(x: x, u: u, v: v, rows: rows, cols: cols, rank: rank)
    #expect(bitPatterns(out) == bitPatterns(expected))
    if rank >= 8 {
      // The data is order-sensitive, so the comparison above has teeth: summing r downwards,
      // or adding x first, changes some bits.
      var reversed = x
      var xFirst = x
      for i in 0..<rows {
        for j in 0..<cols {
          var d = 0.0
          for r in (0..<rank).reversed() {
            d = unfusedSum(d, unfusedProduct(Double(u[i * rank + r]), Double(v[j * rank + r])))
          }
          reversed[i * cols + j] = unfusedSum(reversed[i * cols + j], d)
          for r in 0..<rank {
            xFirst[i * cols + j] = unfusedSum(
              xFirst[i * cols + j], unfusedProduct(Double(u[i * rank + r]), Double(v[j * rank + r]))
            )
          }
        }
      }
      #expect(bitPatterns(reversed) != bitPatterns(expected))
      #expect(bitPatterns(xFirst) != bitPatterns(expected))
    }
  }

  @Test("splitting the rows does not change a bit")
  func rowSplitInvariance() {
    let rows = 50
    let cols = 70
    let rank = 9
    let (u, v) = randomFactors(rows: rows, cols: cols, rank: rank, seed: 3)
    let x = baseMatrix(rows: rows, cols: cols, seed: 4)
    var whole = x
    var split = x
    whole.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRank(
        into: p.baseAddress!, rowRange: 0..<rows, columnCount: cols, u: u, v: v, rank: rank)
    }
    split.withUnsafeMutableBufferPointer { p in
      for range in [0..<1, 1..<17, 17..<17, 17..<rows] {
        CanonicalReconstruction.addLowRank(
          into: p.baseAddress!, rowRange: range, columnCount: cols, u: u, v: v, rank: rank)
      }
    }
    #expect(bitPatterns(whole) == bitPatterns(split))
  }

  @Test("rank 0 leaves the matrix untouched")
  func rankZero() {
    let x = baseMatrix(rows: 3, cols: 4, seed: 1)
    var out = x
    out.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRank(
        into: p.baseAddress!, rowRange: 0..<3, columnCount: 4, u: [], v: [], rank: 0)
    }
    #expect(bitPatterns(out) == bitPatterns(x))
  }

  @Test("the dgemm fast path agrees bit for bit at rank 1")
  func blasRankOneIsExact() {
    #expect(CanonicalReconstruction.canonicalIsExactForRankOne)
    let rows = 64
    let cols = 257
    let (u, v) = randomFactors(rows: rows, cols: cols, rank: 1, seed: 11)
    let x = baseMatrix(rows: rows, cols: cols, seed: 12)
    var canonical = x
    var blas = x
    canonical.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRank(
        into: p.baseAddress!, rowRange: 0..<rows, columnCount: cols, u: u, v: v, rank: 1)
    }
    blas.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRankBLAS(
        into: p.baseAddress!, rowRange: 5..<rows, columnCount: cols, u: u, v: v, rank: 1)
      CanonicalReconstruction.addLowRankBLAS(
        into: p.baseAddress!, rowRange: 0..<5, columnCount: cols, u: u, v: v, rank: 1)
    }
    #expect(bitPatterns(canonical) == bitPatterns(blas))
  }

  @Test("the dgemm fast path is within Float64 round-off at higher rank", arguments: [8, 64])
  func blasHigherRankIsClose(rank: Int) {
    let rows = 40
    let cols = 90
    let (u, v) = randomFactors(rows: rows, cols: cols, rank: rank, seed: 13)
    let x = [Double](repeating: 0.5, count: rows * cols)
    var canonical = x
    var blas = x
    canonical.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRank(
        into: p.baseAddress!, rowRange: 0..<rows, columnCount: cols, u: u, v: v, rank: rank)
    }
    blas.withUnsafeMutableBufferPointer { p in
      CanonicalReconstruction.addLowRankBLAS(
        into: p.baseAddress!, rowRange: 0..<rows, columnCount: cols, u: u, v: v, rank: rank)
    }
    expectClose(blas, canonical, relative: 1e-14)
  }
}
