import Foundation

/// One tensor of a hand-built safetensors fixture: raw little-endian bytes plus the header fields.
public struct FixtureTensor {
  public var name: String
  public var dtype: String
  public var shape: [Int]
  public var bytes: [UInt8]

  public init(name: String, dtype: String, shape: [Int], bytes: [UInt8]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.bytes = bytes
  }

  public init(name: String, shape: [Int], floats: [Float]) {
    precondition(shape.reduce(1, *) == floats.count)
    self.init(
      name: name, dtype: "F32", shape: shape,
      bytes: floats.withUnsafeBytes { Array($0) })
  }

  public var floats: [Float] {
    precondition(dtype == "F32")
    return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
  }
}

/// Writes a safetensors file independently of DeltaStore, so tests check the library
/// against a second implementation of the format rather than against itself.
/// Tensors are laid out in the order given; the header lists them in that order too.
public func safetensorsBytes(_ tensors: [FixtureTensor], metadata: [String: String]? = nil) -> [UInt8] {
  var entries: [String] = []
  if let metadata {
    let fields = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }
    entries.append("\"__metadata__\":{\(fields.joined(separator: ","))}")
  }
  var offset = 0
  for t in tensors {
    let shape = t.shape.map(String.init).joined(separator: ",")
    entries.append(
      "\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.bytes.count)]}"
    )
    offset += t.bytes.count
  }
  var header = Array("{\(entries.joined(separator: ","))}".utf8)
  while header.count % 8 != 0 { header.append(0x20) }  // padded with spaces, as the reference writer does
  var out: [UInt8] = []
  withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
  out += header
  for t in tensors { out += t.bytes }
  return out
}

public func writeSafetensors(_ tensors: [FixtureTensor], to url: URL, metadata: [String: String]? = nil)
  throws
{
  try Data(safetensorsBytes(tensors, metadata: metadata)).write(to: url)
}

/// A transformer-shaped fp32 model: `blocks` MLP up/down projections plus a LayerNorm vector each.
public func transformerFixture(
  blocks: Int, hidden: Int, intermediate: Int, seed: UInt64
) -> [FixtureTensor] {
  var rng = SplitMix64(seed: seed)
  var tensors: [FixtureTensor] = []
  for b in 0..<blocks {
    tensors.append(
      FixtureTensor(
        name: "model.layers.\(b).mlp.up_proj.weight", shape: [intermediate, hidden],
        floats: rng.gaussianArray(count: intermediate * hidden, scale: 0.02)))
    tensors.append(
      FixtureTensor(
        name: "model.layers.\(b).mlp.down_proj.weight", shape: [hidden, intermediate],
        floats: rng.gaussianArray(count: hidden * intermediate, scale: 0.02)))
    tensors.append(
      FixtureTensor(
        name: "model.layers.\(b).post_attention_layernorm.weight", shape: [hidden],
        floats: [Float](repeating: 1, count: hidden)))
  }
  return tensors
}
