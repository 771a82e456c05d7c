import Apply
import DeltaStore

// The canonical rule is Apply's (Sources/Apply/Canonical/); EditVCS only hands it the dtype's
// conversions, which are DeltaStore's.

extension CanonicalRule.Storage {
  /// `dtype` as the canonical rule sees it: `FloatConversion`'s exact decode to Float64 and its
  /// single rounding from Float64 (nearest, ties to even; NaN payloads kept).
  package init(_ dtype: DType) {
    self.init(
      decode: { raw, elements, values in FloatConversion.decode(raw, dtype: dtype, elements: elements, into: values) },
      encode: { values, raw, offset in FloatConversion.encode(values, dtype: dtype, into: raw, elementOffset: offset) },
      isBinary32: dtype == .f32)
  }
}
