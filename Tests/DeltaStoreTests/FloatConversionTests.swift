import CKernels
import DeltaStore
import Foundation
import TestSupport
import Testing

/// The bfloat16 value of a finite or infinite pattern as a Double.
private func bf16Value(_ bits: UInt16) -> Double { Double(Float(bitPattern: UInt32(bits) << 16)) }

/// Slow reference: the nearest bfloat16 by exact comparison against the two neighbours.
private func referenceBF16(_ x: Double) -> UInt16 {
  let sign: UInt16 = x.sign == .minus ? 0x8000 : 0
  let a = abs(x)
  // Largest non-negative pattern with value ≤ a (patterns 0...0x7F80 are ordered by value).
  var lo: UInt16 = 0
  var hi: UInt16 = 0x7F80
  while lo < hi {
    let mid = (lo + hi + 1) / 2
    if bf16Value(mid) <= a { lo = mid } else { hi = mid - 1 }
  }
  if bf16Value(lo) == a || lo == 0x7F80 { return sign | lo }
  let next = lo + 1
  let loValue = bf16Value(lo)
  let nextValue = next == 0x7F80 ? 0x1p128 : bf16Value(next)
  // Both differences are exact (Sterbenz, or subtraction of zero).
  let below = a - loValue
  let above = nextValue - a
  if below < above { return sign | lo }
  if above < below { return sign | next }
  return sign | (lo & 1 == 0 ? lo : next)
}

/// `FloatConversion.roundingIntervals` of every 16-bit pattern (element k is pattern k) as the new
/// value against one `parent` pattern, in `dtype` (bf16 or fp16).
private func roundingIntervalsOfEveryPattern(parent: UInt16, dtype: DType) -> (lo: [Double], hi: [Double]) {
  let n = Int(UInt16.max) + 1
  let newBytes = (0..<n).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
  let oldBytes = (0..<n).flatMap { _ in [UInt8(parent & 0xFF), UInt8(parent >> 8)] }
  var lo = [Double](repeating: 0, count: n)
  var hi = [Double](repeating: 0, count: n)
  newBytes.withUnsafeBytes { new in
    oldBytes.withUnsafeBytes { old in
      lo.withUnsafeMutableBufferPointer { l in
        hi.withUnsafeMutableBufferPointer { h in
          guard let l = l.baseAddress, let h = h.baseAddress else { return }  // never empty
          FloatConversion.roundingIntervals(new: new, old: old, dtype: dtype, elements: 0..<n, lo: l, hi: h)
        }
      }
    }
  }
  return (lo, hi)
}

/// The interval of offsets from `parent` that round to `x`: the midpoints to its neighbours
/// `toward` zero and `away` from it (infinite past the largest value, which leaves that side open).
private func midpointInterval(of x: Double, toward: Double, away: Double, parent y: Double, positive: Bool)
  -> (lo: Double, hi: Double)
{
  let lo = positive ? (x + toward) / 2 - y : (away.isFinite ? (x - away) / 2 - y : -.infinity)
  let hi = positive ? (away.isFinite ? (x + away) / 2 - y : .infinity) : (x - toward) / 2 - y
  return (lo, hi)
}

@Suite struct FloatConversionTests {
  /// bf16 rounding intervals (the refinement's input) for every 16-bit pattern as the new value
  /// and several parents: each is the pair of midpoints to the neighbouring values, minus the
  /// parent, in Float64; a NaN or infinite parent or new value constrains nothing; the largest
  /// finite values are open towards infinity.
  /// The first, vectorized pass notes whether a block holds an element the general path must
  /// redo (a zero, the largest value, a non-finite value or parent): one element at a time
  /// (blocks of one, most without such an element) gives the very bounds of the whole block,
  /// for every new pattern against parents of each kind.
  @Test(arguments: [DType.bf16, .f16])
  func roundingIntervalsDoNotDependOnTheBlock(dtype: DType) {
    let n = Int(UInt16.max) + 1
    for parent: UInt16 in [0x0000, 0x8000, 0x0001, 0x3CA4, 0xBFC0, 0x7BFF, 0x7C00, 0x7F80, 0xFE01] {
      let whole = roundingIntervalsOfEveryPattern(parent: parent, dtype: dtype)
      let newBytes = (0..<n).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
      let oldBytes = (0..<n).flatMap { _ in [UInt8(parent & 0xFF), UInt8(parent >> 8)] }
      var differing = 0
      newBytes.withUnsafeBytes { new in
        oldBytes.withUnsafeBytes { old in
          var (lo, hi) = (0.0, 0.0)
          for k in 0..<n {
            FloatConversion.roundingIntervals(new: new, old: old, dtype: dtype, elements: k..<(k + 1), lo: &lo, hi: &hi)
            if lo.bitPattern != whole.lo[k].bitPattern || hi.bitPattern != whole.hi[k].bitPattern { differing += 1 }
          }
        }
      }
      #expect(differing == 0, "parent \(String(parent, radix: 16)) in \(dtype)")
    }
  }

  @Test func bf16RoundingIntervalsAreTheMidpointsToTheNeighbours() {
    let patterns = (0...UInt16.max).map { $0 }
    for old in [UInt16(0x0000), 0x3CA4, 0xBFC0, 0x0003, 0x7F80, 0xFFC1] {
      let (lo, hi) = roundingIntervalsOfEveryPattern(parent: old, dtype: .bf16)
      let y = bf16Value(old & 0x7FFF) * (old & 0x8000 == 0 ? 1 : -1)
      var wrong = 0
      for bits in patterns {
        let k = Int(bits)
        let magnitude = bits & 0x7FFF
        let x = bf16Value(magnitude) * (bits & 0x8000 == 0 ? 1 : -1)
        if old & 0x7F80 == 0x7F80 || magnitude >= 0x7F80 {
          if lo[k] != -.infinity || hi[k] != .infinity { wrong += 1 }
          continue
        }
        guard magnitude != 0 else { continue }  // zeros: the ordered step crosses the sign
        // The next magnitude away from zero and towards it; infinity past the largest.
        let away = magnitude == 0x7F7F ? Double.infinity : bf16Value(magnitude + 1)
        let toward = bf16Value(magnitude - 1)
        let (expectedLo, expectedHi) = midpointInterval(
          of: x, toward: toward, away: away, parent: y, positive: bits & 0x8000 == 0)
        if lo[k] != expectedLo || hi[k] != expectedHi { wrong += 1 }
      }
      #expect(wrong == 0, "parent \(old)")
    }
  }

  /// fp16 rounding intervals for every 16-bit pattern as the new value and parents of every kind
  /// (zeros, subnormals, the smallest binade, normals, the largest value, infinity, NaN): the
  /// midpoints to the neighbouring values minus the parent, as the general path computes them;
  /// the widened fast path must agree bit for bit, across binade edges and signs.
  @Test func f16RoundingIntervalsAreTheMidpointsToTheNeighbours() {
    func value(_ bits: UInt16) -> Double { Double(Float16(bitPattern: bits)) }
    let patterns = (0...UInt16.max).map { $0 }
    let parents: [UInt16] = [0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x8401, 0x3C00, 0xB555, 0x7BFF, 0x7C00, 0xFE01]
    for old in parents {
      let (lo, hi) = roundingIntervalsOfEveryPattern(parent: old, dtype: .f16)
      let y = value(old)
      var wrong = 0
      for bits in patterns {
        let k = Int(bits)
        let magnitude = bits & 0x7FFF
        let x = value(bits)
        if !y.isFinite || magnitude >= 0x7C00 {
          if lo[k] != -.infinity || hi[k] != .infinity { wrong += 1 }
          continue
        }
        guard magnitude != 0 else { continue }  // zeros: the ordered step crosses the sign
        let away = magnitude == 0x7BFF ? Double.infinity : value(magnitude + 1)
        let toward = value(magnitude - 1)
        let (expectedLo, expectedHi) = midpointInterval(
          of: x, toward: toward, away: away, parent: y, positive: bits & 0x8000 == 0)
        if lo[k].bitPattern != expectedLo.bitPattern || hi[k].bitPattern != expectedHi.bitPattern { wrong += 1 }
      }
      #expect(wrong == 0, "parent \(old)")
    }
  }

  /// The AVX2 loops (CKernels/RoundingIntervals.c), and the AVX-512 loops (CKernels/Avx512.c)
  /// where the CPU has it, give the portable loops' values bit for bit,
  /// on random patterns (zeros, subnormals, the largest values, infinities and NaN among them,
  /// new and parent), on ordinary values alone (no block sent to the general path), and at every
  /// offset of a tail shorter than their eight lanes.
  @Test(
    .enabled(if: FloatConversion.wideIntervals, "this CPU has no AVX2: the portable loop is the only one"),
    arguments: [DType.bf16, .f16])
  func wideRoundingIntervalsMatchThePortableLoop(dtype: DType) {
    var state: UInt64 = 0x5EED
    func next() -> UInt16 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt16(truncatingIfNeeded: state >> 33)
    }
    let n = 1 << 16 + 7
    var newBits = (0..<n).map { _ in next() }
    var oldBits = (0..<n).map { _ in next() }
    let ordinary: (UInt16) -> UInt16
    if dtype == .bf16 {
      ordinary = { $0 & 0x7F80 == 0x7F80 ? 0x3C00 : $0 }
    } else {
      // Exponent fields 2…29: a normal value below the largest (for the parent too).
      ordinary = { $0 & 0x83FF | (2 + ($0 >> 10 & 0x1F) % 28) << 10 }
    }
    // Runs of ordinary values around the rare specials, so that many 8-lane blocks hold none.
    for k in stride(from: 0, to: n, by: 3) { newBits[k] = ordinary(newBits[k]) }
    // Then only ordinary values: no block flagged, the general pass skipped but for the tail.
    let allOrdinary = (newBits.map(ordinary), oldBits.map(ordinary))
    for (news, olds) in [(newBits, oldBits), allOrdinary] {
      (newBits, oldBits) = (news, olds)
      for first in [0, 1, 5] {
        var results: [[UInt64]] = []
        // Portable, AVX2 alone, then AVX-512 (sixteen lanes) where the CPU has it.
        for (wide, avx512) in [(false, false), (true, false)] + (mvc_avx512_available() != 0 ? [(true, true)] : []) {
          var lo = [Double](repeating: 0, count: n)
          var hi = [Double](repeating: 0, count: n)
          mvc_allow_avx512(avx512 ? 1 : 0)
          defer { mvc_allow_avx512(1) }
          newBits.withUnsafeBytes { new in
            oldBits.withUnsafeBytes { old in
              FloatConversion.roundingIntervals(
                new: new, old: old, dtype: dtype, elements: first..<n, lo: &lo, hi: &hi, wide: wide)
            }
          }
          results.append((lo + hi).map(\.bitPattern))
        }
        #expect(results.allSatisfy { $0 == results[0] })
      }
    }
  }

  /// The branch-free rounding of `encode`'s bf16 loop gives `bf16Bits`'s bits for every kind of
  /// value: random doubles, exact ties (to even, up and down), values around each end of the
  /// normal range, the largest finite values (overflow to infinity), subnormals, zeros, infinities, NaN.
  @Test func bf16FastRoundingMatchesTheGeneralOne() {
    var rng = SplitMix64(seed: 99)
    var values: [Double] = [
      0, -0.0, .infinity, -.infinity, .nan, 0x1p-126, 0x1p-127, -0x1p-126, 0x1.fep127, 0x1.ffp127,
    ]
    values += [0x1.fefffffffffffp127, 0x1.ff00000000001p127, 0x1p-150, 0x1p-149, 1 + 0x1p-8, 1 + 3 * 0x1p-8]
    for _ in 0..<200_000 {
      let bits = rng.next()
      values.append(Double(bitPattern: bits))  // every exponent, mostly outside bf16's range
      let exponent = Int(rng.next() % 300) - 150
      let tie = Double(
        sign: bits & 1 == 0 ? .plus : .minus, exponent: exponent, significand: 1 + Double(bits >> 57) * 0x1p-7 + 0x1p-8)
      values.append(tie)
      values.append(tie.nextUp)
      values.append(tie.nextDown)
      values.append(Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
    }
    expectFastRounding(values, dtype: .bf16, fast: FloatConversion.bf16BitsNormal, general: FloatConversion.bf16Bits)
  }

  /// The F16 fast rounding on every binade edge, tie and neighbour of one, and random doubles.
  @Test func f16FastRoundingMatchesTheGeneralOne() {
    var rng = SplitMix64(seed: 98)
    var values: [Double] = [
      0, -0.0, .infinity, -.infinity, .nan, 0x1p-14, -0x1p-14, 0x1p-15, 0x1.ffcp-15, 0x1.ffep-15, 0x1.ffdp-15, 65504,
      65519.99, 65520, -65520, 65536, 0x1p-24, 0x1p-25, 0x1.8p-25,
    ]
    for _ in 0..<200_000 {
      let bits = rng.next()
      values.append(Double(bitPattern: bits))
      let exponent = Int(rng.next() % 40) - 26
      let tie = Double(
        sign: bits & 1 == 0 ? .plus : .minus, exponent: exponent,
        significand: 1 + Double(bits >> 54) * 0x1p-10 + 0x1p-11)
      values += [tie, tie.nextUp, tie.nextDown, Double(Float(bitPattern: UInt32(truncatingIfNeeded: bits)))]
    }
    expectFastRounding(values, dtype: .f16, fast: FloatConversion.f16BitsNormal, general: FloatConversion.f16Bits)
  }

  /// `fast` gives `general`'s bits on every value, and so does `encode` (which uses it).
  private func expectFastRounding(
    _ values: [Double], dtype: DType, fast: (Double) -> UInt16, general: (Double) -> UInt16,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let mismatches = values.filter { fast($0) != general($0) }.count
    #expect(mismatches == 0, sourceLocation: sourceLocation)
    var encoded = [UInt8](repeating: 0, count: 2 * values.count)
    values.withUnsafeBufferPointer { v in
      encoded.withUnsafeMutableBytes { FloatConversion.encode(v, dtype: dtype, into: $0) }
    }
    #expect(
      (0..<values.count).allSatisfy {
        UInt16(encoded[2 * $0]) | UInt16(encoded[2 * $0 + 1]) << 8 == general(values[$0])
      },
      sourceLocation: sourceLocation)
  }

  @Test(arguments: [DType.f16, .bf16]) func every16BitPatternRoundTrips(dtype: DType) {
    for p in 0...UInt16.max {
      let raw: [UInt8] = [UInt8(p & 0xFF), UInt8(p >> 8)]
      var d = [0.0]
      raw.withUnsafeBytes { r in
        d.withUnsafeMutableBufferPointer {
          FloatConversion.decode(r, dtype: dtype, elements: 0..<1, into: $0)
        }
      }
      let back = dtype == .f16 ? FloatConversion.f16Bits(d[0]) : FloatConversion.bf16Bits(d[0])
      let exponentMask: UInt16 = dtype == .f16 ? 0x7C00 : 0x7F80
      let quietBit: UInt16 = dtype == .f16 ? 0x0200 : 0x0040
      let isNaN = p & exponentMask == exponentMask && p & ~(exponentMask | 0x8000) != 0
      if isNaN {
        #expect(back == p | quietBit, "pattern \(p)")
      } else {
        #expect(back == p, "pattern \(p)")
      }
    }
  }

  @Test func tiesRoundToEvenAndBF16RoundsOnce() {
    #expect(FloatConversion.bf16Bits(1 + 0x1p-8) == 0x3F80)  // tie, down to even
    #expect(FloatConversion.bf16Bits(1 + 3 * 0x1p-8) == 0x3F82)  // tie, up to even
    // Float(x) would give the tie 1 + 2^-8 and then round down: double rounding.
    #expect(FloatConversion.bf16Bits(1 + 0x1p-8 + 0x1p-40) == 0x3F81)
    #expect(FloatConversion.f16Bits(1 + 0x1p-11) == 0x3C00)
    #expect(FloatConversion.f16Bits(1 + 3 * 0x1p-11) == 0x3C02)
    #expect(FloatConversion.f16Bits(65520) == 0x7C00)  // halfway past max → inf
    #expect(FloatConversion.f16Bits(65519.99) == 0x7BFF)
    #expect(FloatConversion.f16Bits(0x1p-25) == 0)  // tie with zero → even (zero)
    #expect(FloatConversion.f16Bits(0x1p-25 + 0x1p-60) == 1)
    #expect(FloatConversion.f16Bits(-0.0) == 0x8000)
    #expect(FloatConversion.bf16Bits(.infinity) == 0x7F80)
    #expect(FloatConversion.bf16Bits(-Double.greatestFiniteMagnitude) == 0xFF80)
    #expect(FloatConversion.bf16Bits(.nan) & 0x7FC0 == 0x7FC0)
    #expect(FloatConversion.f32Bits(.leastNonzeroMagnitude) == 0)
    #expect(FloatConversion.f32Bits(0x1p-149 * 1.5) == 2)  // tie between subnormals 1 and 2 → even
  }

  @Test func randomDoublesMatchReferences() {
    var rng = SplitMix64(seed: 42)
    for i in 0..<200_000 {
      let x: Double
      if i % 2 == 0 {
        x = Double(bitPattern: rng.next())  // any pattern, incl. huge, tiny, NaN
      } else {
        // Values near the narrow formats' ranges, with low bits set to hit near-ties.
        let e = Double(Int(rng.next() % 300) - 150)
        x = (Double(rng.next() >> 11) * 0x1p-53 + 1) * pow(2, e) * (rng.next() & 1 == 0 ? 1 : -1)
      }
      if x.isNaN { continue }
      #expect(FloatConversion.f16Bits(x) == Float16(x).bitPattern, "\(x)")
      #expect(FloatConversion.f32Bits(x) == Float(x).bitPattern, "\(x)")
      if i % 8 == 1 || i % 8 == 0 {
        #expect(FloatConversion.bf16Bits(x) == referenceBF16(x), "\(x)")
      }
    }
  }

  @Test func bufferEncodeDecodeAllFloatTypes() {
    let values: [Double] = [0, -0.0, 1.5, -2.25, 0x1p-10, 65280, .infinity, -.infinity]
    for dtype in [DType.f64, .f32, .f16, .bf16] {
      var raw = [UInt8](repeating: 0, count: values.count * (dtype.byteCount ?? 0))
      raw.withUnsafeMutableBytes { r in
        values.withUnsafeBufferPointer { FloatConversion.encode($0, dtype: dtype, into: r) }
      }
      var back = [Double](repeating: 0, count: values.count)
      var backFloat = [Float](repeating: 0, count: values.count)
      raw.withUnsafeBytes { r in
        back.withUnsafeMutableBufferPointer {
          FloatConversion.decode(r, dtype: dtype, elements: 0..<values.count, into: $0)
        }
        backFloat.withUnsafeMutableBufferPointer {
          FloatConversion.decode(r, dtype: dtype, elements: 0..<values.count, into: $0)
        }
      }
      for (v, b) in zip(values, back) {
        #expect(v == b && v.sign == b.sign, "\(dtype) \(v)")
      }
      for (d, f) in zip(back, backFloat) { #expect(Float(d) == f) }
    }
  }
}
