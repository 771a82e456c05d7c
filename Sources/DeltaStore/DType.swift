/// An element type of a safetensors tensor, spelled as in the safetensors specification.
///
/// The raw value is the string that appears in a header's `"dtype"` field.
public enum DType: String, Codable, Sendable, CaseIterable {
  /// 64-bit IEEE 754 binary64.
  case f64 = "F64"
  /// 32-bit IEEE 754 binary32.
  case f32 = "F32"
  /// 16-bit IEEE 754 binary16.
  case f16 = "F16"
  /// bfloat16: the top 16 bits of a binary32.
  case bf16 = "BF16"
  /// Signed 64-bit integer.
  case i64 = "I64"
  /// Signed 32-bit integer.
  case i32 = "I32"
  /// Signed 16-bit integer.
  case i16 = "I16"
  /// Signed 8-bit integer.
  case i8 = "I8"
  /// Unsigned 64-bit integer.
  case u64 = "U64"
  /// Unsigned 32-bit integer.
  case u32 = "U32"
  /// Unsigned 16-bit integer.
  case u16 = "U16"
  /// Unsigned 8-bit integer.
  case u8 = "U8"
  /// Boolean stored as one byte.
  case bool = "BOOL"
  /// 8-bit float with 4 exponent and 3 mantissa bits.
  case f8E4M3 = "F8_E4M3"
  /// 8-bit float with 5 exponent and 2 mantissa bits.
  case f8E5M2 = "F8_E5M2"
  /// 8-bit unsigned exponent-only scale (MX formats).
  case f8E8M0 = "F8_E8M0"
  /// 6-bit float with 2 exponent and 3 mantissa bits (packed).
  case f6E2M3 = "F6_E2M3"
  /// 6-bit float with 3 exponent and 2 mantissa bits (packed).
  case f6E3M2 = "F6_E3M2"
  /// 4-bit float (E2M1, packed).
  case f4 = "F4"
  /// Complex number of two binary32 values.
  case c64 = "C64"

  /// The number of bits one element occupies.
  public var bitCount: Int {
    switch self {
    case .f4: return 4
    case .f6E2M3, .f6E3M2: return 6
    case .u8, .i8, .bool, .f8E4M3, .f8E5M2, .f8E8M0: return 8
    case .f16, .bf16, .i16, .u16: return 16
    case .f32, .i32, .u32: return 32
    case .f64, .i64, .u64, .c64: return 64
    }
  }

  /// The number of bytes one element occupies, or `nil` for packed sub-byte types (F4, F6).
  package var byteCount: Int? {
    bitCount % 8 == 0 ? bitCount / 8 : nil
  }

  /// Whether mvc can edit tensors of this type: F64, F32, F16 and BF16.
  public var isEditableFloat: Bool {
    switch self {
    case .f64, .f32, .f16, .bf16: return true
    default: return false
    }
  }
}

/// One tensor as described by a safetensors header.
public struct TensorInfo: Sendable, Equatable {
  /// The tensor's key in the header.
  public var name: String
  /// The element type.
  public var dtype: DType
  /// The dimensions, outermost first (row-major).
  public var shape: [Int]
  /// The tensor's bytes, relative to the start of the data section (the header's `data_offsets`).
  public var dataOffsets: Range<Int>

  /// Creates a tensor description; the caller guarantees `dataOffsets.count` matches the shape.
  package init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.dataOffsets = dataOffsets
  }

  /// The product of the shape (1 for a scalar).
  public var elementCount: Int { shape.reduce(1, *) }

  /// The number of bytes of tensor data.
  public var byteCount: Int { dataOffsets.count }
}
