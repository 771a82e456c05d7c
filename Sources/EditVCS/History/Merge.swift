import Apply
import DeltaStore
import Foundation

public enum MergeStrategy: String, Sendable, CaseIterable {
  /// Add the other branch's deltas since the merge base (exact in factors).
  case sum
  /// Re-solve one joint update over the keys and values recorded on both sides, against the
  /// merge base, so interfering edits are balanced instead of summed.
  case resolve
}

public struct MergeResult: Sendable {
  public enum Kind: Sendable { case upToDate, fastForward, merged }
  public var kind: Kind
  public var commit: ObjectID
  package var record: EditRecord?
  /// Mean retention of the recorded edits under each strategy, when keys were recorded.
  public var scores: [String: Double]
}

extension EditRepository {
  /// The change from state `baseHash` to the tensor's state at `tip`, as concatenated factors
  /// when every step on the way is low-rank, else as the dense difference.
  func changeSince(_ name: String, baseHash: String, base: ObjectID, tip: ObjectID) throws -> PlannedChange {
    let chain = try stateChain(of: name, at: tip, stopAtHash: baseHash, useSnapshots: false)
    if let last = chain.last, last.state.hash == baseHash, chain.dropLast().allSatisfy({ $0.state.kind == .lowRank }) {
      let steps = chain.dropLast()
      var loaded: [(u: [Float], v: [Float], rank: Int)] = []
      var rows = 0
      var cols = 0
      for step in steps {
        let f = try factors(of: step, tensor: name)
        (rows, cols) = (f.rows, f.cols)
        loaded.append((f.u, f.v, f.rank))
      }
      let total = loaded.map(\.rank).reduce(0, +)
      var u = [Float](repeating: 0, count: rows * total)
      var v = [Float](repeating: 0, count: cols * total)
      var offset = 0
      for f in loaded.reversed() {
        for i in 0..<rows { for r in 0..<f.rank { u[i * total + offset + r] = f.u[i * f.rank + r] } }
        for j in 0..<cols { for r in 0..<f.rank { v[j * total + offset + r] = f.v[j * f.rank + r] } }
        offset += f.rank
      }
      return PlannedChange(name: name, change: .factors(u: u, v: v, rank: total))
    }
    let state = try storedState(try contents(of: tip).tensorTrees[name].unwrap(name), tensor: name).state
    let new = try materialize(name, at: tip)
    let old = try materialize(name, at: base)
    return PlannedChange(
      name: name,
      change: .dense(
        new.withUnsafeBytes { n in
          old.withUnsafeBytes { o in TensorMath.denseDifference(n, o, dtype: state.dtype, count: state.elementCount) }
        }))
  }

  /// `mvc merge BRANCH [--strategy sum|resolve]`: a merge commit with both parents, as git's.
  public func merge(_ theirs: ObjectID, name: String, strategy: MergeStrategy, message: String?) throws -> MergeResult {
    let clean = try requireCleanHead()
    let (headState, ours) = (clean.state, clean.commit)
    guard let base = try RepositoryError.wrap("finding the merge base", { try git.mergeBase(ours, theirs) }) else {
      throw RepositoryError.unrelatedHistories(revision: name, operation: "merge")
    }
    if base == theirs { return MergeResult(kind: .upToDate, commit: ours, record: nil, scores: [:]) }
    if base == ours {
      try moveWorkingModel(
        to: theirs, attach: headState.branchName.map { .branch(name: $0, commit: theirs) } ?? .detached(theirs),
        force: false, expectedHead: ours, reflog: "merge \(name): Fast-forward", origHead: ours)
      return MergeResult(kind: .fastForward, commit: theirs, record: nil, scores: [:])
    }
    let baseHashes = try tensorHashes(at: base)
    let ourHashes = try tensorHashes(at: ours)
    let theirHashes = try tensorHashes(at: theirs)
    for n in Set(baseHashes.keys).symmetricDifference(ourHashes.keys).union(
      Set(baseHashes.keys).symmetricDifference(theirHashes.keys))
    {
      throw RepositoryError.tensorAddedOrRemoved(
        tensor: n, change: "added or removed", revisions: "the histories since the merge base \(base.shortHex)",
        operation: "a merge")
    }
    let ourEdits = try recordedEdits(from: ours, since: base, requireKeys: strategy == .resolve)
    let theirEdits = try recordedEdits(from: theirs, since: base, requireKeys: strategy == .resolve)

    var sumPlan: [PlannedChange] = []
    for n in baseHashes.keys.sorted() where theirHashes[n] != baseHashes[n] {
      guard let baseHash = baseHashes[n] else { continue }
      let theirChange = try changeSince(n, baseHash: baseHash, base: base, tip: theirs)
      sumPlan.append(theirChange)
    }
    var resolvePlan: [PlannedChange] = []
    var resolvedTensors: [String: (shape: [Int], update: EditUpdate)] = [:]
    if strategy == .resolve || (!ourEdits.isEmpty && !theirEdits.isEmpty) {
      for (tensor, edits) in Dictionary(grouping: ourEdits + theirEdits, by: \.tensor) {
        guard let first = edits.first else { continue }
        let (w, shape) = try floatTensor(tensor, at: base)
        let problem = EditProblem(
          w0: .float32(w), dOut: first.dOut, dIn: first.dIn, weightIsTransposed: first.transposed,
          keys: edits.flatMap(\.keys), values: edits.flatMap(\.values), covariance: first.covariance,
          lambda: first.lambda, mu: first.mu)
        let method: EditMethod = edits.contains { $0.method == .memit } ? .memit : .emmet
        resolvedTensors[tensor] = (
          shape, try RepositoryError.applying(to: tensor) { try EditSolvers.solve(problem, method: method) }
        )
      }
      for (tensor, resolved) in resolvedTensors.sorted(by: { $0.key < $1.key }) {
        let rows = resolved.update.storageRowCount
        let cols = resolved.update.storageColumnCount
        var u = resolved.update.storageLeft
        var v = resolved.update.storageRight
        var rank = resolved.update.rank
        if ourHashes[tensor] != baseHashes[tensor], let baseHash = baseHashes[tensor] {
          // The merge commit's delta is against ours: ΔW_joint − (W_ours − W_base).
          switch try changeSince(tensor, baseHash: baseHash, base: base, tip: ours).change {
          case .factors(let ou, let ov, let orank):
            var nu = [Double](repeating: 0, count: rows * (rank + orank))
            var nv = [Double](repeating: 0, count: cols * (rank + orank))
            for i in 0..<rows {
              for r in 0..<rank { nu[i * (rank + orank) + r] = u[i * rank + r] }
              for r in 0..<orank { nu[i * (rank + orank) + rank + r] = -Double(ou[i * orank + r]) }
            }
            for j in 0..<cols {
              for r in 0..<rank { nv[j * (rank + orank) + r] = v[j * rank + r] }
              for r in 0..<orank { nv[j * (rank + orank) + rank + r] = Double(ov[j * orank + r]) }
            }
            (u, v, rank) = (nu, nv, rank + orank)
          case .dense, .exactFactors:
            throw RepositoryError.cannotResolve(reason: "tensor '\(tensor)' has a dense change on HEAD's side")
          }
        }
        resolvePlan.append(PlannedChange(name: tensor, change: .exactFactors(u: u, v: v, rank: rank)))
      }
    }
    var scores: [String: Double] = [:]
    let allEdits = ourEdits + theirEdits
    if !allEdits.isEmpty {
      scores["sum"] = try meanRetention(of: allEdits, applying: sumPlan, on: ours)
      if !resolvePlan.isEmpty { scores["resolve"] = try meanRetention(of: allEdits, applying: resolvePlan, on: ours) }
    }
    let plan = strategy == .sum ? sumPlan : resolvePlan
    var text = message ?? "Merge '\(name)' (strategy \(strategy.rawValue))"
    if !scores.isEmpty {
      text += "\n\nmean retention of the \(allEdits.map(\.count).reduce(0, +)) recorded edits:"
      for key in scores.keys.sorted() { text += String(format: " %@ %.4f", key, scores[key] ?? 0) }
    }
    text += "\n"
    let result = try commitChanges(
      plan, message: text, method: "merge-\(strategy.rawValue)", details: ["merged": theirs.hex, "base": base.hex],
      parent: ours, mergedParents: [theirs], origHead: ours)
    return MergeResult(kind: .merged, commit: result.commit, record: result.record, scores: scores)
  }

  /// The recorded edits in `tip`'s history since `base`. With `requireKeys`, a commit that
  /// changed weights without recording keys is refused by name.
  func recordedEdits(from tip: ObjectID, since base: ObjectID, requireKeys: Bool) throws -> [RecordedEdit] {
    var out: [RecordedEdit] = []
    var missing: [String] = []
    for id in try git.walk(from: [tip], hiding: [base], reverse: true) {
      if let edit = try recordedEdit(id) {
        out.append(edit)
      } else if let record = try editRecord(of: contents(of: id)), !record.changes.isEmpty,
        !record.method.hasPrefix("merge")
      {
        missing.append("\(id.shortHex) (\(try commitInfo(id).summary))")
      }
    }
    if requireKeys && !missing.isEmpty {
      throw RepositoryError.cannotResolve(
        reason: "commit\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")) recorded no keys")
    }
    return out
  }

  /// Mean retention of `edits` if `plan` were applied on top of `commit`.
  func meanRetention(of edits: [RecordedEdit], applying plan: [PlannedChange], on commit: ObjectID) throws -> Double {
    var total = 0.0
    var count = 0
    var revisedCache: [String: [Float]] = [:]
    for edit in edits {
      let revised =
        try revisedCache[edit.tensor]
        ?? {
          var (w, shape) = try floatTensor(edit.tensor, at: commit)
          let (rows, cols) = (shape[0], shape[1])
          for change in plan where change.name == edit.tensor {
            switch change.change {
            case .factors(let u, let v, let rank):
              for i in 0..<rows {
                for j in 0..<cols {
                  var d = 0.0
                  for r in 0..<rank { d += Double(u[i * rank + r]) * Double(v[j * rank + r]) }
                  w[i * cols + j] = Float(Double(w[i * cols + j]) + d)
                }
              }
            case .exactFactors(let u, let v, let rank):
              for i in 0..<rows {
                for j in 0..<cols {
                  var d = 0.0
                  for r in 0..<rank { d += u[i * rank + r] * v[j * rank + r] }
                  w[i * cols + j] = Float(Double(w[i * cols + j]) + d)
                }
              }
            case .dense(let diff):
              for i in w.indices { w[i] = Float(Double(w[i]) + diff[i]) }
            }
          }
          return w
        }()
      revisedCache[edit.tensor] = revised
      guard let parent = try commitInfo(edit.commit).parents.first else { continue }
      let original = try floatTensor(edit.tensor, at: parent).values
      let values = try RepositoryError.applying(to: edit.tensor) {
        try revised.withUnsafeBufferPointer { r in
          try original.withUnsafeBufferPointer { o in
            try EditSolvers.retention(
              revised: r, original: o, dOut: edit.dOut, dIn: edit.dIn, weightIsTransposed: edit.transposed,
              keys: edit.keys, values: edit.values)
          }
        }
      }
      for value in values where value.isFinite {
        total += value
        count += 1
      }
    }
    return count > 0 ? total / Double(count) : .nan
  }
}

extension Optional {
  func unwrap(_ what: String) throws -> Wrapped {
    guard let self else {
      throw RepositoryError.corruptObject(what: "tensor '\(what)'", reason: "missing from the commit")
    }
    return self
  }
}
