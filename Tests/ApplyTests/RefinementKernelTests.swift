import CKernels
import Testing

@testable import Apply

/// The refinement's least-squares loops on AVX2 (`CKernels/NewtonSums.c`), and with AVX-512 where
/// the CPU has it (`CKernels/Avx512.c`), against the portable Swift loops they replace: the same
/// values, bit for bit, including the elements exactly on an interval's edge, open sides and
/// lengths that are not a multiple of 4 or 8.
@Suite(.enabled(if: IntervalRefiner.wideLoops, "the CPU has no AVX2"))
struct RefinementKernelTests {
  /// Products around their intervals: inside, outside on either side, on an edge, open sides.
  static func intervals(count: Int, seed: UInt64) -> (p: [Double], c: [Double], lo: [Double], hi: [Double]) {
    var rng = SplitMix64(seed: seed)
    var (p, c, lo, hi) = ([Double](), [Double](), [Double](), [Double]())
    for k in 0..<count {
      let x = rng.nextGaussianDouble()
      let width = abs(rng.nextGaussianDouble()) * 0.1
      let center = x + rng.nextGaussianDouble() * 0.1
      p.append(x)
      c.append(k % 17 == 0 ? 0 : rng.nextGaussianDouble())
      switch k % 11 {
      case 0: (lo, hi) = (lo + [x], hi + [x + width])  // on the lower edge
      case 1: (lo, hi) = (lo + [-.infinity], hi + [center])
      case 2: (lo, hi) = (lo + [center], hi + [.infinity])
      default: (lo, hi) = (lo + [center - width], hi + [center + width])
      }
    }
    return (p, c, lo, hi)
  }

  @Test(arguments: [0.0, 0.03, -1.5])
  func rowNewtonSumsMatchThePortableLoop(step: Double) {
    let n = 1031
    let (p, c, lo, hi) = Self.intervals(count: n, seed: 7)
    var portable = p
    func sums(_ products: inout [Double], wide: Bool) -> (g: Double, h: Double) {
      products.withUnsafeMutableBufferPointer { q in
        guard let base = q.baseAddress else { return (0, 0) }
        return IntervalRefiner.newtonSums(moving: base, by: step, along: c, count: n, lo: lo, hi: hi, wide: wide)
      }
    }
    let a = sums(&portable, wide: false)
    for avx512 in Self.avx512Choices {
      var wide = p
      let b = Self.withAVX512(avx512) { sums(&wide, wide: true) }
      #expect(a.g.bitPattern == b.g.bitPattern && a.h.bitPattern == b.h.bitPattern, "AVX-512 \(avx512)")
      #expect(portable.map(\.bitPattern) == wide.map(\.bitPattern), "AVX-512 \(avx512)")
    }
    #expect(a.h > 0)
  }

  /// With and without the AVX-512 loops where the CPU has them; else the AVX2 loops alone.
  static var avx512Choices: [Bool] { mvc_avx512_available() != 0 ? [true, false] : [false] }

  /// `body` with the AVX-512 loops allowed or not (other tests running meanwhile get the same
  /// values either way), then allowed again.
  static func withAVX512<T>(_ allowed: Bool, _ body: () -> T) -> T {
    mvc_allow_avx512(allowed ? 1 : 0)
    defer { mvc_allow_avx512(1) }
    return body()
  }

  @Test(arguments: [0.0, 0.7, -2.25])
  func columnNewtonRowMatchesThePortableLoop(a: Double) {
    let width = 259
    let (p, moved, lo, hi) = Self.intervals(count: width, seed: 11)
    // Offsets from the products, as Float32 (what fitColumns keeps).
    let offsetLo = zip(lo, p).map { Float($0 - $1) }
    let offsetHi = zip(hi, p).map { Float($0 - $1) }
    func run(wide: Bool) -> (g: [UInt64], h: [UInt64]) {
      var g = (0..<width).map { Double($0 % 5) - 2 }
      var h = [Double](repeating: 0.25, count: width)
      g.withUnsafeMutableBufferPointer { gp in
        h.withUnsafeMutableBufferPointer { hp in
          guard let gb = gp.baseAddress, let hb = hp.baseAddress else { return }
          IntervalRefiner.newtonColumnRow(
            a, lo: offsetLo, hi: offsetHi, moved: moved, g: gb, h: hb, width: width, wide: wide)
        }
      }
      return (g.map(\.bitPattern), h.map(\.bitPattern))
    }
    let portable = run(wide: false)
    for avx512 in Self.avx512Choices {
      let wide = Self.withAVX512(avx512) { run(wide: true) }
      #expect(portable.g == wide.g, "AVX-512 \(avx512)")
      #expect(portable.h == wide.h, "AVX-512 \(avx512)")
    }
  }
}
