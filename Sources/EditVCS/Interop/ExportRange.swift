import Apply
import DeltaStore
import Foundation

/// One tensor's combined change over a range of history, as factors in storage orientation
/// (`ΔW_storage ≈ U·Vᵀ`, `U` rows × rank, `V` cols × rank, row-major Float32).
public struct ExportedTensor: Sendable {
  /// How the factors were obtained.
  public enum Source: String, Sendable {
    /// The stored factors of every low-rank state in the range, concatenated.
    case concatenatedFactors = "factors"
    /// `W_TO − W_FROM` materialized and factorized (the range holds a complete state, a
    /// residual larger than rounding, or a state brought in by a merge).
    case denseDifference = "dense"
  }

  public var name: String
  package var dtype: DType
  package var shape: [Int]
  package var rows: Int
  package var cols: Int
  /// True for GPT-2 `Conv1D` weights (`*.c_attn.weight`, `*.c_proj.weight`, `*.c_fc.weight`),
  /// stored in×out; detected by name.
  public var isConv1D: Bool
  public var source: Source
  /// Commits in the range that changed this tensor.
  public var stepCount: Int
  /// Rank before `--rank` truncation (the sum of the stored ranks for concatenated factors).
  public var fullRank: Int
  public var rank: Int
  /// `‖ΔW − ΔW_r‖_F / ‖ΔW‖_F` of the truncation, when `--rank` truncated this tensor.
  public var truncationError: Double?
  /// `max |U·Vᵀ − (W_TO − W_FROM)|` in Float64, against the exact materialized states; it
  /// includes the per-commit residuals the factors omit.
  public var maxAbsError: Double
  /// `‖W_TO − W_FROM‖_F`.
  package var deltaFrobenius: Double
  package var u: [Float]
  package var v: [Float]

  /// `<module>` of PEFT's keys: the tensor name without its trailing `.weight`.
  package var moduleName: String {
    name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
  }
}

/// The result of resolving and exporting a range.
public struct ExportedRange: Sendable {
  public var from: ObjectID
  public var to: ObjectID
  /// Commits after `from` up to `to` along first parents, oldest first.
  public var commits: [ObjectID]
  public var tensors: [ExportedTensor]
}

extension ExportedTensor {
  /// GPT-2 stores `Conv1D` weights in×out (the transpose of `nn.Linear`); PEFT calls this
  /// `fan_in_fan_out`. Only the name tells the two apart in a safetensors file.
  static func isConv1DName(_ name: String) -> Bool {
    for module in ["c_attn", "c_proj", "c_fc"] {
      if name == module + ".weight" || name.hasSuffix("." + module + ".weight") { return true }
    }
    return false
  }
}

extension EditRepository {
  /// The combined change of every tensor from `from` to `to` (`FROM..TO` like git: the
  /// changes after `from` up to `to`, along first parents).
  ///
  /// For each tensor that differs, the factors of its low-rank states in the range are
  /// concatenated (rank = sum of ranks), which omits each commit's ±1-ulp residual; the
  /// materialized `W_TO − W_FROM` measures what that leaves (`maxAbsError`). When the range
  /// holds a complete state, a state that does not follow the previous one (a merge), or
  /// residuals larger than rounding, `W_TO − W_FROM` is factorized instead
  /// (`Factorization.lowRank`, noise-aware). With `targetRank`, each tensor of higher rank is
  /// replaced by its best rank-`targetRank` approximation (`LowRankAlgebra.truncate`).
  ///
  /// - Parameters:
  ///   - from: the start; nil means the root of `to`'s first-parent chain.
  ///   - requireMatrix: refuse tensors that are not 2-D (LoRA holds matrices only).
  /// - Throws: `RepositoryError.notAnAncestor` when `from` is not a first-parent ancestor of
  ///   `to`, `.tensorAddedOrRemoved`, `.notAFloatTensor`, `.notAMatrix`, `.notLowRank` when its
  ///   difference is not low-rank, `.apply` when the factorization fails.
  public func exportRange(
    from: ObjectID?, to: ObjectID, targetRank: Int? = nil, requireMatrix: Bool = false
  ) throws -> ExportedRange {
    var commits: [ObjectID] = []
    var current = to
    var start: ObjectID?
    while true {
      if current == from {
        start = current
        break
      }
      guard let parent = try commitInfo(current).parents.first else {
        if from == nil { start = current }
        break
      }
      commits.append(current)
      current = parent
    }
    guard let start else {
      throw RepositoryError.notAnAncestor(from: from?.shortHex ?? "-", to: to.shortHex)
    }
    commits.reverse()
    let chain = [start] + commits
    let fromContents = try contents(of: start)
    let toContents = try contents(of: to)
    var tensors: [ExportedTensor] = []
    let names = Set(fromContents.tensorTrees.keys).union(toContents.tensorTrees.keys).sorted()
    for (index, name) in names.enumerated() {
      report("exporting", index, names.count)
      guard let fromTree = fromContents.tensorTrees[name], let toTree = toContents.tensorTrees[name]
      else {
        throw RepositoryError.tensorAddedOrRemoved(
          tensor: name, change: fromContents.tensorTrees[name] == nil ? "added" : "removed",
          revisions: "\(start.shortHex)..\(to.shortHex)", operation: "an adapter")
      }
      if fromTree == toTree { continue }
      if let exported = try combinedChange(
        of: name, along: chain, fromTree: fromTree, targetRank: targetRank,
        requireMatrix: requireMatrix)
      {
        tensors.append(exported)
      }
    }
    report("exporting", names.count, names.count)
    return ExportedRange(from: start, to: to, commits: commits, tensors: tensors)
  }

  /// One tensor's change along `chain` (`chain[0]` is FROM, the last is TO).
  func combinedChange(
    of name: String, along chain: [ObjectID], fromTree: ObjectID, targetRank: Int?,
    requireMatrix: Bool
  ) throws -> ExportedTensor? {
    guard let first = chain.first, let last = chain.last else { return nil }
    let startState = try storedState(fromTree, tensor: name).state
    try checkExportable(startState, name: name, range: (first, last), requireMatrix: requireMatrix)
    let (steps, followsChain) = try statesAlong(chain, of: name, fromTree: fromTree, startHash: startState.hash)
    let old = try materialize(name, at: first)
    let new = try materialize(name, at: last)
    let (rows, cols) = TensorMath.matrixShape(startState.shape)
    let dtype = startState.dtype

    var source = ExportedTensor.Source.concatenatedFactors
    var (u, v, rank): ([Float], [Float], Int) = ([], [], 0)
    if followsChain { (u, v, rank) = try concatenatedFactors(of: steps, tensor: name, rows: rows, cols: cols) }
    let measured = try measure(
      u: u, v: v, rank: rank, rows: rows, cols: cols, new: new, old: old, dtype: dtype)
    // Each step rounds once (½ ulp) and drops a residual of about 1 ulp; more than that is signal
    // the factors miss, so the exact difference is factorized instead.
    let ulp = Double(Float(measured.maxAbsNew).ulp) * TensorMath.ulpScale(dtype)
    let rounding = (2 * Double(steps.count) + 1) * ulp
    var maxAbsError = measured.maxAbsError
    if !followsChain || maxAbsError > rounding {
      source = .denseDifference
      (u, v, rank) = try factorizedDifference(
        of: name, new: new, old: old, dtype: dtype, rows: rows, cols: cols, range: (first, last))
    }
    let fullRank = rank
    var truncationError: Double?
    if let targetRank, rank > targetRank {
      let truncated = try truncate(u: u, v: v, rows: rows, cols: cols, rank: rank, to: targetRank, tensor: name)
      (u, v, rank) = (truncated.u, truncated.v, truncated.rank)
      truncationError = truncated.relativeFrobeniusError
    }
    if source == .denseDifference || truncationError != nil {
      maxAbsError = try measure(
        u: u, v: v, rank: rank, rows: rows, cols: cols, new: new, old: old, dtype: dtype
      )
      .maxAbsError
    }
    return ExportedTensor(
      name: name, dtype: dtype, shape: startState.shape, rows: rows, cols: cols,
      isConv1D: startState.shape.count == 2 && ExportedTensor.isConv1DName(name), source: source,
      stepCount: steps.count, fullRank: fullRank, rank: rank, truncationError: truncationError,
      maxAbsError: maxAbsError, deltaFrobenius: measured.deltaFrobenius, u: u, v: v)
  }

  /// Refuses a tensor an adapter cannot carry: not a float, or (for LoRA) not 2-D.
  private func checkExportable(
    _ state: TensorState, name: String, range: (ObjectID, ObjectID), requireMatrix: Bool
  ) throws {
    guard state.dtype.isEditableFloat else {
      throw RepositoryError.notAFloatTensor(tensor: name, dtype: state.dtype.rawValue, operation: "exported as deltas")
    }
    if requireMatrix && state.shape.count != 2 {
      throw RepositoryError.notAMatrix(
        tensor: name, dtype: state.dtype.rawValue, shape: state.shape, operation: "a LoRA adapter",
        revisions: "\(range.0.shortHex)..\(range.1.shortHex)")
    }
  }

  /// The states the tensor went through after `chain[0]`, and whether each is a low-rank change
  /// of the one before (then their factors, side by side, are the whole change).
  private func statesAlong(
    _ chain: [ObjectID], of name: String, fromTree: ObjectID, startHash: String
  ) throws -> (steps: [StoredTensorState], followsChain: Bool) {
    var steps: [StoredTensorState] = []
    var followsChain = true
    var previousTree = fromTree
    var previousHash = startHash
    for commit in chain.dropFirst() {
      guard let tree = try contents(of: commit).tensorTrees[name] else {
        throw RepositoryError.tensorAddedOrRemoved(
          tensor: name, change: "removed", revisions: "commit \(commit.shortHex)", operation: "an adapter")
      }
      if tree == previousTree { continue }
      let stored = try storedState(tree, tensor: name)
      if stored.state.kind != .lowRank || stored.state.parentHash != previousHash {
        followsChain = false
      }
      steps.append(stored)
      previousTree = tree
      previousHash = stored.state.hash
    }
    return (steps, followsChain)
  }

  /// The low-rank steps' factors side by side: `U = [U₁ U₂ …]`, `V = [V₁ V₂ …]`.
  private func concatenatedFactors(
    of steps: [StoredTensorState], tensor name: String, rows: Int, cols: Int
  ) throws -> (u: [Float], v: [Float], rank: Int) {
    let loaded = try steps.map { try factors(of: $0, tensor: name) }
    let rank = loaded.reduce(0) { $0 + $1.rank }
    var u = [Float](repeating: 0, count: rows * rank)
    var v = [Float](repeating: 0, count: cols * rank)
    var offset = 0
    for f in loaded {
      for i in 0..<rows { for k in 0..<f.rank { u[i * rank + offset + k] = f.u[i * f.rank + k] } }
      for j in 0..<cols { for k in 0..<f.rank { v[j * rank + offset + k] = f.v[j * f.rank + k] } }
      offset += f.rank
    }
    return (u, v, rank)
  }

  /// `new − old` factorized by the rank finder; refused when it is not low-rank.
  private func factorizedDifference(
    of name: String, new: [UInt8], old: [UInt8], dtype: DType, rows: Int, cols: Int, range: (ObjectID, ObjectID)
  ) throws -> (u: [Float], v: [Float], rank: Int) {
    let count = rows * cols
    let delta = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    defer { delta.deallocate() }
    let difference = try new.withUnsafeBytes { n in
      try old.withUnsafeBytes { o in
        try TensorMath.difference(new: n, old: o, dtype: dtype, count: count, into: delta)
      }
    }
    let maxRank = max(1, count / max(rows + cols, 1) / 2)
    let found = try RepositoryError.applying(to: name) {
      try Factorization.lowRank(of: delta, rows: rows, cols: cols, noiseRMS: difference.noiseRMS, maxRank: maxRank)
    }
    guard let found else {
      throw RepositoryError.notLowRank(
        tensor: name, revisions: "\(range.0.shortHex)..\(range.1.shortHex)", maxRank: maxRank, rows: rows, cols: cols)
    }
    return (found.u, found.v, found.rank)
  }

  /// The best rank-`targetRank` approximation of `U·Vᵀ` (`--rank`).
  private func truncate(
    u: [Float], v: [Float], rows: Int, cols: Int, rank: Int, to targetRank: Int, tensor name: String
  ) throws -> TruncatedFactors {
    try RepositoryError.applying(to: name) {
      try LowRankAlgebra.truncate(u: u, v: v, rows: rows, cols: cols, rank: rank, to: targetRank)
    }
  }

  /// `max |U·Vᵀ − (new − old)|`, `‖new − old‖_F` and `max |new|`, in Float64, one row block at a time.
  func measure(
    u: [Float], v: [Float], rank: Int, rows: Int, cols: Int, new: [UInt8], old: [UInt8],
    dtype: DType
  ) throws -> (maxAbsError: Double, deltaFrobenius: Double, maxAbsNew: Double) {
    var maxError = 0.0
    var norm = 0.0
    var maxNew = 0.0
    let ud = u.map(Double.init)
    let vd = v.map(Double.init)
    var a = [Double](repeating: 0, count: 0)
    var b = [Double](repeating: 0, count: 0)
    new.withUnsafeBytes { n in
      old.withUnsafeBytes { o in
        LowRankAlgebra.forEachProductBlock(u: ud, v: vd, rows: rows, cols: cols, rank: rank) {
          first, count, block in
          let range = (first * cols)..<((first + count) * cols)
          if a.count != range.count {
            a = [Double](repeating: 0, count: range.count)
            b = [Double](repeating: 0, count: range.count)
          }
          a.withUnsafeMutableBufferPointer {
            FloatConversion.decode(n, dtype: dtype, elements: range, into: $0)
          }
          b.withUnsafeMutableBufferPointer {
            FloatConversion.decode(o, dtype: dtype, elements: range, into: $0)
          }
          for k in 0..<range.count {
            let d = a[k] - b[k]
            norm += d * d
            maxError = max(maxError, abs(block[k] - d))
            maxNew = max(maxNew, abs(a[k]))
          }
        }
      }
    }
    return (maxError, norm.squareRoot(), maxNew)
  }
}

extension TensorMath {
  /// The ulp of `dtype` relative to Float32's at the same magnitude: F32 ×1, BF16 ×2¹⁶,
  /// F16 ×2¹³, F64 ×2⁻²⁹ (`difference(new:old:dtype:count:into:)`'s noise).
  static func ulpScale(_ dtype: DType) -> Double {
    switch dtype {
    case .bf16: return 65536
    case .f16: return 8192
    case .f64: return 0x1p-29
    default: return 1
    }
  }
}
