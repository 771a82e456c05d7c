import Apply
import DeltaStore
import Foundation

/// Joins DeltaStore's dtype codecs and Apply's algebra for whole tensors, a row block at a
/// time so the Float64 working copy stays small whatever the tensor's size.
enum TensorMath {
  /// Elements per block of Float64 work (2 MiB).
  static let blockElementCount = 1 << 18

  /// A tensor seen as a row-major matrix: the first dimension by the product of the rest.
  static func matrixShape(_ shape: [Int]) -> (rows: Int, cols: Int) {
    guard let first = shape.first else { return (1, 1) }
    if shape.count == 1 { return (1, first) }
    return (first, shape.dropFirst().reduce(1, *))
  }

  /// `new − old` as a dense Float32 matrix, with the RMS rounding noise of `new` in its dtype,
  /// ‖old‖_F and the difference's own ‖·‖_F (``DenseNorms/frobenius(_:count:)``), all in one pass.
  /// With `delta` nil the difference is measured but not kept (see ``withDifferenceRows(new:old:dtype:cols:_:)``).
  static func difference(
    new: UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, count: Int,
    into delta: UnsafeMutablePointer<Float>?
  ) throws -> DifferenceMeasures {
    let width = dtype.byteCount ?? 1
    return try difference(
      newBlock: { UnsafeRawBufferPointer(rebasing: new[($0.lowerBound * width)..<($0.upperBound * width)]) },
      old: old, dtype: dtype, count: count, into: delta)
  }

  /// What ``difference(new:old:dtype:count:into:)`` measures.
  struct DifferenceMeasures: Equatable {
    var noiseRMS: Double
    var oldFrobenius: Double
    var maxAbsNew: Double
    var allFinite: Bool
    /// ‖new − old‖_F of the Float32 differences (non-finite ones counted as 0).
    var deltaFrobenius: Double
  }

  /// `difference(new:old:dtype:count:into:)` with `new` handed over a block of elements at a
  /// time by `newBlock(elements)` (read from a file into a small buffer, so the whole of `new`
  /// is never in memory beside `old` and the difference). The returned bytes need only stay
  /// valid until the next call.
  static func difference(
    newBlock: (Range<Int>) throws -> UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, count: Int,
    into delta: UnsafeMutablePointer<Float>?
  ) throws -> DifferenceMeasures {
    try withBlockBuffers { a, b, d in
      try difference(newBlock: newBlock, old: old, dtype: dtype, count: count, into: delta, buffers: (a, b, d))
    }
  }

  /// Two Float64 blocks and a Float32 one (`blockElementCount` each) for `body`, freed after it.
  private static func withBlockBuffers<T>(
    _ body: (UnsafeMutablePointer<Double>, UnsafeMutablePointer<Double>, UnsafeMutablePointer<Float>) throws -> T
  ) rethrows -> T {
    let block = blockElementCount
    let a = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let b = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let d = UnsafeMutablePointer<Float>.allocate(capacity: block)
    defer {
      a.deallocate()
      b.deallocate()
      d.deallocate()
    }
    return try body(a, b, d)
  }

  private static func difference(
    newBlock: (Range<Int>) throws -> UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, count: Int,
    into delta: UnsafeMutablePointer<Float>?,
    buffers: (UnsafeMutablePointer<Double>, UnsafeMutablePointer<Double>, UnsafeMutablePointer<Float>)
  ) throws -> DifferenceMeasures {
    let (a, b, d) = buffers
    let block = blockElementCount
    let ulpScale = ulpScale(dtype)
    var noise = 0.0
    var norm = 0.0
    var maxAbs = 0.0
    var allFinite = true
    var deltaNorm = DenseNorms.FrobeniusSum()
    var start = 0
    while start < count {
      let n = min(block, count - start)
      let range = start..<(start + n)
      FloatConversion.decode(
        try newBlock(range), dtype: dtype, elements: 0..<n, into: UnsafeMutableBufferPointer(start: a, count: n))
      FloatConversion.decode(old, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: b, count: n))
      for i in 0..<n {
        let x = a[i]
        let y = b[i]
        d[i] = Float(x - y)
        guard x.isFinite, y.isFinite, d[i].isFinite else {
          // Inf/NaN have no ulp and no low-rank story; the caller stores such a change whole.
          allFinite = false
          d[i] = 0
          continue
        }
        let ulp = Double(Float(x).ulp) * ulpScale
        noise += ulp * ulp
        norm += y * y
        maxAbs = max(maxAbs, abs(x))
      }
      deltaNorm.add(d, count: n)
      delta?.advanced(by: start).update(from: d, count: n)
      start += n
    }
    return DifferenceMeasures(
      noiseRMS: (noise / Double(max(count, 1)) / 12).squareRoot(), oldFrobenius: norm.squareRoot(), maxAbsNew: maxAbs,
      allFinite: allFinite, deltaFrobenius: deltaNorm.value)
  }

  /// ``difference(new:old:dtype:count:into:)``'s measures, bit for bit, with its passes on up to
  /// two threads.
  ///
  /// Its sums run in element order, each rounding after the last, so they are not split by
  /// element ranges (that would change their low bits, which `meta.json` records): when every
  /// element is finite (every element then counts), the noise and `max|new|` are one thread's
  /// pass over `new`, and ‖old‖², the difference's norm and the finiteness check another's over
  /// both, each sum in the order of the single pass. A tensor with an Inf or NaN (whose change
  /// is stored complete) is measured again by the single pass.
  static func measures(
    new: UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, count: Int, workers: Int
  ) throws -> DifferenceMeasures {
    guard workers > 1 else { return try difference(new: new, old: old, dtype: dtype, count: count, into: nil) }
    let ulpScale = ulpScale(dtype)
    let scaleExponent = Int(ulpScale.exponent)
    let block = blockElementCount
    // Each part's sums live in its own locals (a captured variable would go through memory and
    // an exclusivity check at every step) and are written to its own slot at the end.
    typealias Sums = (noise: Double, maxAbs: Double, norm: Double, allFinite: Bool, delta: DenseNorms.FrobeniusSum)
    var results = [Sums](repeating: (0, 0, 0, true, DenseNorms.FrobeniusSum()), count: 2)
    results.withUnsafeMutableBufferPointer { slots in
      nonisolated(unsafe) let slots = slots
      ParallelParts.run(2, workers: workers) { part in
        withBlockBuffers { a, b, d in
          var noise = 0.0
          var maxBits: UInt64 = 0
          var norm = 0.0
          var nonFinite: UInt64 = 0
          var deltaNorm = DenseNorms.FrobeniusSum()
          var start = 0
          while start < count {
            let n = min(block, count - start)
            let range = start..<(start + n)
            FloatConversion.decode(
              new, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: a, count: n))
            if part == 0 {
              // The noise sum alone carries a chain of dependent additions; |new|'s maximum is
              // taken on the bits (their order is the values' for non-negative finite numbers).
              if dtype == .f64 {
                for i in 0..<n {
                  let ulp = Double(Float(a[i]).ulp) * ulpScale
                  noise += ulp * ulp
                  maxBits = max(maxBits, a[i].bitPattern & 0x7FFF_FFFF_FFFF_FFFF)
                }
              } else {
                for i in 0..<n {
                  noise += squaredUlp(exactFloat: a[i], scaleExponent: scaleExponent)
                  maxBits = max(maxBits, a[i].bitPattern & 0x7FFF_FFFF_FFFF_FFFF)
                }
              }
            } else {
              FloatConversion.decode(
                old, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: b, count: n))
              for i in 0..<n {
                let (x, y) = (a[i], b[i])
                let difference = Float(x - y)
                d[i] = difference
                norm += y * y
                // 1 when the exponent field is all ones (Inf or NaN), without a branch.
                nonFinite |=
                  (x.bitPattern >> 52 & 0x7FF &+ 1) >> 11 | (y.bitPattern >> 52 & 0x7FF &+ 1) >> 11
                  | UInt64((difference.bitPattern >> 23 & 0xFF &+ 1) >> 8)
              }
              deltaNorm.add(d, count: n)
            }
            start += n
          }
          let (maxAbs, allFinite) = (Double(bitPattern: maxBits), nonFinite == 0)
          slots[part] = (noise, maxAbs, norm, allFinite, deltaNorm)
        }
      }
    }
    let (noise, maxAbs) = (results[0].noise, results[0].maxAbs)
    let (norm, allFinite, deltaNorm) = (results[1].norm, results[1].allFinite, results[1].delta)
    guard allFinite else { return try difference(new: new, old: old, dtype: dtype, count: count, into: nil) }
    return DifferenceMeasures(
      noiseRMS: (noise / Double(max(count, 1)) / 12).squareRoot(), oldFrobenius: norm.squareRoot(), maxAbsNew: maxAbs,
      allFinite: true, deltaFrobenius: deltaNorm.value)
  }

  /// `(Double(Float(x).ulp) · 2^scaleExponent)²` for a finite `x` that is exactly a Float (a BF16,
  /// F16 or F32 value), from its exponent field alone: `Float.ulp` is 2^(max(E, 1) − 150) for
  /// the biased exponent E (2⁻¹⁴⁹ for zeros and subnormals), so the square is a power of two
  /// built from its bits, the same number without the library call and its branches.
  @inline(__always)
  static func squaredUlp(exactFloat x: Double, scaleExponent: Int) -> Double {
    let biased = Int(truncatingIfNeeded: Float(x).bitPattern >> 23 & 0xFF)
    return Double(bitPattern: UInt64(truncatingIfNeeded: 2 * (max(biased, 1) - 150 + scaleExponent) + 1023) << 52)
  }

  /// The rows of `new − old` (both `rows × cols` of `dtype`) for
  /// ``Factorization/lowRank(rows:cols:frobenius:noiseRMS:maxRank:seed:workers:deltaRows:)``: the Float32
  /// differences of ``difference(new:old:dtype:count:into:)`` (non-finite ones 0), widened, a
  /// row block at a time, so the factorization never holds the whole difference.
  /// `body` gets the rows closure, valid while it runs.
  static func withDifferenceRows<T>(
    new: UnsafeRawBufferPointer, old: UnsafeRawBufferPointer, dtype: DType, cols: Int,
    _ body: ((Int, Int, UnsafeMutablePointer<Double>) -> Void) throws -> T
  ) rethrows -> T {
    try body { first, count, block in
      let elements = (first * cols)..<(first * cols + count * cols)
      // One pass per block, the two values decoded as FloatConversion.decode does; a loop per
      // 16- and 32-bit dtype, which the compiler vectorizes (this runs once per rank finder pass).
      @inline(__always) func fill<Bits: FixedWidthInteger>(_: Bits.Type, _ value: (Bits) -> Double) {
        let width = Bits.bitWidth / 8
        guard let newBase = new.baseAddress, let oldBase = old.baseAddress else { return }
        precondition(elements.upperBound * width <= min(new.count, old.count))
        let (x, y) = (newBase + elements.lowerBound * width, oldBase + elements.lowerBound * width)
        for k in 0..<elements.count {
          let a = value(Bits(littleEndian: x.loadUnaligned(fromByteOffset: k * width, as: Bits.self)))
          let b = value(Bits(littleEndian: y.loadUnaligned(fromByteOffset: k * width, as: Bits.self)))
          let d = Float(a - b)
          block[k] = a.isFinite && b.isFinite && d.isFinite ? Double(d) : 0
        }
      }
      switch dtype {
      case .bf16: fill(UInt16.self) { Double(Float(bitPattern: UInt32($0) << 16)) }
      case .f16:
        // Double(Float16(bitPattern:)) without the per-element library call: the binary16 fields
        // moved into a binary32 pattern and scaled by 2¹¹² (exact for normals, subnormals and
        // zeros); infinities and NaN (exponent field 31) become NaN, which the fill counts as 0.
        fill(UInt16.self) { bits in
          let scaled = Float(bitPattern: UInt32(bits & 0x8000) << 16 | UInt32(bits & 0x7FFF) << 13) * 0x1p112
          return bits & 0x7C00 == 0x7C00 ? .nan : Double(scaled)
        }
      case .f32: fill(UInt32.self) { Double(Float(bitPattern: $0)) }
      default: fill(UInt64.self) { Double(bitPattern: $0) }
      }
    }
  }

  /// Largest |a − b| over two tensors of the same dtype.
  static func maxAbsDifference(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, dtype: DType, count: Int)
    throws -> Double
  {
    let block = blockElementCount
    let x = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let y = UnsafeMutablePointer<Double>.allocate(capacity: block)
    defer {
      x.deallocate()
      y.deallocate()
    }
    var result = 0.0
    var start = 0
    while start < count {
      let n = min(block, count - start)
      let range = start..<(start + n)
      FloatConversion.decode(a, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: x, count: n))
      FloatConversion.decode(b, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: y, count: n))
      for i in 0..<n { result = max(result, abs(x[i] - y[i])) }
      start += n
    }
    return result
  }
}

extension TensorMath {
  /// ‖W‖_F of a float tensor, accumulated in Float64.
  static func frobenius(_ raw: UnsafeRawBufferPointer, dtype: DType, count: Int) throws -> Double {
    let block = blockElementCount
    let x = UnsafeMutablePointer<Double>.allocate(capacity: block)
    defer { x.deallocate() }
    var sum = 0.0
    var start = 0
    while start < count {
      let n = min(block, count - start)
      let range = start..<(start + n)
      FloatConversion.decode(raw, dtype: dtype, elements: range, into: UnsafeMutableBufferPointer(start: x, count: n))
      for i in 0..<n { sum += x[i] * x[i] }
      start += n
    }
    return sum.squareRoot()
  }
}

extension TensorMath {
  /// `x = round_dtype(Double(x) + difference)`, elementwise, in place.
  static func addDense(_ raw: UnsafeMutableRawBufferPointer, dtype: DType, difference: [Double]) throws {
    let block = blockElementCount
    let scratch = UnsafeMutablePointer<Double>.allocate(capacity: block)
    defer { scratch.deallocate() }
    var start = 0
    while start < difference.count {
      let n = min(block, difference.count - start)
      let buffer = UnsafeMutableBufferPointer(start: scratch, count: n)
      FloatConversion.decode(UnsafeRawBufferPointer(raw), dtype: dtype, elements: start..<(start + n), into: buffer)
      for i in 0..<n { scratch[i] += difference[start + i] }
      FloatConversion.encode(UnsafeBufferPointer(buffer), dtype: dtype, into: raw, elementOffset: start)
      start += n
    }
  }

  /// `a − b` elementwise in Float64.
  static func denseDifference(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, dtype: DType, count: Int)
    -> [Double]
  {
    var x = [Double](repeating: 0, count: count)
    var y = [Double](repeating: 0, count: count)
    x.withUnsafeMutableBufferPointer { FloatConversion.decode(a, dtype: dtype, elements: 0..<count, into: $0) }
    y.withUnsafeMutableBufferPointer { FloatConversion.decode(b, dtype: dtype, elements: 0..<count, into: $0) }
    for i in 0..<count { x[i] -= y[i] }
    return x
  }
}
