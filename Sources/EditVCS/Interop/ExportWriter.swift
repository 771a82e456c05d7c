import DeltaStore
import Foundation

/// Writes an exported range as files other tools read: a PEFT LoRA adapter folder, or one
/// safetensors file of factors or dense deltas.
///
/// PEFT's layout (docs/source/developer_guides/checkpoint.md in huggingface/peft): keys
/// `base_model.model.<module>.lora_A.weight` (r × in) and `...lora_B.weight` (out × r), no
/// adapter name in the key; `adapter_config.json` with `peft_type: "LORA"`, `r`, `lora_alpha`,
/// `target_modules`, and per-module `rank_pattern`/`alpha_pattern` where ranks differ. The
/// adapter adds `lora_alpha/r · B·A` (transposed when `fan_in_fan_out`) to each weight.
public enum ExportWriter {
  package static let adapterWeightsFile = "adapter_model.safetensors"
  package static let adapterConfigFile = "adapter_config.json"

  /// The PEFT `adapter_config.json` for `tensors`: `lora_alpha = r` per module, so every
  /// module's scale is 1; `target_modules` are the full module names (PEFT matches a target
  /// as the whole name or a `.`-separated suffix, so a full name selects exactly one module).
  package static func adapterConfig(_ tensors: [ExportedTensor], baseModel: String) -> [String: Any] {
    let r = tensors.map(\.rank).max() ?? 0
    var rankPattern: [String: Int] = [:]
    for t in tensors where t.rank != r { rankPattern[t.moduleName] = t.rank }
    var config: [String: Any] = [
      "peft_type": "LORA",
      "r": r,
      "lora_alpha": r,
      "target_modules": tensors.map(\.moduleName),
      "base_model_name_or_path": baseModel,
      "fan_in_fan_out": tensors.contains { $0.isConv1D },
      "bias": "none",
      "task_type": NSNull(),
      "inference_mode": true,
      "lora_dropout": 0.0,
      "use_rslora": false,
      "use_dora": false,
      "modules_to_save": NSNull(),
      "init_lora_weights": true,
      "revision": NSNull(),
    ]
    // alpha = rank per module keeps the scale at 1 wherever the rank differs from `r`.
    config["rank_pattern"] = rankPattern
    config["alpha_pattern"] = rankPattern
    return config
  }

  /// Writes `adapter_model.safetensors` and `adapter_config.json` into `directory` (created if
  /// needed), each through a temp file, fsync and rename.
  /// - Throws: `RepositoryError.nothingToExport`, `RepositoryError.cannotAccess` when the folder
  ///   cannot be created; `DeltaStoreError` from the writer.
  public static func writeAdapter(
    _ tensors: [ExportedTensor], into directory: String, baseModel: String, hook: IOHook? = nil
  ) throws {
    guard !tensors.isEmpty else {
      throw RepositoryError.nothingToExport
    }
    var entries: [(name: String, shape: [Int], values: [Float])] = []
    for t in tensors {
      let r = t.rank
      // ΔW_storage = U·Vᵀ. nn.Linear stores out×in, so ΔW = B·A with B = U, A = Vᵀ. GPT-2's
      // Conv1D stores in×out, so ΔW_storage = (B·A)ᵀ = Aᵀ·Bᵀ with A = Uᵀ, B = V.
      let (left, right, outDim, inDim) =
        t.isConv1D ? (t.v, t.u, t.cols, t.rows) : (t.u, t.v, t.rows, t.cols)
      var a = [Float](repeating: 0, count: r * inDim)  // r × in = rightᵀ
      for j in 0..<inDim { for k in 0..<r { a[k * inDim + j] = right[j * r + k] } }
      let prefix = "base_model.model." + t.moduleName
      entries.append((prefix + ".lora_A.weight", [r, inDim], a))
      entries.append((prefix + ".lora_B.weight", [outDim, r], left))
    }
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw RepositoryError.cannotAccess(path: directory, operation: "create", reason: error.localizedDescription)
    }
    let configObject = adapterConfig(tensors, baseModel: baseModel)
    let json = try JSONSerialization.data(
      withJSONObject: configObject, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    // transformers refuses safetensors without `format` metadata of "pt"; PEFT writes it too.
    try writeSafetensors(
      entries, metadata: ["format": "pt"],
      to: (directory as NSString).appendingPathComponent(adapterWeightsFile), hook: hook)
    try writeFile(
      Array(json) + [0x0A], to: (directory as NSString).appendingPathComponent(adapterConfigFile),
      hook: hook)
  }

  /// Writes `<tensor>.delta_u` (rows × r) and `<tensor>.delta_v` (cols × r) per tensor, or with
  /// `dense`, the full-shape Float32 `U·Vᵀ` named like the tensor (what `mvc commit --delta` reads).
  public static func writeDelta(
    _ tensors: [ExportedTensor], to path: String, dense: Bool, hook: IOHook? = nil
  ) throws {
    guard !tensors.isEmpty else {
      throw RepositoryError.nothingToExport
    }
    var entries: [(name: String, shape: [Int], values: [Float])] = []
    for t in tensors {
      if dense {
        var values = [Float](repeating: 0, count: t.rows * t.cols)
        for i in 0..<t.rows {
          for j in 0..<t.cols {
            var s = 0.0
            for k in 0..<t.rank { s += Double(t.u[i * t.rank + k]) * Double(t.v[j * t.rank + k]) }
            values[i * t.cols + j] = Float(s)
          }
        }
        entries.append((t.name, t.shape, values))
      } else {
        entries.append((t.name + ".delta_u", [t.rows, t.rank], t.u))
        entries.append((t.name + ".delta_v", [t.cols, t.rank], t.v))
      }
    }
    try writeSafetensors(entries, metadata: ["format": "pt"], to: path, hook: hook)
  }

  static func writeSafetensors(
    _ entries: [(name: String, shape: [Int], values: [Float])], metadata: [String: String],
    to path: String,
    hook: IOHook?
  ) throws {
    var bytes = SafetensorsHeader.serialize(
      tensors: entries.map { ($0.name, DType.f32, $0.shape) }, metadata: metadata)
    for e in entries {
      // safetensors data is little-endian.
      for x in e.values {
        withUnsafeBytes(of: x.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
      }
    }
    try writeFile(bytes, to: path, hook: hook)
  }

  static func writeFile(_ bytes: [UInt8], to path: String, hook: IOHook?) throws {
    _ = try bytes.withUnsafeBytes { try AtomicFileWriter.replace(path, with: $0, hook: hook) }
  }
}
