import Foundation

// Fixture builders for end-to-end tests: half-precision tensors, an "external editor" that
// rewrites a safetensors file with low-rank updates (as EasyEdit or ROME would), and sharded
// model folders. Everything here is written independently of DeltaStore.

// MARK: Half-precision conversion (round to nearest, ties to even; NaN stays NaN)

/// Float32 → bfloat16 bits, round to nearest even; NaN keeps a quiet NaN with the sign.
public func bf16Bits(_ value: Float) -> UInt16 {
  let bits = value.bitPattern
  if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
  let lsb = (bits >> 16) & 1
  let rounded = bits &+ 0x7FFF &+ lsb
  return UInt16(truncatingIfNeeded: rounded >> 16)
}

public func floatFromBF16(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

/// Float32 → IEEE binary16 bits, round to nearest even, with subnormals, overflow to ±Inf.
public func f16Bits(_ value: Float) -> UInt16 {
  let bits = value.bitPattern
  let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
  let exponent = Int((bits >> 23) & 0xFF)
  let mantissa = bits & 0x7F_FFFF
  if exponent == 0xFF {
    return sign | 0x7C00 | (mantissa != 0 ? 0x0200 | UInt16(truncatingIfNeeded: mantissa >> 13) : 0)
  }
  let e = exponent - 127 + 15
  if e >= 0x1F { return sign | 0x7C00 }
  if e <= 0 {
    // Subnormal (or zero): shift the full significand (with the implicit bit) right.
    if e < -10 { return sign }
    let significand = mantissa | 0x80_0000
    let shift = UInt32(14 - e)
    var half = significand >> shift
    let remainder = significand & ((1 << shift) - 1)
    let halfway = UInt32(1) << (shift - 1)
    if remainder > halfway || (remainder == halfway && (half & 1) == 1) { half += 1 }
    return sign | UInt16(truncatingIfNeeded: half)
  }
  var half = UInt32(e) << 10 | (mantissa >> 13)
  let remainder = mantissa & 0x1FFF
  if remainder > 0x1000 || (remainder == 0x1000 && (half & 1) == 1) { half += 1 }  // may carry into Inf: correct
  return sign | UInt16(truncatingIfNeeded: half)
}

public func floatFromF16(_ bits: UInt16) -> Float {
  let sign = UInt32(bits & 0x8000) << 16
  let exponent = Int((bits >> 10) & 0x1F)
  let mantissa = UInt32(bits & 0x3FF)
  if exponent == 0 {
    let magnitude = Float(mantissa) * 0x1p-24
    return sign != 0 ? -magnitude : magnitude
  }
  if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
  return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}

extension FixtureTensor {
  /// A tensor of `dtype` ("F32", "BF16" or "F16") holding `floats` rounded to nearest even.
  public init(name: String, dtype: String, shape: [Int], floats: [Float]) {
    precondition(shape.reduce(1, *) == floats.count)
    self.init(name: name, dtype: dtype, shape: shape, bytes: encodeFloats(floats, dtype: dtype))
  }

  /// The values as Float32, for F32/BF16/F16 tensors.
  public var decodedFloats: [Float] { decodeFloats(bytes, dtype: dtype) }

  public var elementCount: Int { shape.reduce(1, *) }
}

public func encodeFloats(_ floats: [Float], dtype: String) -> [UInt8] {
  var out: [UInt8] = []
  switch dtype {
  case "F32":
    out.reserveCapacity(floats.count * 4)
    for x in floats { withUnsafeBytes(of: x.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
  case "BF16", "F16":
    out.reserveCapacity(floats.count * 2)
    for x in floats {
      let bits = dtype == "BF16" ? bf16Bits(x) : f16Bits(x)
      withUnsafeBytes(of: bits.littleEndian) { out.append(contentsOf: $0) }
    }
  default:
    preconditionFailure("encodeFloats: unsupported dtype \(dtype)")
  }
  return out
}

public func decodeFloats(_ bytes: [UInt8], dtype: String) -> [Float] {
  switch dtype {
  case "F32":
    return stride(from: 0, to: bytes.count, by: 4).map { i in
      Float(
        bitPattern: UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16
          | UInt32(bytes[i + 3]) << 24)
    }
  case "BF16":
    return stride(from: 0, to: bytes.count, by: 2).map { floatFromBF16(UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
  case "F16":
    return stride(from: 0, to: bytes.count, by: 2).map { floatFromF16(UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
  default:
    preconditionFailure("decodeFloats: unsupported dtype \(dtype)")
  }
}

/// `transformerFixture` with every tensor stored as `dtype` (values rounded from Float32).
public func transformerFixture(
  blocks: Int, hidden: Int, intermediate: Int, seed: UInt64, dtype: String
) -> [FixtureTensor] {
  transformerFixture(blocks: blocks, hidden: hidden, intermediate: intermediate, seed: seed).map {
    dtype == "F32" ? $0 : FixtureTensor(name: $0.name, dtype: dtype, shape: $0.shape, floats: $0.floats)
  }
}

// MARK: Reading a safetensors file back (test-side parser)

/// Parses a safetensors file into tensors in layout (offset) order, plus `__metadata__`.
/// A second, deliberately simple implementation: trusts the file (fixtures only).
public func readSafetensorsFixture(_ url: URL) throws -> (tensors: [FixtureTensor], metadata: [String: String]?) {
  let data = [UInt8](try Data(contentsOf: url))
  guard data.count >= 8 else { throw FixtureError("'\(url.path)' is shorter than 8 bytes") }
  var n = 0
  for i in 0..<8 { n |= Int(data[i]) << (8 * i) }
  guard 8 + n <= data.count,
    let object = try JSONSerialization.jsonObject(with: Data(data[8..<(8 + n)])) as? [String: Any]
  else { throw FixtureError("'\(url.path)': bad header") }
  var metadata: [String: String]?
  var entries: [(begin: Int, tensor: FixtureTensor)] = []
  for (key, value) in object {
    if key == "__metadata__" {
      metadata = value as? [String: String]
      continue
    }
    guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
      let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
    else { throw FixtureError("'\(url.path)': bad entry '\(key)'") }
    let bytes = Array(data[(8 + n + offsets[0])..<(8 + n + offsets[1])])
    entries.append((offsets[0], FixtureTensor(name: key, dtype: dtype, shape: shape, bytes: bytes)))
  }
  return (entries.sorted { $0.begin < $1.begin }.map(\.tensor), metadata)
}

public struct FixtureError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

// MARK: The "external editor"

/// What `LowRankEditor` did to one tensor: `W += Σ_k u_k v_kᵀ`, `u` rows×rank and `v`
/// cols×rank, both row-major.
public struct AppliedEdit {
  public var tensor: String
  public var rank: Int
  public var u: [Float]
  public var v: [Float]
}

/// Rewrites a safetensors file the way an editing tool does: loads it, adds a low-rank
/// update in Float32 to chosen tensors, rounds back to each tensor's dtype and saves the
/// whole file again (same header, same tensor order).
public enum LowRankEditor {
  /// Applies a random rank-`rank` update of relative size `scale` to `tensor` in the file at `url`.
  @discardableResult
  public static func edit(
    _ url: URL, tensor: String, rank: Int, rng: inout SplitMix64, scale: Float = 0.01
  ) throws -> AppliedEdit {
    var (tensors, metadata) = try readSafetensorsFixture(url)
    guard let index = tensors.firstIndex(where: { $0.name == tensor }) else {
      throw FixtureError("'\(url.path)' has no tensor '\(tensor)'")
    }
    let t = tensors[index]
    let rows = t.shape.count >= 2 ? t.shape[0] : 1
    let cols = t.elementCount / max(rows, 1)
    let u = rng.gaussianArray(count: rows * rank, scale: scale)
    let v = rng.gaussianArray(count: cols * rank, scale: 1)
    var w = t.decodedFloats
    for i in 0..<rows {
      for j in 0..<cols {
        var sum: Float = 0
        for k in 0..<rank { sum += u[i * rank + k] * v[j * rank + k] }
        w[i * cols + j] += sum
      }
    }
    tensors[index] = FixtureTensor(name: t.name, dtype: t.dtype, shape: t.shape, floats: w)
    try writeSafetensors(tensors, to: url, metadata: metadata)
    return AppliedEdit(tensor: tensor, rank: rank, u: u, v: v)
  }

  /// Names of the tensors in the file (layout order).
  public static func tensorNames(_ url: URL) throws -> [String] {
    try readSafetensorsFixture(url).tensors.map(\.name)
  }
}

// MARK: Sharded models

/// Writes `tensors` into `shardCount` files `model-0000i-of-0000N.safetensors` inside `folder`
/// (round-robin by tensor) plus `model.safetensors.index.json` as transformers writes it.
/// - Returns: the weight map (tensor → shard file name).
@discardableResult
public func writeShardedModel(_ tensors: [FixtureTensor], shardCount: Int, to folder: URL) throws -> [String: String] {
  try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
  var groups = [[FixtureTensor]](repeating: [], count: shardCount)
  for (i, t) in tensors.enumerated() { groups[i % shardCount].append(t) }
  var weightMap: [String: String] = [:]
  var totalSize = 0
  for (i, group) in groups.enumerated() {
    let file = String(format: "model-%05d-of-%05d.safetensors", i + 1, shardCount)
    try writeSafetensors(group, to: folder.appendingPathComponent(file))
    for t in group {
      weightMap[t.name] = file
      totalSize += t.bytes.count
    }
  }
  try writeShardIndex(weightMap: weightMap, totalSize: totalSize, to: folder)
  return weightMap
}

/// `{"metadata": {"total_size": N}, "weight_map": {...}}`, keys sorted, two-space indent.
public func writeShardIndex(weightMap: [String: String], totalSize: Int, to folder: URL) throws {
  let entries = weightMap.sorted { $0.key < $1.key }.map { "    \"\($0.key)\": \"\($0.value)\"" }
  let text = """
    {
      "metadata": {
        "total_size": \(totalSize)
      },
      "weight_map": {
    \(entries.joined(separator: ",\n"))
      }
    }

    """
  try Data(text.utf8).write(to: folder.appendingPathComponent("model.safetensors.index.json"))
}

/// The shard file holding `tensor`, read from the folder's index.
public func shardFile(of tensor: String, in folder: URL) throws -> URL {
  let data = try Data(contentsOf: folder.appendingPathComponent("model.safetensors.index.json"))
  guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
    let map = object["weight_map"] as? [String: String], let file = map[tensor]
  else { throw FixtureError("no shard for '\(tensor)' in '\(folder.path)'") }
  return folder.appendingPathComponent(file)
}
