import DeltaStore
import Foundation

/// Errors of the demo editor, one line each (git's wording: lowercase, subject first).
struct EditorError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}

/// Reads and writes models the way torch/safetensors does: whole files, written to a temporary
/// file beside the target and renamed over it.
enum ModelIO {
  /// The elements of `tensor` widened to Float32 (exact for F32/F16/BF16).
  static func floats(_ file: SafetensorsFile, _ tensor: TensorInfo) throws -> [Float] {
    guard tensor.dtype.isEditableFloat else {
      throw EditorError("\(tensor.name): dtype \(tensor.dtype.rawValue) is not a float type")
    }
    let raw = try file.read(tensor)
    return raw.withUnsafeBytes { raw in
      [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, count in
        FloatConversion.decode(
          raw, dtype: tensor.dtype, elements: 0..<tensor.elementCount, into: buffer)
        count = tensor.elementCount
      }
    }
  }

  /// `values` encoded in `dtype` (rounded once, to nearest-even).
  static func encode(_ values: [Float], dtype: DType) -> [UInt8] {
    let width = dtype.bitCount / 8
    var out = [UInt8](repeating: 0, count: values.count * width)
    out.withUnsafeMutableBytes { raw in
      if dtype == .f32 {
        for (i, v) in values.enumerated() {
          raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: i * 4, as: UInt32.self)
        }
        return
      }
      // Float → Double is exact, so encoding from the Double rounds once.
      let chunk = 1 << 16
      var start = 0
      var scratch = [Double](repeating: 0, count: chunk)
      while start < values.count {
        let n = min(chunk, values.count - start)
        for i in 0..<n { scratch[i] = Double(values[start + i]) }
        scratch.withUnsafeBufferPointer { s in
          FloatConversion.encode(
            UnsafeBufferPointer(rebasing: s[0..<n]), dtype: dtype, into: raw, elementOffset: start)
        }
        start += n
      }
    }
    return out
  }

  /// Writes a new model: the header, then each tensor's bytes from `produce`, in order.
  static func create(
    path: String, tensors: [(name: String, dtype: DType, shape: [Int])],
    metadata: [String: String]?, produce: (Int) -> [UInt8]
  ) throws {
    let header = SafetensorsHeader.serialize(tensors: tensors, metadata: metadata)
    let layout = SafetensorsHeader.layout(tensors: tensors)
    let total = header.count + (layout.last?.dataOffsets.upperBound ?? 0)
    let writer = try AtomicFileWriter(path: path, byteCount: total)
    try header.withUnsafeBytes { try writer.write($0, at: 0) }
    for (index, info) in layout.enumerated() {
      let bytes = produce(index)
      precondition(bytes.count == info.byteCount)
      try bytes.withUnsafeBytes {
        try writer.write($0, at: header.count + info.dataOffsets.lowerBound)
      }
    }
    try writer.commit()
  }

  /// Rewrites `path` with some tensors replaced: the original header bytes, tensor order and
  /// every other tensor's bytes are kept; the result is renamed over the file.
  static func rewrite(path: String, replacing replacements: [String: [UInt8]]) throws {
    let file = try SafetensorsFile(path: path, followSymlink: true)
    for name in replacements.keys where file.tensor(named: name) == nil {
      throw EditorError("\(path): no tensor named '\(name)'")
    }
    let writer = try AtomicFileWriter(path: path, byteCount: file.file.byteCount)
    try file.headerBytes.withUnsafeBytes { try writer.write($0, at: 0) }
    for tensor in file.tensors {
      let offset = file.dataStart + tensor.dataOffsets.lowerBound
      if let bytes = replacements[tensor.name] {
        precondition(bytes.count == tensor.byteCount)
        try bytes.withUnsafeBytes { try writer.write($0, at: offset) }
      } else {
        try file.read(tensor).withUnsafeBytes { try writer.write($0, at: offset) }
      }
    }
    try writer.commit()
  }

  /// The Frobenius norm of a Float32 buffer, accumulated in Float64.
  static func norm(_ values: [Float]) -> Double {
    var s = 0.0
    for v in values { s += Double(v) * Double(v) }
    return s.squareRoot()
  }

  /// The Frobenius norm of a Float64 buffer.
  static func norm(_ values: [Double]) -> Double {
    var s = 0.0
    for v in values { s += v * v }
    return s.squareRoot()
  }

  /// Adds `left·rightᵀ` (storage orientation: `left` rows×r, `right` cols×r, row-major Float64)
  /// to the row-major `w` in Float32 arithmetic, as a PyTorch editor does (`W += u @ v.T`).
  static func addLowRank(
    to w: inout [Float], rows: Int, cols: Int, left: [Double], right: [Double], rank: Int
  ) {
    let l = left.map(Float.init)
    let r = right.map(Float.init)
    w.withUnsafeMutableBufferPointer { w in
      for i in 0..<rows {
        for j in 0..<cols {
          var s: Float = 0
          for a in 0..<rank { s += l[i * rank + a] * r[j * rank + a] }
          w[i * cols + j] += s
        }
      }
    }
  }
}
