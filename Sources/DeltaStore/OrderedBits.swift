/// Maps element bit patterns to signed integers whose order is the numeric order.
///
/// For IEEE-style floats, a negative pattern has its magnitude bits flipped
/// (`bits ^ 0x7FF…` on the sign-extended value), so adjacent floats differ by exactly 1,
/// −0 maps to −1 and +0 to 0, and the map is a bijection on all patterns (NaN and ±inf
/// included). Integers map to their value (unsigned ones offset by −2^(w−1)). Residuals are
/// differences of these integers, modulo 2^w, so every pattern round-trips exactly.
public enum OrderedBits {
  /// The ordered integer of a binary64 pattern.
  @inlinable public static func f64(_ bits: UInt64) -> Int64 {
    let s = Int64(bitPattern: bits)
    return s < 0 ? s ^ Int64.max : s
  }

  /// The binary64 pattern of an ordered integer (inverse of `f64(_:)`).
  @inlinable public static func f64Bits(ordered v: Int64) -> UInt64 {
    UInt64(bitPattern: v < 0 ? v ^ Int64.max : v)
  }

  /// The ordered integer of a binary32 pattern.
  @inlinable public static func f32(_ bits: UInt32) -> Int32 {
    let s = Int32(bitPattern: bits)
    return s < 0 ? s ^ Int32.max : s
  }

  /// The binary32 pattern of an ordered integer (inverse of `f32(_:)`).
  @inlinable public static func f32Bits(ordered v: Int32) -> UInt32 {
    UInt32(bitPattern: v < 0 ? v ^ Int32.max : v)
  }

  /// The ordered integer of a binary16 or bfloat16 pattern (both are sign-magnitude).
  @inlinable public static func f16(_ bits: UInt16) -> Int16 {
    let s = Int16(bitPattern: bits)
    return s < 0 ? s ^ Int16.max : s
  }

  /// The binary16 or bfloat16 pattern of an ordered integer (inverse of `f16(_:)`).
  @inlinable public static func f16Bits(ordered v: Int16) -> UInt16 {
    UInt16(bitPattern: v < 0 ? v ^ Int16.max : v)
  }

  /// The ordered integer of a bfloat16 pattern (same map as `f16(_:)`).
  @inlinable public static func bf16(_ bits: UInt16) -> Int16 { f16(bits) }

  /// The bfloat16 pattern of an ordered integer.
  @inlinable public static func bf16Bits(ordered v: Int16) -> UInt16 { f16Bits(ordered: v) }

  /// Whether `dtype` has an ordered-integer map here: every dtype of 8, 16, 32 or 64 bits except
  /// C64 (two floats per element).
  public static func supports(_ dtype: DType) -> Bool {
    switch dtype {
    case .f4, .f6E2M3, .f6E3M2, .c64: return false
    default: return true
    }
  }

  /// The ordered integer of the `dtype` element whose bits are the low `dtype.bitCount` of
  /// `bits`, sign-extended to 64 bits.
  public static func ordered(_ bits: UInt64, dtype: DType) -> Int64 {
    let w = dtype.bitCount
    precondition(supports(dtype) && w <= 64)
    let shift = UInt64(64 - w)
    // Sign-extend the w-bit pattern.
    var s = Int64(bitPattern: bits << shift) >> Int64(shift)
    switch dtype {
    case .f64, .f32, .f16, .bf16, .f8E4M3, .f8E5M2:
      if s < 0 { s ^= Int64.max >> Int64(shift) }
    case .u8, .u16, .u32, .u64, .bool, .f8E8M0:
      // Unsigned: flip the top bit so 0 maps to −2^(w−1) and order is kept.
      s = Int64(bitPattern: (bits ^ (1 << UInt64(w - 1))) << shift) >> Int64(shift)
    default:
      break
    }
    return s
  }

  /// The `dtype` bit pattern (in the low bits) of an ordered integer, taken modulo 2^w.
  public static func bits(ordered v: Int64, dtype: DType) -> UInt64 {
    let w = dtype.bitCount
    precondition(supports(dtype) && w <= 64)
    let shift = UInt64(64 - w)
    let mask: UInt64 = w == 64 ? .max : (1 << UInt64(w)) - 1
    // Reduce modulo 2^w to the signed w-bit range first.
    let s = Int64(bitPattern: UInt64(bitPattern: v) << shift) >> Int64(shift)
    switch dtype {
    case .f64, .f32, .f16, .bf16, .f8E4M3, .f8E5M2:
      return UInt64(bitPattern: s < 0 ? s ^ (Int64.max >> Int64(shift)) : s) & mask
    case .u8, .u16, .u32, .u64, .bool, .f8E8M0:
      return (UInt64(bitPattern: s) ^ (1 << UInt64(w - 1))) & mask
    default:
      return UInt64(bitPattern: s) & mask
    }
  }
}
