/// Maps element bit patterns to signed integers whose order is the numeric order.
///
/// For IEEE-style floats, a negative pattern has its magnitude bits flipped
/// (`bits ^ 0x7FF…` on the sign-extended value), so adjacent floats differ by exactly 1,
/// −0 maps to −1 and +0 to 0, and the map is a bijection on all patterns (NaN and ±inf
/// included). Integers map to their value (unsigned ones offset by −2^(w−1)). Residuals are
/// differences of these integers, modulo 2^w, so every pattern round-trips exactly.
package enum OrderedBits {
  /// The ordered integer of a binary64 pattern.
  @inlinable package static func f64(_ bits: UInt64) -> Int64 {
    let s = Int64(bitPattern: bits)
    return s < 0 ? s ^ Int64.max : s
  }

  /// The binary64 pattern of an ordered integer (inverse of `f64(_:)`).
  @inlinable package static func f64Bits(ordered v: Int64) -> UInt64 {
    UInt64(bitPattern: v < 0 ? v ^ Int64.max : v)
  }

  /// The ordered integer of a binary32 pattern.
  @inlinable package static func f32(_ bits: UInt32) -> Int32 {
    let s = Int32(bitPattern: bits)
    return s < 0 ? s ^ Int32.max : s
  }

  /// The binary32 pattern of an ordered integer (inverse of `f32(_:)`).
  @inlinable package static func f32Bits(ordered v: Int32) -> UInt32 {
    UInt32(bitPattern: v < 0 ? v ^ Int32.max : v)
  }

  /// The ordered integer of a binary16 or bfloat16 pattern (both are sign-magnitude).
  @inlinable package static func f16(_ bits: UInt16) -> Int16 {
    let s = Int16(bitPattern: bits)
    return s < 0 ? s ^ Int16.max : s
  }

  /// The binary16 or bfloat16 pattern of an ordered integer (inverse of `f16(_:)`).
  @inlinable package static func f16Bits(ordered v: Int16) -> UInt16 {
    UInt16(bitPattern: v < 0 ? v ^ Int16.max : v)
  }

  /// The ordered integer of a bfloat16 pattern (same map as `f16(_:)`).
  @inlinable package static func bf16(_ bits: UInt16) -> Int16 { f16(bits) }

  /// The bfloat16 pattern of an ordered integer.
  @inlinable package static func bf16Bits(ordered v: Int16) -> UInt16 { f16Bits(ordered: v) }

  /// Whether `dtype` has an ordered-integer map here: every dtype of 8, 16, 32 or 64 bits except
  /// C64 (two floats per element).
  package static func supports(_ dtype: DType) -> Bool { encoding(of: dtype) != nil }

  /// How a dtype's patterns map to ordered integers, decided once per tensor so that loops over
  /// elements need no switch on the dtype.
  enum Encoding {
    /// IEEE-style floats: negative patterns have their magnitude bits flipped.
    case signMagnitude
    /// Unsigned integers: the top bit is flipped, so 0 maps to −2^(w−1).
    case offsetBinary
    /// Signed integers: the pattern is the value.
    case twosComplement
  }

  /// The encoding of `dtype`'s elements; `nil` when `supports(dtype)` is false.
  static func encoding(of dtype: DType) -> Encoding? {
    switch dtype {
    case .f4, .f6E2M3, .f6E3M2, .c64: return nil
    case .f64, .f32, .f16, .bf16, .f8E4M3, .f8E5M2: return .signMagnitude
    case .u8, .u16, .u32, .u64, .bool, .f8E8M0: return .offsetBinary
    case .i8, .i16, .i32, .i64: return .twosComplement
    }
  }

  /// The ordered integer of `bits`, as a w-bit two's-complement pattern of the same width.
  ///
  /// Each of the three maps is its own inverse, so this also turns an ordered integer (taken
  /// modulo 2^w) back into its pattern.
  @inline(__always)
  static func map<Word: FixedWidthInteger & UnsignedInteger>(_ bits: Word, _ encoding: Encoding)
    -> Word
  {
    let top = Word(1) &<< (Word.bitWidth &- 1)
    switch encoding {
    case .signMagnitude:
      // All ones shifted right once (the magnitude bits) when the sign is set, else zero.
      let negative = bits &>> (Word.bitWidth &- 1)
      return bits ^ ((0 &- negative) &>> 1)
    case .offsetBinary: return bits ^ top
    case .twosComplement: return bits
    }
  }

  /// The ordered integer of the `dtype` element whose bits are the low `dtype.bitCount` of
  /// `bits`, sign-extended to 64 bits.
  package static func ordered(_ bits: UInt64, dtype: DType) -> Int64 {
    let w = dtype.bitCount
    guard let encoding = encoding(of: dtype), w <= 64 else {
      preconditionFailure("no ordered map for \(dtype)")
    }
    let shift = UInt64(64 - w)
    // Map the pattern in the top w bits of a word, then shift it down with its sign.
    return Int64(bitPattern: map(bits << shift, encoding)) >> Int64(shift)
  }

  /// The `dtype` bit pattern (in the low bits) of an ordered integer, taken modulo 2^w.
  package static func bits(ordered v: Int64, dtype: DType) -> UInt64 {
    let w = dtype.bitCount
    guard let encoding = encoding(of: dtype), w <= 64 else {
      preconditionFailure("no ordered map for \(dtype)")
    }
    let shift = UInt64(64 - w)
    return map(UInt64(bitPattern: v) << shift, encoding) >> shift
  }
}
