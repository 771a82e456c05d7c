/// The shape of a row-major matrix: `rows × cols`, element `(i, j)` at `i * cols + j` when dense.
///
/// safetensors stores tensors row-major ("order C"); every matrix Apply sees is row-major and
/// every CBLAS call passes `CblasRowMajor` explicitly.
package struct MatrixShape: Hashable, Sendable, CustomStringConvertible {
  /// Number of rows (the slow index).
  package var rows: Int
  /// Number of columns (the fast index).
  package var cols: Int

  /// A shape of `rows × cols`; both must be non-negative.
  package init(rows: Int, cols: Int) {
    precondition(rows >= 0 && cols >= 0, "negative matrix dimension")
    self.rows = rows
    self.cols = cols
  }

  /// `rows * cols`.
  package var elementCount: Int { rows * cols }

  /// Whether both dimensions fit the 32-bit `int` that OpenBLAS's CBLAS and LAPACKE take
  /// (OpenBLAS indexes internally with 64-bit `BLASLONG`, so only the dimensions matter).
  package var fitsBLAS: Bool { rows <= Int(Int32.max) && cols <= Int(Int32.max) }

  /// `"[rows, cols]"`, as shapes are printed in safetensors headers.
  package var description: String { "[\(rows), \(cols)]" }
}

/// Converts a dimension to the `Int32` OpenBLAS/LAPACKE take. Callers check `fitsBLAS` (and throw)
/// before reaching here, so an overflow is a programmer error.
@inline(__always)
func blasInt(_ value: Int) -> Int32 {
  precondition(value >= 0 && value <= Int(Int32.max), "dimension \(value) does not fit Int32")
  return Int32(truncatingIfNeeded: value)
}

/// Returns the index of the first NaN/Inf among `count` Float32 values, or nil when all are finite.
func firstNonFinite(_ p: UnsafePointer<Float>, count: Int) -> Int? {
  // Exponent all ones ⇔ NaN or Inf; checked on bits so the loop vectorizes.
  let bits = UnsafeRawPointer(p).assumingMemoryBound(to: UInt32.self)
  var chunk = 0
  while chunk < count {
    let end = min(count, chunk + 4096)
    var any: UInt32 = 0
    for k in chunk..<end where bits[k] & 0x7F80_0000 == 0x7F80_0000 { any = 1 }
    if any != 0 {
      for k in chunk..<end where !p[k].isFinite { return k }
    }
    chunk = end
  }
  return nil
}
