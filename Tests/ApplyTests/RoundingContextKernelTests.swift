import Testing

@testable import Apply

/// The F32 rounding contexts on AVX2 (`CKernels/RoundingContexts.c`) against the portable loop:
/// the bytes are part of the format (a conditioned residual decodes against them), so they must be
/// the same, bit for bit, on every input: sums near and far from a midpoint, zero, subnormal,
/// huge, infinite and NaN sums and parents, results that overflow Float32, and a length that is
/// not a multiple of 4.
@Suite(.enabled(if: CanonicalRule.wideContexts, "the CPU has no AVX2"))
struct RoundingContextKernelTests {
  /// Parents and rank-one factors whose products cover every bucket and every special case.
  static func inputs(rows: Int, cols: Int, seed: UInt64) -> (parent: [UInt8], u: [Float], v: [Float]) {
    var rng = SplitMix64(seed: seed)
    let specials: [Float] = [
      0, -0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, -.leastNormalMagnitude, .greatestFiniteMagnitude,
      -.greatestFiniteMagnitude, 1, 0x1p-126, 3.4e38,
    ]
    var parent: [UInt8] = []
    for k in 0..<(rows * cols) {
      // Magnitudes over many binades; every 13th a special value.
      let x = k % 13 == 0 ? specials[(k / 13) % specials.count] : rng.nextGaussian() * Float(1 << (k % 20))
      withUnsafeBytes(of: x.bitPattern.littleEndian) { parent += $0 }
    }
    // u spans the scales from a hundred-millionth of the parent to many times it, so q falls in
    // every bucket; a few special factors.
    let u = (0..<rows).map { i -> Float in
      i % 29 == 0 ? specials[(i / 29) % specials.count] : rng.nextGaussian() * Float(0x1p-30) * Float(1 << (i % 40))
    }
    let v = (0..<cols).map { j -> Float in j % 31 == 5 ? 0 : rng.nextGaussian() }
    return (parent, u, v)
  }

  static func contexts(parent: [UInt8], rows: Int, cols: Int, u: [Float], v: [Float], rank: Int, wide: Bool)
    -> [UInt8]
  {
    var out = [UInt8](repeating: 0xFF, count: rows * cols)
    parent.withUnsafeBytes { p in
      u.withUnsafeBufferPointer { u in
        v.withUnsafeBufferPointer { v in
          out.withUnsafeMutableBufferPointer { o in
            CanonicalRule.roundingContexts(
              parent: p, rows: rows, cols: cols, u: u, v: v, rank: rank, into: o, wide: wide)
          }
        }
      }
    }
    return out
  }

  @Test(arguments: [(rows: 97, cols: 203), (rows: 3, cols: 5), (rows: 64, cols: 1024)])
  func rankOneContextsMatchThePortableLoop(shape: (rows: Int, cols: Int)) {
    let (parent, u, v) = Self.inputs(rows: shape.rows, cols: shape.cols, seed: UInt64(shape.cols))
    let portable = Self.contexts(parent: parent, rows: shape.rows, cols: shape.cols, u: u, v: v, rank: 1, wide: false)
    let wide = Self.contexts(parent: parent, rows: shape.rows, cols: shape.cols, u: u, v: v, rank: 1, wide: true)
    #expect(portable == wide)
    if shape.rows * shape.cols > 10_000 {
      // The inputs reach far and near buckets, both directions and bucket 0 with the down bit.
      let buckets = Set(portable.map { $0 & 0x7F })
      #expect(buckets.count > 60, "only \(buckets.count) buckets reached")
      #expect(portable.contains { $0 & CanonicalRule.roundingContextDownBit != 0 && $0 & 0x7F != 0 })
      #expect(portable.contains(CanonicalRule.roundingContextDownBit))
    }
  }

  @Test func rankThreeContextsMatchThePortableLoop() {
    let (rows, cols, rank) = (41, 67, 3)
    let (parent, u1, v1) = Self.inputs(rows: rows * rank, cols: cols * rank, seed: 3)
    let (u, v) = (Array(u1.prefix(rows * rank)), Array(v1.prefix(cols * rank)))
    let slice = Array(parent.prefix(rows * cols * 4))
    let portable = Self.contexts(parent: slice, rows: rows, cols: cols, u: u, v: v, rank: rank, wide: false)
    let wide = Self.contexts(parent: slice, rows: rows, cols: cols, u: u, v: v, rank: rank, wide: true)
    #expect(portable == wide)
  }
}
