import Apply
import ArgumentParser
import DeltaStore
import Foundation

enum ShapeSet: String, ExpressibleByArgument, CaseIterable {
  /// Llama-style blocks sized by --blocks/--hidden/--intermediate (the default).
  case llama
  /// GPT-2 XL's edited modules: 48 × `transformer.h.{i}.mlp.c_proj.weight`, stored in×out [6400, 1600].
  case gpt2xl
  /// 8 blocks of up [4096, 1024] and down [1024, 4096] (256 MiB in F32), plus layernorms.
  case bench256
}

enum ModelDType: String, ExpressibleByArgument, CaseIterable {
  case f32, bf16, f16
  var dtype: DType {
    switch self {
    case .f32: return .f32
    case .bf16: return .bf16
    case .f16: return .f16
    }
  }
}

struct Generate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a deterministic transformer-shaped model (values N(0, 0.02)).")

  @Argument(help: "The safetensors file to write.") var output: String
  @Option(help: "Number of blocks.") var blocks = 4
  @Option(help: "Hidden size (d_out of down_proj).") var hidden = 256
  @Option(help: "Intermediate size (d_in of down_proj).") var intermediate = 1024
  @Option(help: "Element type: f32, bf16 or f16.") var dtype: ModelDType = .f32
  @Option(help: "Seed of the SplitMix64 stream.") var seed: UInt64 = 0
  @Option(help: "llama (default), gpt2xl or bench256.") var shapeSet: ShapeSet = .llama

  func run() throws {
    var tensors: [(name: String, dtype: DType, shape: [Int])] = []
    let t = dtype.dtype
    switch shapeSet {
    case .llama, .bench256:
      let (b, h, m) = shapeSet == .bench256 ? (8, 1024, 4096) : (blocks, hidden, intermediate)
      guard b > 0, h > 0, m > 0 else { throw ValidationError("sizes must be positive") }
      if shapeSet == .llama { tensors.append(("model.embed_tokens.weight", t, [512, h])) }
      for i in 0..<b {
        tensors.append(("model.layers.\(i).mlp.down_proj.weight", t, [h, m]))
        tensors.append(("model.layers.\(i).mlp.up_proj.weight", t, [m, h]))
        tensors.append(("model.layers.\(i).post_attention_layernorm.weight", t, [h]))
      }
    case .gpt2xl:
      for i in 0..<48 { tensors.append(("transformer.h.\(i).mlp.c_proj.weight", t, [6400, 1600])) }
    }
    let specs = tensors
    try ModelIO.create(path: output, tensors: specs, metadata: ["format": "pt"]) { index in
      var rng = SplitMix64(seed: seed, stream: UInt64(index))
      let count = specs[index].shape.reduce(1, *)
      let isNorm = specs[index].name.hasSuffix("layernorm.weight")
      // Layer norms start at 1 like a trained model's; everything else is N(0, 0.02).
      let values = (0..<count).map { _ in (isNorm ? 1 : 0) + 0.02 * rng.nextGaussian() }
      return ModelIO.encode(values, dtype: specs[index].dtype)
    }
    let bytes = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
    print("wrote \(output): \(specs.count) tensors, \(bytes) bytes, \(t.rawValue)")
  }
}
