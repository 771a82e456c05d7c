internal import CKernels

extension FloatConversion {
  /// For each element `k` of `elements`, the interval of deltas that round to the stored value:
  /// `lo[k] = m⁻ − old`, `hi[k] = m⁺ − old`, where `m∓` are the midpoints between the `new`
  /// value and its neighbours in the dtype (one ordered-integer step down and up) and `old` is
  /// the parent's value, all in Float64 (the midpoints of F32/F16/BF16 values are exact there).
  ///
  /// An element whose new or old value is not finite gets `(-∞, +∞)`: it constrains nothing.
  /// The largest finite value's upper neighbour is infinity, so its `hi` is `+∞` (and the
  /// smallest's `lo` is `-∞`), as rounding saturates there only past infinity's midpoint anyway.
  /// - Parameters:
  ///   - new: the committed tensor; `old`: its parent; both of `dtype` (F32, F16 or BF16).
  ///   - wide: whether BF16 and F16 take the AVX2 loops (``wideIntervals``; tests compare the two).
  package static func roundingIntervals(
    new: UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, elements: Range<Int>,
    lo: UnsafeMutablePointer<Double>, hi: UnsafeMutablePointer<Double>, wide: Bool = wideIntervals
  ) {
    precondition(dtype == .f32 || dtype == .f16 || dtype == .bf16, "rounding intervals of \(dtype.rawValue)")
    let width = dtype.bitCount / 8
    precondition(elements.lowerBound >= 0 && elements.upperBound * width <= min(new.count, old.count))
    guard let newBase = new.baseAddress, let oldBase = old.baseAddress else { return }
    let n = elements.count
    let first = elements.lowerBound
    // One loop per dtype: this runs over the whole tensor several times per refinement.
    switch dtype {
    case .f32:
      let x = (newBase + 4 * first).assumingMemoryBound(to: UInt32.self)
      let y = (oldBase + 4 * first).assumingMemoryBound(to: UInt32.self)
      for k in 0..<n {
        let bits = UInt32(littleEndian: x[k])
        let o = OrderedBits.f32(bits)
        set(
          k, Double(Float(bitPattern: bits)), Double(Float(bitPattern: UInt32(littleEndian: y[k]))),
          Double(Float(bitPattern: OrderedBits.f32Bits(ordered: o &- 1))),
          Double(Float(bitPattern: OrderedBits.f32Bits(ordered: o &+ 1))), lo, hi)
      }
    case .bf16:
      let x = (newBase + 2 * first).assumingMemoryBound(to: UInt16.self)
      let y = (oldBase + 2 * first).assumingMemoryBound(to: UInt16.self)
      @inline(__always) func value(_ b: UInt16) -> Double { Double(Float(bitPattern: UInt32(b) << 16)) }
      // Nonzero finite values below the largest, over a finite parent (nearly all): the
      // midpoints to both neighbours are the binary32 patterns half a bfloat16 step on either
      // side (exact, across binade edges too; in the other order for negative values), so no
      // neighbour is looked up. Every element is first given these (one loop without branches,
      // which the compiler vectorizes), then the others are redone by the general path: the
      // same Float64 values as the general path everywhere. The AVX2 loop flags the blocks of
      // eight that hold a zero, the largest value or a non-finite value, and only those are
      // redone; the portable loop notes whether its elements hold any.
      /// The general path for the elements of `range` that need it.
      func redo(_ range: Range<Int>) {
        for k in range {
          let bits = UInt16(littleEndian: x[k])
          let oldBits = UInt16(littleEndian: y[k])
          if bits & 0x7FFF != 0 && bits & 0x7FFF < 0x7F7F && oldBits & 0x7F80 != 0x7F80 { continue }
          let o = OrderedBits.f16(bits)
          set(
            k, value(bits), value(oldBits), value(OrderedBits.f16Bits(ordered: o &- 1)),
            value(OrderedBits.f16Bits(ordered: o &+ 1)), lo, hi)
        }
      }
      var others: UInt16 = 0
      var start = 0
      if wide {
        // The same loop eight lanes at a time (CKernels/RoundingIntervals.c), which flags each
        // block of eight that holds an element for the general path: only those are redone.
        start = flaggedBlocksLoop(count: n, redo: redo) { mvc_bf16_intervals_avx2(x, y, n, lo, hi, $0) }
      }
      for k in start..<n {
        let bits = UInt16(littleEndian: x[k])
        let oldBits = UInt16(littleEndian: y[k])
        // A negative value's lower midpoint is the one of larger magnitude.
        let wide = UInt32(bits) << 16
        let flip = UInt32(bits >> 15) << 16
        let old = value(oldBits)
        lo[k] = Double(Float(bitPattern: wide &- 0x8000 &+ flip)) - old
        hi[k] = Double(Float(bitPattern: wide &+ 0x8000 &- flip)) - old
        // Set unless 0 < |bits| < 0x7F7F and the parent is finite (the test below, branch-free).
        others |= ((bits & 0x7FFF) &- 1 >= 0x7F7E ? 1 : 0) | ((oldBits & 0x7F80) == 0x7F80 ? 1 : 0)
      }
      // (`where others != 0` would be tested on every element: the compiler does not hoist it.)
      redo(others == 0 ? n..<n : start..<n)
    default:
      let x = (newBase + 2 * first).assumingMemoryBound(to: UInt16.self)
      let y = (oldBase + 2 * first).assumingMemoryBound(to: UInt16.self)
      @inline(__always) func value(_ b: UInt16) -> Double { Double(Float16(bitPattern: b)) }
      // As for BF16, over the binary32 patterns: a normal binary16 value (exponent field 2
      // to 30, below the largest) widens to `sign | (magnitude << 13) + (112 << 23)`, and its
      // midpoints are half a binary16 step (bit 12) on either side; a normal or zero parent
      // widens the same way. The others (subnormals and the smallest binade, where the step
      // below differs; the largest value; infinities and NaN) are redone by the general path.
      /// The general path for the elements of `range` that need it.
      func redo(_ range: Range<Int>) {
        for k in range {
          let bits = UInt16(littleEndian: x[k])
          let oldBits = UInt16(littleEndian: y[k])
          let exponent = (bits >> 10) & 0x1F
          let oldExponent = (oldBits >> 10) & 0x1F
          if exponent >= 2 && exponent <= 30 && bits & 0x7FFF != 0x7BFF
            && (oldBits & 0x7FFF == 0 || (oldExponent >= 1 && oldExponent <= 30))
          {
            continue
          }
          let o = OrderedBits.f16(bits)
          set(
            k, value(bits), value(oldBits), value(OrderedBits.f16Bits(ordered: o &- 1)),
            value(OrderedBits.f16Bits(ordered: o &+ 1)), lo, hi)
        }
      }
      var start = 0
      if wide {
        // The same loop eight lanes at a time (CKernels/RoundingIntervals.c), which flags each
        // block of eight that holds an element for the general path: only those are redone.
        // (Weights near zero put one in most rows, so a flag per call redid whole rows.)
        start = flaggedBlocksLoop(count: n, redo: redo) { mvc_f16_intervals_avx2(x, y, n, lo, hi, $0) }
      }
      for k in start..<n {
        let bits = UInt16(littleEndian: x[k])
        let oldBits = UInt16(littleEndian: y[k])
        let sign = UInt32(bits & 0x8000) << 16
        let wide = sign | ((UInt32(bits & 0x7FFF) << 13) &+ 0x3800_0000)
        let flip = UInt32(bits >> 15) << 13
        let oldMagnitude = UInt32(oldBits & 0x7FFF)
        let oldWide =
          (UInt32(oldBits & 0x8000) << 16) | (oldMagnitude == 0 ? 0 : (oldMagnitude << 13) &+ 0x3800_0000)
        let old = Double(Float(bitPattern: oldWide))
        lo[k] = Double(Float(bitPattern: wide &- 0x1000 &+ flip)) - old
        hi[k] = Double(Float(bitPattern: wide &+ 0x1000 &- flip)) - old
      }
      // (Unlike BF16's, noting the others in the portable first loop made it slower: the
      // general path's check runs over every element after `start`.)
      redo(start..<n)
    }
  }

  /// Whether BF16 and F16 intervals are computed by the AVX2 loops (the same values as the
  /// portable ones).
  package static let wideIntervals = mvc_avx2_available() != 0

  /// Runs a vector interval loop over `count` elements (`loop` gets room for a flag per block of
  /// eight and returns the elements it did), then `redo` on each block it flagged; returns the
  /// elements done.
  @inline(__always)
  private static func flaggedBlocksLoop(
    count: Int, redo: (Range<Int>) -> Void, _ loop: (UnsafeMutablePointer<UInt8>?) -> Int
  ) -> Int {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: count / 8 + 1) { flagged in
      let done = loop(flagged.baseAddress)
      for block in 0..<(done / 8) where flagged[block] != 0 { redo((8 * block)..<(8 * block + 8)) }
      return done
    }
  }

  /// Element `k`'s interval from its new value `x`, old value `y` and `x`'s two neighbours.
  @inline(__always)
  private static func set(
    _ k: Int, _ x: Double, _ y: Double, _ down: Double, _ up: Double, _ lo: UnsafeMutablePointer<Double>,
    _ hi: UnsafeMutablePointer<Double>
  ) {
    guard x.isFinite, y.isFinite else {
      lo[k] = -.infinity
      hi[k] = .infinity
      return
    }
    lo[k] = down.isFinite ? (x + down) / 2 - y : -.infinity
    hi[k] = up.isFinite ? (x + up) / 2 - y : .infinity
  }
}
