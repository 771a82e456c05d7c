import DeltaStore
import Foundation

/// What `mvc import --lora` committed.
public struct ImportResult {
  public var commit: CommitResult
  /// Model tensors the adapter changed, sorted.
  package var touchedTensors: [String]
  /// `target_modules` as the adapter lists them.
  public var targetModules: [String]
}

extension EditRepository {
  /// `mvc import --lora DIR`: commits a PEFT LoRA adapter folder (`adapter_model.safetensors` +
  /// `adapter_config.json`) as one edit batch through `commitDelta(file:message:method:)`, with
  /// method `lora-import`.
  ///
  /// Before anything is written, `target_modules` is checked against the model: each entry
  /// (PEFT's rule: the whole module name or a `.`-separated suffix of it; a string is a regular
  /// expression matched against the whole name) must select at least one weight of the model,
  /// and every LoRA pair in the file must belong to a selected module. Per-module scales
  /// (`rank_pattern`, `alpha_pattern`, rsLoRA) are applied by `commitDelta`; what is not a
  /// low-rank addition (DoRA, `lora_bias`, `modules_to_save`, trained biases, embedding LoRA)
  /// is refused by name.
  /// - Throws: `RepositoryError.deltaMismatch` naming the file and the module, and everything
  ///   `commitDelta` throws.
  public func importLoRA(directory: String, message: String) throws -> ImportResult {
    let weightsPath = (directory as NSString).appendingPathComponent(
      ExportWriter.adapterWeightsFile)
    let configPath = (directory as NSString).appendingPathComponent(ExportWriter.adapterConfigFile)
    guard FileManager.default.fileExists(atPath: weightsPath) else {
      let binary = (directory as NSString).appendingPathComponent("adapter_model.bin")
      throw RepositoryError.deltaMismatch(
        file: weightsPath, tensor: "-",
        detail: FileManager.default.fileExists(atPath: binary)
          ? "missing; only safetensors adapters are read (the folder has adapter_model.bin, a pickle)"
          : "missing; a PEFT adapter folder holds adapter_model.safetensors and adapter_config.json"
      )
    }
    guard let data = FileManager.default.contents(atPath: configPath),
      let config = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else {
      throw RepositoryError.deltaMismatch(
        file: configPath, tensor: "-", detail: "is missing or not a JSON object")
    }
    guard (config["peft_type"] as? String)?.uppercased() == "LORA" else {
      throw RepositoryError.deltaMismatch(
        file: configPath, tensor: "peft_type",
        detail: "is '\(config["peft_type"] ?? "null")', not 'LORA'")
    }
    if (config["use_dora"] as? Bool) == true {
      throw RepositoryError.deltaMismatch(
        file: configPath, tensor: "use_dora", detail: "DoRA adapters are not low-rank additions")
    }
    let modelNames = try tensorHashes(at: headCommit()).keys
    let modules = Set(
      modelNames.filter { $0.hasSuffix(".weight") }.map { String($0.dropLast(".weight".count)) })

    let (targets, selects) = try Self.targetModules(config, in: configPath, modules: modules)

    // Every LoRA pair must sit on a targeted module of the model.
    let file = try SafetensorsFile(path: weightsPath, followSymlink: true)
    var touched = Set<String>()
    for info in file.tensors {
      guard let (tensor, _) = DeltaFileReader.loraTarget(info.name) else { continue }
      let module = String(tensor.dropLast(".weight".count))
      guard modules.contains(module) else {
        throw RepositoryError.deltaMismatch(
          file: weightsPath, tensor: info.name, detail: "module '\(module)' is not in the model")
      }
      guard selects(module) else {
        throw RepositoryError.deltaMismatch(
          file: weightsPath, tensor: info.name,
          detail: "module '\(module)' is not in the adapter's target_modules")
      }
      touched.insert(tensor)
    }
    let result = try commitDelta(file: weightsPath, message: message, method: "lora-import")
    return ImportResult(commit: result, touchedTensors: touched.sorted(), targetModules: targets)
  }

  /// `target_modules`, a list of names/suffixes or one regular expression (PEFT's two forms):
  /// as written, and as a test of a module name. Each must select a weight of the model.
  static func targetModules(
    _ config: [String: Any], in configPath: String, modules: Set<String>
  ) throws -> (targets: [String], selects: (String) -> Bool) {
    if let list = config["target_modules"] as? [String] {
      for target in list
      where !modules.contains(where: { $0 == target || $0.hasSuffix("." + target) }) {
        throw RepositoryError.deltaMismatch(
          file: configPath, tensor: target, detail: "target module matches no weight of the model")
      }
      return (list, { module in list.contains { module == $0 || module.hasSuffix("." + $0) } })
    } else if let pattern = config["target_modules"] as? String {
      guard let regex = try? NSRegularExpression(pattern: "^(?:" + pattern + ")$") else {
        throw RepositoryError.deltaMismatch(
          file: configPath, tensor: pattern,
          detail: "target_modules is not a valid regular expression")
      }
      let selects = { (module: String) in
        regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
      }
      guard modules.contains(where: selects) else {
        throw RepositoryError.deltaMismatch(
          file: configPath, tensor: pattern, detail: "target_modules matches no weight of the model"
        )
      }
      return ([pattern], selects)
    } else {
      throw RepositoryError.deltaMismatch(
        file: configPath, tensor: "target_modules", detail: "is missing")
    }
  }

  /// PEFT's `rank_pattern`/`alpha_pattern` lookup: a key matches a module when the module name
  /// ends with it at a `.` boundary (`(.*\.)?KEY$`, KEY a regular expression).
  static func patternValue(_ pattern: [String: Any], _ module: String) -> Double? {
    for (key, value) in pattern {
      guard let number = (value as? NSNumber)?.doubleValue,
        let regex = try? NSRegularExpression(pattern: "^(?:.*\\.)?(?:" + key + ")$")
      else { continue }
      if regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil {
        return number
      }
    }
    return nil
  }
}
