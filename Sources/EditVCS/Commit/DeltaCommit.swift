import Apply
import DeltaStore
import Foundation

extension EditRepository {
  /// `mvc commit --delta FILE`: applies the delta to the (clean) working model under the
  /// canonical rule and commits it; LoRA factors are stored exactly as given.
  public func commitDelta(file: String, message: String, method: String = "delta") throws -> CommitResult {
    let clean = try requireCleanHead()
    let (parent, working) = (clean.commit, clean.working)
    let entries = try DeltaFileReader.read(file, model: working)
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
        let found = try dense.withUnsafeBufferPointer { buffer in
          try buffer.baseAddress.flatMap {
            try Factorization.lowRank(of: $0, rows: rows, cols: cols, noiseRMS: 0, maxRank: min(rows, cols))
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
    let details = ["delta_file": (file as NSString).lastPathComponent]
    return try commitChanges(planned, message: message, method: method, details: details, parent: parent)
  }
}
