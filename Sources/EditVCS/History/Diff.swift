import Apply
import DeltaStore
import Foundation

/// One tensor's difference between two states of the model.
public struct TensorDiff: Sendable {
  public var name: String
  /// `modified`, `added`, `removed`.
  public var change: String
  public var dtype: DType
  public var shape: [Int]
  /// Numerical rank of the difference; nil when it is not low-rank (or not a float matrix).
  public var rank: Int?
  public var frobenius: Double?
  public var spectral: Double?
  /// ‖W_from‖_F, for ratios.
  public var weightFrobenius: Double?
}

extension EditRepository {
  /// `mvc diff [A] [B]`: tensors that differ between commit `from` and commit `to`, or the
  /// working model when `to` is nil, with the rank and norms of each difference.
  public func diff(from: ObjectID, to: ObjectID?) throws -> [TensorDiff] {
    let fromHashes = try tensorHashes(at: from)
    let working = to == nil ? try WorkingModel(path: modelPath) : nil
    let toHashes: [String: String] =
      try to.map { try tensorHashes(at: $0) } ?? working.map { try workingHashes($0) } ?? [:]
    var result: [TensorDiff] = []
    for name in Set(fromHashes.keys).union(toHashes.keys).sorted() {
      guard fromHashes[name] != toHashes[name] else { continue }
      let fromState = try contents(of: from).tensorTrees[name].map { try storedState($0, tensor: name).state }
      if fromHashes[name] == nil || toHashes[name] == nil {
        let shape: [Int]
        let dtype: DType
        if let fromState {
          (shape, dtype) = (fromState.shape, fromState.dtype)
        } else if let to, let tree = try contents(of: to).tensorTrees[name] {
          let s = try storedState(tree, tensor: name).state
          (shape, dtype) = (s.shape, s.dtype)
        } else if let working, let (_, info) = working.location(of: name) {
          (shape, dtype) = (info.shape, info.dtype)
        } else {
          continue
        }
        result.append(
          TensorDiff(name: name, change: fromHashes[name] == nil ? "added" : "removed", dtype: dtype, shape: shape))
        continue
      }
      guard let fromState else { continue }
      var entry = TensorDiff(name: name, change: "modified", dtype: fromState.dtype, shape: fromState.shape)
      let (rows, cols) = TensorMath.matrixShape(fromState.shape)
      if fromState.dtype.isEditableFloat, rows >= 2, cols >= 2 {
        let old = try materialize(name, at: from)
        let newBytes: [UInt8]
        if let to {
          newBytes = try materialize(name, at: to)
        } else if let working, let bytes = try working.read(name) {
          newBytes = bytes
        } else {
          continue
        }
        let count = rows * cols
        let delta = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { delta.deallocate() }
        let measured = try newBytes.withUnsafeBytes { n in
          try old.withUnsafeBytes { o in
            try TensorMath.difference(new: n, old: o, dtype: fromState.dtype, count: count, into: delta)
          }
        }
        entry.weightFrobenius = measured.oldFrobenius
        entry.frobenius = DenseNorms.frobenius(delta, count: count)
        if measured.allFinite,
          let factors = try RepositoryError.applying(
            to: name,
            {
              try Factorization.lowRank(
                of: delta, rows: rows, cols: cols, noiseRMS: measured.noiseRMS,
                maxRank: max(1, count / (rows + cols) / 2))
            })
        {
          entry.rank = factors.rank
          entry.spectral = factors.singularValues.first ?? 0
        }
      }
      result.append(entry)
    }
    return result
  }
}
