import CKernels

extension CanonicalRule {
  /// Buckets of ``roundingContexts(parent:rows:cols:u:v:rank:into:wide:)``: 0 is "far from every
  /// rounding midpoint", 1…64 cover `q` in [0, 2) in steps of 1/32, 65…78 cover [2, 16) in steps
  /// of 1. A residual coder keeps one flip probability per bucket (`ConditionedResidualCoding`).
  package static let roundingContextBucketCount = 79
  /// Bit 7 of a context byte: the element's nearest rounding midpoint lies below it, so a flip
  /// moves it one ulp down (else one ulp up).
  package static let roundingContextDownBit: UInt8 = 0x80

  /// For each element of an F32 matrix, how close the canonical sum `y = x + Σ_r u_r·v_r` lies to
  /// the midpoint between two Float32 values that decides its rounding, measured in ulps of the
  /// Float32 `Σ u·v` itself: `q = (half spacing − |y − round(y)|) / ulp_f32(Σ u·v)` (with the
  /// spacings as powers of two, ``context(x:d:)``).
  ///
  /// An editor that rounds `u·v` to Float32 before adding it moves `y` by at most half that ulp,
  /// so only elements with `q < ½` can round differently from the canonical rule, with chance
  /// about `½ − q`, and always towards the midpoint; factors recovered from the bytes stretch that
  /// a little. The byte is the bucket of `q` (``roundingContextBucketCount``) and
  /// ``roundingContextDownBit`` when the midpoint is below.
  ///
  /// Deterministic on every machine, as the rule itself: `Σ u·v` is summed by
  /// ``CanonicalReconstruction/addLowRank(into:rowRange:columnCount:u:v:rank:)`` (exact product
  /// for rank 1), then only IEEE additions, subtractions, multiplications and conversions follow;
  /// no BLAS. A non-finite sum or `q ≥ 16` (a zero `Σ u·v` included) is bucket 0.
  /// - Parameters:
  ///   - parent: `rows × cols` little-endian F32 elements, the state the factors apply to.
  ///   - contexts: `rows × cols` bytes, written.
  package static func roundingContexts(
    parent: UnsafeRawBufferPointer, rows: Int, cols: Int, u: UnsafeBufferPointer<Float>,
    v: UnsafeBufferPointer<Float>, rank: Int, into contexts: UnsafeMutableBufferPointer<UInt8>,
    wide: Bool = wideContexts
  ) {
    precondition(parent.count == rows * cols * 4 && contexts.count == rows * cols)
    guard let out = contexts.baseAddress, let base = parent.baseAddress else { return }
    guard rank > 0, let uBase = u.baseAddress, let vBase = v.baseAddress else {
      out.initialize(repeating: 0, count: rows * cols)
      return
    }
    let blockRows = max(1, DenseKernels.blockElementCount / max(cols, 1))
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: blockRows * cols)
    defer { sums.deallocate() }
    var row = 0
    while row < rows {
      let count = min(blockRows, rows - row)
      let elements = count * cols
      if rank == 1 {
        for i in 0..<count {
          let ui = Double(uBase[row + i])
          for j in 0..<cols { sums[i * cols + j] = ui * Double(vBase[j]) }
        }
      } else {
        sums.initialize(repeating: 0, count: elements)
        CanonicalReconstruction.addLowRank(
          into: sums, rowRange: 0..<count, columnCount: cols, u: uBase + row * rank, v: vBase, rank: rank)
      }
      let x = (base + row * cols * 4)
      // The same bytes four at a time on AVX2 (CKernels/RoundingContexts.c); this loop does the tail.
      let done =
        wide ? mvc_rounding_contexts_avx2(x.assumingMemoryBound(to: Float.self), sums, elements, out + row * cols) : 0
      for k in done..<elements {
        let bits = UInt32(littleEndian: x.loadUnaligned(fromByteOffset: k * 4, as: UInt32.self))
        out[row * cols + k] = context(x: Float(bitPattern: bits), d: sums[k])
      }
      row += count
    }
  }

  /// Whether ``roundingContexts(parent:rows:cols:u:v:rank:into:wide:)`` runs its AVX2 loop (the
  /// same bytes as the portable one; tests compare the two).
  package static let wideContexts = mvc_avx2_available() != 0

  /// The context byte of one element: `x` its parent value, `d` the Float64 `Σ u·v`.
  ///
  /// Powers of two stand in for the spacings, so the loop has no call and no branch: the half
  /// spacing of the Float32 grid at `r = round(y)` is `2^(E_r − 151)` (`E_r` the biased Float32
  /// exponent of `r`, at least 1), the ulp of `d` as a Float32 is `2^(e_d − 23)` (`e_d` the unbiased
  /// Float64 exponent of `d`), so `q = 2^(E_r − 128 − e_d) − |y − r|·2^(23 − e_d)`, each power
  /// clamped to Float64's normal range. (Just below a power of two the true spacing is half
  /// that; such elements are rare and only their bucket shifts.)
  @inline(__always)
  static func context(x: Float, d: Double) -> UInt8 {
    let y = Double(x) + d
    let r = Float(y)
    let e = y - Double(r)
    let er = max(Int((r.bitPattern >> 23) & 0xFF), 1)
    let ed = Int((d.bitPattern >> 52) & 0x7FF) - 1023
    let q = power(er - 128 - ed) - e.magnitude * power(23 - ed)
    // NaN (non-finite y or d) fails every comparison and lands in bucket 0.
    let t = q >= 0 && q < 16 ? q : 16
    let bucket = t < 2 ? 1 + Int(t * 32) : t < 16 ? 63 + Int(t) : 0
    return UInt8(truncatingIfNeeded: bucket) | (e >= 0 ? 0 : roundingContextDownBit)
  }

  /// `2^k` as a Float64, `k` clamped to the normal exponents (−1022…1023).
  @inline(__always)
  private static func power(_ k: Int) -> Double {
    Double(bitPattern: UInt64(min(max(k, -1022), 1023) + 1023) << 52)
  }
}
