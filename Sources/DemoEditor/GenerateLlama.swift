import ArgumentParser
import DeltaStore
import Foundation
import Synchronization

/// The published geometries of two Llama models, for benchmarks at real scale.
enum LlamaGeometry: String, ExpressibleByArgument, CaseIterable {
  /// Llama-3-8B: hidden 4096, intermediate 14336, 32 layers, vocab 128256 (16 GB in bf16).
  case llama3_8b = "llama3-8b"
  /// Llama-3.2-1B: hidden 2048, intermediate 8192, 16 layers, vocab 128256, with an untied
  /// `lm_head` (3 GB in bf16).
  case llama3_2_1b = "llama3.2-1b"

  var sizes: (hidden: Int, intermediate: Int, layers: Int, vocab: Int, heads: Int, kvHeads: Int) {
    switch self {
    case .llama3_8b: return (4096, 14336, 32, 128256, 32, 8)
    case .llama3_2_1b: return (2048, 8192, 16, 128256, 32, 8)
    }
  }

  /// Tensor names and shapes in the order `save_pretrained` writes them.
  var tensors: [(name: String, shape: [Int])] {
    let s = sizes
    let kv = s.kvHeads * (s.hidden / s.heads)
    var out: [(String, [Int])] = [("model.embed_tokens.weight", [s.vocab, s.hidden])]
    for layer in 0..<s.layers {
      let p = "model.layers.\(layer)."
      out += [
        (p + "self_attn.q_proj.weight", [s.hidden, s.hidden]), (p + "self_attn.k_proj.weight", [kv, s.hidden]),
        (p + "self_attn.v_proj.weight", [kv, s.hidden]), (p + "self_attn.o_proj.weight", [s.hidden, s.hidden]),
        (p + "mlp.gate_proj.weight", [s.intermediate, s.hidden]),
        (p + "mlp.up_proj.weight", [s.intermediate, s.hidden]),
        (p + "mlp.down_proj.weight", [s.hidden, s.intermediate]), (p + "input_layernorm.weight", [s.hidden]),
        (p + "post_attention_layernorm.weight", [s.hidden]),
      ]
    }
    out += [("model.norm.weight", [s.hidden]), ("lm_head.weight", [s.vocab, s.hidden])]
    return out
  }
}

struct GenerateLlama: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate-llama",
    abstract: "Write a Llama-shaped bf16 model folder in shards (index, config.json), values ~N(0, 0.02).",
    discussion: """
      Deterministic for a seed; tensors are generated on every core, a 16 MiB piece at a time, so
      memory stays small whatever the model's size.
      """)

  @Argument(help: "The folder to create.") var output: String
  @Option(help: "llama3-8b (16 GB) or llama3.2-1b (3 GB).") var geometry: LlamaGeometry = .llama3_2_1b
  @Option(help: "Number of shard files.") var shards = 4
  @Option(help: "Seed of the generator.") var seed: UInt64 = 0

  func run() throws {
    guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
    let specs = geometry.tensors
    let total = specs.reduce(0) { $0 + $1.shape.reduce(2, *) }
    // Greedy split by size, as transformers' max_shard_size does.
    var groups: [[Int]] = [[]]
    var size = 0
    for (index, spec) in specs.enumerated() {
      if size >= total / shards * groups.count && groups.count < shards { groups.append([]) }
      groups[groups.count - 1].append(index)
      size += spec.shape.reduce(2, *)
    }
    try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
    var weightMap: [String: String] = [:]
    for (k, group) in groups.enumerated() {
      let file = String(format: "model-%05d-of-%05d.safetensors", k + 1, groups.count)
      let tensors = group.map { (name: specs[$0].name, dtype: DType.bf16, shape: specs[$0].shape) }
      try writeShard((output as NSString).appendingPathComponent(file), tensors: tensors, firstIndex: group[0])
      for t in tensors { weightMap[t.name] = file }
    }
    let index: [String: Any] = ["metadata": ["total_size": total], "weight_map": weightMap]
    try JSONSerialization.data(withJSONObject: index, options: [.prettyPrinted, .sortedKeys]).write(
      to: URL(fileURLWithPath: (output as NSString).appendingPathComponent("model.safetensors.index.json")))
    let s = geometry.sizes
    let config: [String: Any] = [
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": s.hidden,
      "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "vocab_size": s.vocab,
      "num_attention_heads": s.heads, "num_key_value_heads": s.kvHeads, "torch_dtype": "bfloat16",
      "tie_word_embeddings": false, "max_position_embeddings": 4096,
    ]
    try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]).write(
      to: URL(fileURLWithPath: (output as NSString).appendingPathComponent("config.json")))
    print("wrote \(output): \(specs.count) tensors, \(total) bytes of bf16 in \(groups.count) shards")
  }

  /// One shard: the header, then every tensor generated in 16 MiB pieces by one thread per core.
  private func writeShard(
    _ path: String, tensors: [(name: String, dtype: DType, shape: [Int])], firstIndex: Int
  ) throws {
    let header = SafetensorsHeader.serialize(tensors: tensors, metadata: ["format": "pt"])
    let layout = SafetensorsHeader.layout(tensors: tensors)
    let writer = try AtomicFileWriter(
      path: path, byteCount: header.count + (layout.last?.dataOffsets.upperBound ?? 0))
    try header.withUnsafeBytes { try writer.write($0, at: 0) }
    let piece = 8 << 20  // elements
    var jobs: [(tensor: Int, start: Int, count: Int)] = []
    for (i, info) in layout.enumerated() {
      let count = info.byteCount / 2
      for start in stride(from: 0, to: count, by: piece) { jobs.append((i, start, min(piece, count - start))) }
    }
    let jobList = jobs
    // pwrite at distinct offsets from several threads is safe; the writer has no hook.
    nonisolated(unsafe) let shared = writer
    let failure = Mutex<(any Error)?>(nil)
    let seed = self.seed
    let norms = layout.map { $0.name.hasSuffix("norm.weight") }
    DispatchQueue.concurrentPerform(iterations: ProcessInfo.processInfo.activeProcessorCount) { worker in
      var buffer = [UInt16](repeating: 0, count: piece)
      for j in stride(from: worker, to: jobList.count, by: ProcessInfo.processInfo.activeProcessorCount) {
        let job = jobList[j]
        var state = seed &+ UInt64(firstIndex + job.tensor) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(job.start) &* 0xBF58_476D
        let offset: Float = norms[job.tensor] ? 1 : 0
        for e in 0..<job.count {
          let value = offset + llamaLikeWeight(&state)
          let bits = value.bitPattern
          buffer[e] = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)  // to bf16, nearest-even
        }
        do {
          try buffer.withUnsafeBytes {
            try shared.write(
              UnsafeRawBufferPointer(rebasing: $0[0..<(job.count * 2)]),
              at: header.count + layout[job.tensor].dataOffsets.lowerBound + job.start * 2)
          }
        } catch {
          failure.withLock { $0 = $0 ?? error }
        }
      }
    }
    if let error = failure.withLock({ $0 }) { throw error }
    try writer.commit(durable: false)
  }
}

/// The next ~N(0, 0.02²) weight of `generate-llama`'s stream: SplitMix64, then Irwin–Hall over
/// four 16-bit uniforms (~N(0, 1)), scaled.
@inline(__always)
func llamaLikeWeight(_ state: inout UInt64) -> Float {
  state &+= 0x9E37_79B9_7F4A_7C15
  var z = state
  z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
  z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
  z ^= z >> 31
  let sum = Float(z & 0xFFFF) + Float((z >> 16) & 0xFFFF) + Float((z >> 32) & 0xFFFF) + Float(z >> 48)
  return 0.02 * (sum * (1 / 65536) - 2) * 1.7320508
}
