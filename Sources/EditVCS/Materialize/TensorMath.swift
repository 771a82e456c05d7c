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
    let block = blockElementCount
    let a = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let b = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let d = UnsafeMutablePointer<Float>.allocate(capacity: block)
    defer {
      a.deallocate()
      b.deallocate()
      d.deallocate()
    }
    // ulp of the dtype relative to Float32's: F32 ×1, BF16 ×2¹⁶, F16 ×2¹³, F64 ×2⁻²⁹.
    let ulpScale: Double
    switch dtype {
    case .bf16: ulpScale = 65536
    case .f16: ulpScale = 8192
    case .f64: ulpScale = 0x1p-29
    default: ulpScale = 1
    }
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
