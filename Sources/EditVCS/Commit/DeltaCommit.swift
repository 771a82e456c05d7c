import Apply
import DeltaStore
import Foundation

extension EditRepository {
  /// `mvc commit --delta FILE`: applies the delta to the (clean) working model under the
  /// canonical rule and commits it; LoRA factors are stored exactly as given.
  /// - Parameter scale: LoRA's `lora_alpha/r` when no `adapter_config.json` is beside the file;
  ///   the scale applied is recorded in the commit's details (`lora_scale`).
  public func commitDelta(
    file: String, message: String, method: String = "delta", scale: Double? = nil
  ) throws -> CommitResult {
    let clean = try requireCleanHead()
    let (parent, working) = (clean.commit, clean.working)
    let (entries, loraScales) = try DeltaFileReader.read(file, model: working, scale: scale)
    guard !entries.isEmpty else {
      throw RepositoryError.deltaMismatch(file: file, tensor: "-", detail: "holds no tensors")
    }
    var planned: [PlannedChange] = []
    for entry in entries {
      guard let (_, info) = working.location(of: entry.tensor), info.dtype.isEditableFloat else {
        throw RepositoryError.deltaMismatch(file: file, tensor: entry.tensor, detail: "target is not a float tensor")
      }
      let (rows, cols) = TensorMath.matrixShape(info.shape)
      if let dense = entry.dense {
        let found = try RepositoryError.applying(to: entry.tensor) {
          try dense.withUnsafeBufferPointer { buffer in
            try buffer.baseAddress.flatMap {
              try Factorization.lowRank(of: $0, rows: rows, cols: cols, noiseRMS: 0, maxRank: min(rows, cols))
            }
          }
        }
        guard let found else {
          throw RepositoryError.deltaMismatch(
            file: file, tensor: entry.tensor, detail: "dense delta could not be factorized")
        }
        planned.append(PlannedChange(name: entry.tensor, change: .factors(u: found.u, v: found.v, rank: found.rank)))
      } else {
        planned.append(PlannedChange(name: entry.tensor, change: .factors(u: entry.u, v: entry.v, rank: entry.rank)))
      }
    }
    var details = ["delta_file": (file as NSString).lastPathComponent]
    if !loraScales.isEmpty {
      let distinct = Set(loraScales.values)
      details["lora_scale"] =
        distinct.count == 1
        ? "\(distinct.first ?? 1)"
        : loraScales.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
      details["lora_scale_source"] = scale == nil ? "adapter_config.json" : "--scale"
    }
    return try commitChanges(planned, message: message, method: method, details: details, parent: parent)
  }
}
