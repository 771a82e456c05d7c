import Apply
import DeltaStore
import Foundation

/// One tensor's change read from a delta file, as storage-orientation factors (`U` rows×r,
/// `V` cols×r, row-major Float32) or as a dense full-shape delta.
struct DeltaEntry {
  var tensor: String
  var u: [Float]
  var v: [Float]
  var rank: Int
  var dense: [Float]?
}

/// Reads `commit --delta FILE`: PEFT LoRA pairs (`base_model.model.<module>.lora_A.weight`,
/// r×in, and `...lora_B.weight`, out×r, scaled by `lora_alpha/r` from an `adapter_config.json`
/// beside the file) and dense deltas named like the model's tensors.
enum DeltaFileReader {
  struct AdapterConfig {
    /// `lora_alpha/r` (`/√r` with rsLoRA): the scale of modules no pattern names.
    var scale: Double
    var fanInFanOut: Bool
    var r: Double
    var alpha: Double
    var rsLoRA: Bool
    var rankPattern: [String: Any]
    var alphaPattern: [String: Any]

    /// The scale of one module under `rank_pattern`/`alpha_pattern` (PEFT's per-module r and
    /// alpha), and the rank the pattern gives it.
    func scale(ofModule module: String) -> (scale: Double, rank: Double) {
      let rank = EditRepository.patternValue(rankPattern, module) ?? r
      let alpha = EditRepository.patternValue(alphaPattern, module) ?? self.alpha
      return (rsLoRA ? alpha / rank.squareRoot() : alpha / rank, rank)
    }
  }

  /// Adapter features that are not a low-rank addition to a weight, refused by name: applying
  /// the pairs alone would commit a silently different model.
  static func refuseUnsupported(_ object: [String: Any], path: String) throws {
    if (object["use_dora"] as? Bool) == true {
      throw RepositoryError.deltaMismatch(
        file: path, tensor: "use_dora", detail: "DoRA adapters are not low-rank additions")
    }
    if (object["lora_bias"] as? Bool) == true {
      throw RepositoryError.deltaMismatch(
        file: path, tensor: "lora_bias", detail: "lora_bias trains a bias beside the factors: not a low-rank addition")
    }
    if let modules = object["modules_to_save"] as? [Any], !modules.isEmpty {
      throw RepositoryError.deltaMismatch(
        file: path, tensor: "modules_to_save",
        detail: "modules_to_save replaces whole modules (\(modules.count)): not a low-rank addition")
    }
    if let bias = object["bias"] as? String, bias != "none" {
      throw RepositoryError.deltaMismatch(
        file: path, tensor: "bias", detail: "bias '\(bias)' trains biases: not a low-rank addition")
    }
  }

  static func adapterConfig(besides file: String) throws -> AdapterConfig? {
    let path = ((file as NSString).deletingLastPathComponent as NSString).appendingPathComponent("adapter_config.json")
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw RepositoryError.deltaMismatch(file: path, tensor: "adapter_config.json", detail: "is not a JSON object")
    }
    try refuseUnsupported(object, path: path)
    let r = (object["r"] as? NSNumber)?.doubleValue ?? 0
    let alpha = (object["lora_alpha"] as? NSNumber)?.doubleValue ?? r
    let rslora = (object["use_rslora"] as? Bool) ?? false
    guard r > 0 else {
      throw RepositoryError.deltaMismatch(file: path, tensor: "r", detail: "must be a positive number")
    }
    return AdapterConfig(
      scale: rslora ? alpha / r.squareRoot() : alpha / r, fanInFanOut: (object["fan_in_fan_out"] as? Bool) ?? false,
      r: r, alpha: alpha, rsLoRA: rslora, rankPattern: object["rank_pattern"] as? [String: Any] ?? [:],
      alphaPattern: object["alpha_pattern"] as? [String: Any] ?? [:])
  }

  /// `base_model.model.<module>.lora_A[.adapter].weight` → (`<module>.weight`, "A").
  static func loraTarget(_ name: String) -> (tensor: String, which: Character)? {
    var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
    guard parts.count >= 3, parts.last == "weight" else { return nil }
    guard let loraIndex = parts.lastIndex(where: { $0 == "lora_A" || $0 == "lora_B" }) else { return nil }
    let which: Character = parts[loraIndex] == "lora_A" ? "A" : "B"
    parts = Array(parts[..<loraIndex])
    if parts.starts(with: ["base_model", "model"]) { parts.removeFirst(2) }
    guard !parts.isEmpty else { return nil }
    return ((parts + ["weight"]).joined(separator: "."), which)
  }

  static func floats(_ file: SafetensorsFile, _ info: TensorInfo) throws -> [Float] {
    guard info.dtype.isEditableFloat else {
      throw RepositoryError.deltaMismatch(
        file: file.path, tensor: info.name, detail: "dtype \(info.dtype.rawValue) is not a float type")
    }
    var doubles = [Double](repeating: 0, count: info.elementCount)
    let raw = try file.read(info)
    raw.withUnsafeBytes { raw in
      doubles.withUnsafeMutableBufferPointer {
        FloatConversion.decode(raw, dtype: info.dtype, elements: 0..<info.elementCount, into: $0)
      }
    }
    for (i, x) in doubles.enumerated() where !x.isFinite {
      throw RepositoryError.deltaMismatch(file: file.path, tensor: info.name, detail: "element \(i) is \(x)")
    }
    return doubles.map { Float($0) }
  }

  /// - Parameter scale: `lora_alpha/r` given by the user; without it the scale comes from the
  ///   `adapter_config.json` beside the file, and LoRA factors with neither are refused (a guess
  ///   of 1 would commit a silently wrong model).
  /// - Returns: The entries and the LoRA scale applied (nil when the file holds no LoRA pair).
  static func read(_ path: String, model: WorkingModel, scale: Double? = nil) throws -> (
    entries: [DeltaEntry], loraScales: [String: Double]
  ) {
    // The user's own path: a link to it is followed, and it must reach a regular file.
    let file = try SafetensorsFile(path: path, followSymlink: true)
    let config = try adapterConfig(besides: path)
    if let scale, let config, abs(scale - config.scale) > 1e-9 * abs(config.scale) {
      throw RepositoryError.scaleDisagreesWithConfig(scale: scale, configScale: config.scale, file: path)
    }
    var pairs: [String: (a: TensorInfo?, b: TensorInfo?)] = [:]
    var entries: [DeltaEntry] = []
    for info in file.tensors {
      if info.name.contains("lora_embedding_A") || info.name.contains("lora_embedding_B") {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: info.name, detail: "embedding LoRA (lora_embedding_A/B) is not supported")
      }
      if info.name.contains("lora_magnitude_vector") {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: info.name, detail: "DoRA adapters are not low-rank additions")
      }
      if info.name.hasSuffix(".bias") && (info.name.contains(".lora_B.") || info.name.contains(".lora_A.")) {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: info.name, detail: "lora_bias trains a bias beside the factors: not a low-rank addition")
      }
      if let (tensor, which) = loraTarget(info.name) {
        var pair = pairs[tensor] ?? (nil, nil)
        if which == "A" { pair.a = info } else { pair.b = info }
        pairs[tensor] = pair
        continue
      }
      guard let (_, target) = model.location(of: info.name) else {
        throw RepositoryError.deltaMismatch(file: path, tensor: info.name, detail: "is not a tensor of the model")
      }
      guard info.shape == target.shape else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: info.name, detail: "delta shape \(info.shape) does not match \(target.shape)")
      }
      entries.append(DeltaEntry(tensor: info.name, u: [], v: [], rank: 0, dense: try floats(file, info)))
    }
    if !pairs.isEmpty && scale == nil && config == nil { throw RepositoryError.loraScaleUnknown(file: path) }
    var loraScales: [String: Double] = [:]
    for (tensor, pair) in pairs.sorted(by: { $0.key < $1.key }) {
      guard let a = pair.a, let b = pair.b else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor,
          detail: "has lora_\(pair.a == nil ? "B" : "A") but no lora_\(pair.a == nil ? "A" : "B")")
      }
      guard let (_, target) = model.location(of: tensor) else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor, detail: "LoRA target is not a tensor of the model")
      }
      guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == b.shape[1], target.shape.count == 2 else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor, detail: "lora_A \(a.shape) and lora_B \(b.shape) are not r×in and out×r")
      }
      let r = a.shape[0]
      let inDim = a.shape[1]
      let outDim = b.shape[0]
      var moduleScale = scale ?? 1
      if scale == nil, let config {
        let module = String(tensor.dropLast(".weight".count))
        let (patterned, rank) = config.scale(ofModule: module)
        guard rank == Double(r) else {
          throw RepositoryError.deltaMismatch(
            file: path, tensor: tensor, detail: "lora_A has rank \(r) but the adapter config gives \(rank)")
        }
        moduleScale = patterned
      }
      loraScales[tensor] = moduleScale
      let scale = Float(moduleScale)
      let aValues = try floats(file, a)  // r × in
      let bValues = try floats(file, b)  // out × r
      // ΔW = scale·B·A (out×in). Storage is out×in for nn.Linear, in×out for GPT-2's Conv1D.
      var u: [Float]
      var v: [Float]
      // PEFT's fan_in_fan_out marks GPT-2 Conv1D targets, stored in×out; the shape alone cannot
      // tell them apart from nn.Linear when the matrix is square.
      let conv1d = config?.fanInFanOut ?? (target.shape != [outDim, inDim])
      if !conv1d && target.shape == [outDim, inDim] {
        u = bValues.map { $0 * scale }  // out × r
        v = [Float](repeating: 0, count: inDim * r)  // in × r = Aᵀ
        for k in 0..<r { for j in 0..<inDim { v[j * r + k] = aValues[k * inDim + j] } }
      } else if conv1d && target.shape == [inDim, outDim] {
        u = [Float](repeating: 0, count: inDim * r)  // in × r = Aᵀ·scale
        for k in 0..<r { for j in 0..<inDim { u[j * r + k] = aValues[k * inDim + j] * scale } }
        v = bValues  // out × r
      } else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor,
          detail: "delta shape [\(outDim), \(inDim)] (lora_B·lora_A) does not match \(target.shape)")
      }
      entries.append(DeltaEntry(tensor: tensor, u: u, v: v, rank: r, dense: nil))
    }
    return (entries, loraScales)
  }
}
