/// Converts between raw little-endian float tensors and `Double` / `Float` buffers.
///
/// Encoding rounds once, directly from the `Double`, to nearest-even; subnormals are exact,
/// overflow gives ±infinity and NaN stays a quiet NaN (payload's top bits kept). BF16 is
/// rounded by hand from the `Double`'s bits: going through `Float` would round twice.
public enum FloatConversion {
  /// Decodes `elements` of the F64/F32/F16/BF16 tensor `raw` into `destination`.
  ///
  /// `destination.count` must equal `elements.count`; `raw` must hold the range.
  package static func decode(
    _ raw: UnsafeRawBufferPointer, dtype: DType, elements: Range<Int>,
    into destination: UnsafeMutableBufferPointer<Double>
  ) {
    precondition(dtype.isEditableFloat, "not a float dtype")
    let width = dtype.bitCount / 8
    precondition(destination.count == elements.count)
    precondition(elements.lowerBound >= 0 && elements.upperBound * width <= raw.count)
    let offset = elements.lowerBound * width
    // The common dtype gets a loop of its own (the compiler vectorizes it); the rest go
    // through the general per-element path.
    if dtype == .f32, let base = raw.baseAddress {
      for i in 0..<elements.count {
        let bits = UInt32(littleEndian: (base + offset + 4 * i).loadUnaligned(as: UInt32.self))
        destination[i] = Double(Float(bitPattern: bits))
      }
      return
    }
    if dtype == .bf16, let base = raw.baseAddress {
      for i in 0..<elements.count {
        let bits = UInt16(littleEndian: (base + offset + 2 * i).loadUnaligned(as: UInt16.self))
        destination[i] = Double(Float(bitPattern: UInt32(bits) << 16))
      }
      return
    }
    if dtype == .f16, let base = raw.baseAddress {
      for i in 0..<elements.count {
        let bits = UInt16(littleEndian: (base + offset + 2 * i).loadUnaligned(as: UInt16.self))
        destination[i] = bits & 0x7C00 == 0x7C00 ? Double(Float16(bitPattern: bits)) : finiteF16(bits)
      }
      return
    }
    var position = offset
    for i in 0..<elements.count {
      destination[i] = decodeOne(raw, byteOffset: position, dtype: dtype)
      position += width
    }
  }

  /// Decodes `elements` of the F64/F32/F16/BF16 tensor `raw` into `destination` as `Float`.
  ///
  /// F64 values are rounded once to `Float` (nearest-even); the others convert exactly.
  public static func decode(
    _ raw: UnsafeRawBufferPointer, dtype: DType, elements: Range<Int>,
    into destination: UnsafeMutableBufferPointer<Float>
  ) {
    precondition(dtype.isEditableFloat, "not a float dtype")
    let width = dtype.bitCount / 8
    precondition(destination.count == elements.count)
    precondition(elements.lowerBound >= 0 && elements.upperBound * width <= raw.count)
    var offset = elements.lowerBound * width
    for i in 0..<elements.count {
      switch dtype {
      case .f32:
        destination[i] = Float(
          bitPattern: UInt32(
            littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
      case .bf16:
        let b = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        destination[i] = Float(bitPattern: UInt32(b) << 16)
      default:
        destination[i] = Float(decodeOne(raw, byteOffset: offset, dtype: dtype))
      }
      offset += width
    }
  }

  /// A finite binary16 value (exponent field below 31) without the library's conversion call: its
  /// fields moved into a binary32 pattern and scaled by 2¹¹², exact for normals, subnormals and
  /// zeros (Inf and NaN keep `Double(Float16(bitPattern:))`, which keeps their payload).
  @inline(__always)
  static func finiteF16(_ bits: UInt16) -> Double {
    Double(Float(bitPattern: UInt32(bits & 0x8000) << 16 | UInt32(bits & 0x7FFF) << 13) * 0x1p112)
  }

  /// Decodes one element at `byteOffset`.
  @inline(__always)
  static func decodeOne(_ raw: UnsafeRawBufferPointer, byteOffset: Int, dtype: DType) -> Double {
    switch dtype {
    case .f64:
      return Double(
        bitPattern: UInt64(
          littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset, as: UInt64.self)))
    case .f32:
      return Double(
        Float(
          bitPattern: UInt32(
            littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset, as: UInt32.self))))
    case .f16:
      return Double(
        Float16(
          bitPattern: UInt16(
            littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset, as: UInt16.self))))
    case .bf16:
      let b = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: byteOffset, as: UInt16.self))
      return Double(Float(bitPattern: UInt32(b) << 16))
    default:
      preconditionFailure("not a float dtype")
    }
  }

  /// Encodes `values` as F64/F32/F16/BF16 into `raw`, starting at element `elementOffset`.
  ///
  /// Each value is rounded once to nearest-even from the `Double`.
  public static func encode(
    _ values: UnsafeBufferPointer<Double>, dtype: DType, into raw: UnsafeMutableRawBufferPointer,
    elementOffset: Int = 0
  ) {
    precondition(dtype.isEditableFloat, "not a float dtype")
    let width = dtype.bitCount / 8
    precondition(elementOffset >= 0 && (elementOffset + values.count) * width <= raw.count)
    var offset = elementOffset * width
    if dtype == .f32, let base = raw.baseAddress {
      // For finite values the hardware conversion is IEEE's single rounding to nearest-even,
      // the same bits `f32Bits` computes; NaN payloads and the rest take the portable path.
      for (i, v) in values.enumerated() {
        let bits = v.isFinite ? Float(v).bitPattern : f32Bits(v)
        (base + offset + 4 * i).storeBytes(of: bits.littleEndian, as: UInt32.self)
      }
      return
    }
    if dtype == .bf16, let base = raw.baseAddress {
      // The rounding inlined with its constant field widths: the generic call per element was
      // two thirds of a one-tensor `commit --delta` of a bf16 model.
      for (i, v) in values.enumerated() {
        (base + offset + 2 * i).storeBytes(of: bf16BitsNormal(v).littleEndian, as: UInt16.self)
      }
      return
    }
    if dtype == .f16, let base = raw.baseAddress {
      // As for BF16: the generic rounding per element was most of a full-model F16 commit's
      // reconstruction (0.46 of 0.47 CPU-s on a 4096×14336 tensor).
      for (i, v) in values.enumerated() {
        (base + offset + 2 * i).storeBytes(of: f16BitsNormal(v).littleEndian, as: UInt16.self)
      }
      return
    }
    for v in values {
      switch dtype {
      case .f64:
        raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: offset, as: UInt64.self)
      case .f32: raw.storeBytes(of: f32Bits(v).littleEndian, toByteOffset: offset, as: UInt32.self)
      case .f16: raw.storeBytes(of: f16Bits(v).littleEndian, toByteOffset: offset, as: UInt16.self)
      case .bf16:
        raw.storeBytes(of: bf16Bits(v).littleEndian, toByteOffset: offset, as: UInt16.self)
      default: preconditionFailure("not a float dtype")
      }
      offset += width
    }
  }

  /// The binary32 bit pattern nearest to `x` (ties to even).
  package static func f32Bits(_ x: Double) -> UInt32 {
    UInt32(truncatingIfNeeded: narrow(x, exponentBitCount: 8, fractionBitCount: 23))
  }

  /// The binary16 bit pattern nearest to `x` (ties to even).
  package static func f16Bits(_ x: Double) -> UInt16 {
    UInt16(truncatingIfNeeded: narrow(x, exponentBitCount: 5, fractionBitCount: 10))
  }

  /// `bf16Bits(x)` by ``roundedInNormalRange(_:fractionBitCount:bias:largestField:otherwise:)``.
  @inline(__always)
  package static func bf16BitsNormal(_ x: Double) -> UInt16 {
    roundedInNormalRange(x, fractionBitCount: 7, bias: 127, largestField: 254, otherwise: bf16Bits)
  }

  /// `f16Bits(x)` by ``roundedInNormalRange(_:fractionBitCount:bias:largestField:otherwise:)``.
  @inline(__always)
  package static func f16BitsNormal(_ x: Double) -> UInt16 {
    roundedInNormalRange(x, fractionBitCount: 10, bias: 15, largestField: 30, otherwise: f16Bits)
  }

  /// The 16-bit pattern nearest to `x` (ties to even) in a format of `fractionBitCount` fraction
  /// bits and exponent `bias`, with the common case (a result in the format's normal range, exponent
  /// fields 1…`largestField`) rounded without branches: the `Double`'s exponent and fraction, as
  /// one integer, get half an ulp of the target (less one, plus the kept lowest bit: ties to even)
  /// and are cut to `fractionBitCount` bits; a carry runs into the exponent as it should (up to
  /// infinity). Other values (zeros, subnormal results, Inf and NaN) take `otherwise`. Inlined with
  /// constant arguments, it is one branch-free path per format (the encode loops' hot path).
  @inline(__always)
  private static func roundedInNormalRange(
    _ x: Double, fractionBitCount m: Int, bias: Int, largestField: Int, otherwise: (Double) -> UInt16
  ) -> UInt16 {
    let bits = x.bitPattern
    let exponentField = Int((bits >> 52) & 0x7FF)
    // The format's exponent fields 1…largestField are binary64 fields rebias + 1…rebias + largestField.
    let rebias = 1023 - bias
    guard exponentField > rebias && exponentField <= rebias + largestField else { return otherwise(x) }
    let shift = UInt64(52 - m)
    var magnitude = bits & 0x7FFF_FFFF_FFFF_FFFF
    magnitude += (1 << (shift - 1)) - 1 + ((magnitude >> shift) & 1)
    let sign = UInt16(truncatingIfNeeded: bits >> 48) & 0x8000
    return sign | UInt16(truncatingIfNeeded: (magnitude >> shift) - (UInt64(rebias) << UInt64(m)))
  }

  /// The bfloat16 bit pattern nearest to `x` (ties to even), rounded once from the `Double`.
  @inline(__always)
  package static func bf16Bits(_ x: Double) -> UInt16 {
    UInt16(truncatingIfNeeded: narrow(x, exponentBitCount: 8, fractionBitCount: 7))
  }

  /// Rounds `x` to an IEEE-style binary format with the given field widths, once, to nearest-even.
  ///
  /// - Returns: The bit pattern in the low `1 + e + m` bits.
  @inline(__always)
  static func narrow(_ x: Double, exponentBitCount e: Int, fractionBitCount m: Int) -> UInt64 {
    let bits = x.bitPattern
    let sign = (bits >> 63) << UInt64(e + m)
    let exponentField = Int((bits >> 52) & 0x7FF)
    let fraction = bits & ((1 << 52) - 1)
    let maxExponent = UInt64((1 << e) - 1)
    if exponentField == 0x7FF {
      if fraction == 0 { return sign | maxExponent << UInt64(m) }  // ±infinity
      // NaN: keep the payload's top bits and set the quiet bit.
      return sign | maxExponent << UInt64(m) | fraction >> UInt64(52 - m) | 1 << UInt64(m - 1)
    }
    // Zero and binary64 subnormals (below 2^-1022, far under half the smallest subnormal of
    // every narrower format) round to signed zero.
    if exponentField == 0 { return sign }
    let bias = (1 << (e - 1)) - 1
    let significand = fraction | (1 << 52)
    let targetExponent = exponentField - 1023 + bias
    if targetExponent >= Int(maxExponent) { return sign | maxExponent << UInt64(m) }
    // Normal targets keep m fraction bits; subnormal targets lose one more bit per step below 1.
    let shift = 52 - m + (targetExponent >= 1 ? 0 : 1 - targetExponent)
    if shift > 53 { return sign }  // below half the smallest subnormal
    let kept = significand >> UInt64(shift)
    let remainder = significand & ((1 << UInt64(shift)) - 1)
    let half: UInt64 = 1 << UInt64(shift - 1)
    var result: UInt64
    if targetExponent >= 1 {
      result = UInt64(targetExponent) << UInt64(m) | (kept & ((1 << UInt64(m)) - 1))
    } else {
      result = kept
    }
    // A carry out of the fraction bumps the exponent, possibly to infinity: both correct.
    if remainder > half || (remainder == half && kept & 1 == 1) { result += 1 }
    return sign | result
  }
}
