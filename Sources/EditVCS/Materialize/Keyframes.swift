import Apply
import DeltaStore
import Foundation

/// When a commit leaves a keyframe in the local cache, and how keyframes are read back.
///
/// A keyframe costs bytes; it is made only when the states it lets a replay skip have cost at
/// least twice as much (the stored bytes of their objects), so the cache stays within half of the
/// history's own bytes, whatever the model (docs/FORMAT.md, "Snapshots: bounding the replay").
extension EditRepository {
  /// A residual keyframe spans at most this total rank from its anchor: the canonical pass that
  /// rebuilds it costs about one multiply-add per element and unit of rank.
  static let maxKeyframeRank = 128

  /// What a replay may cost after its start, in units of one factor-only F32 rank-one state (its
  /// factors alone: the element-major kernel applies it in a few operations per element,
  /// `CanonicalRule.addRankOneRunF32`); any other state costs `heavyStateCost` (a residual to
  /// decode, a rank-r pass, another dtype). A commit whose state would bring the cost since the
  /// latest keyframe or complete state to this bound makes a keyframe whatever the byte budget
  /// says (the cache's cap still holds): at most 32 states with residuals, or 512 factor-only
  /// ones, are replayed one by one. It also bounds how far back a commit looks for that
  /// keyframe, so a commit's cost does not grow with the history, and a checkout whose replay
  /// reaches it saves a keyframe of its target (a clone, a trimmed cache).
  static let maxReplayCost = 512

  /// The replay cost of a state that is not factor-only F32 rank-one (see `maxReplayCost`).
  static let heavyStateCost = 16

  /// A state's share of `maxReplayCost`.
  static func replayCost(_ state: TensorState, hasResidual: Bool) -> Int {
    state.kind == .lowRank && state.dtype == .f32 && state.rank == 1 && !hasResidual ? 1 : heavyStateCost
  }

  static func replayCost(_ stored: StoredTensorState) -> Int {
    replayCost(stored.state, hasResidual: stored.blobs[TreeEntryName.residual] != nil)
  }

  /// Bytes of the objects of one stored state (factors, residual, meta, chunks).
  func ownByteCount(_ stored: StoredTensorState) throws -> Int {
    try stored.blobs.values.reduce(0) { $0 + (try git.objectSize($1)) }
  }

  /// After a commit made `state` (low-rank, `bytes` at hand, `factors` its own, its objects
  /// `ownBytes`) on top of `parent`: saves a keyframe of it when the states since the latest
  /// keyframe (or complete state) have cost enough. Never fails the commit: a keyframe is only a
  /// cache.
  func saveKeyframeIfDue(
    _ tensor: String, bytes: UnsafeRawBufferPointer, state: TensorState, factors: DecodedFactors, ownBytes: Int,
    parent: ObjectID
  ) {
    let cache = snapshots
    guard cache.capBytes > 0, state.kind == .lowRank, KeyframeCodec.supports(state.dtype) else { return }
    do {
      try timed("keyframe check of '\(tensor)'") {
        try saveKeyframe(tensor, bytes: bytes, state: state, factors: factors, ownBytes: ownBytes, parent: parent)
      }
    } catch {}
  }

  private func saveKeyframe(
    _ tensor: String, bytes: UnsafeRawBufferPointer, state: TensorState, factors: DecodedFactors, ownBytes: Int,
    parent: ObjectID
  ) throws {
    let cache = snapshots
    var own = ownBytes
    let ownCost = Self.replayCost(state, hasResidual: (state.residualNonzeroCount ?? 0) > 0)
    var cost = ownCost
    // The parent's progress since its latest start, when this repository recorded it: a commit
    // that is due neither by cost nor by bytes then needs no walk (on a chain of factor-only
    // states the walk could span hundreds of states, thousands of commits).
    let minimumExpected = state.elementCount * 7 / 16
    if let parentHash = state.parentHash, let known = cache.progress(of: tensor), known.hash == parentHash {
      let progress = ChainProgress(
        hash: state.hash, cost: known.cost + ownCost, ownBytes: known.ownBytes + ownBytes,
        expected: max(known.expected, minimumExpected))
      if progress.cost < Self.maxReplayCost && progress.ownBytes < 2 * progress.expected {
        cache.saveProgress(progress, of: tensor)
        return
      }
    }
    var since: [StoredTensorState] = []  // after the latest keyframe, newest first
    var latest: (stored: StoredTensorState, header: KeyframeHeader?, commit: ObjectID)?
    try timed("walk back of '\(tensor)' to its start") {
      try walkChain(of: tensor, at: parent) { stored, at in
        if stored.state.kind != .lowRank {
          latest = (stored, nil, at)
          return false
        }
        if let header = cache.header(stored.state) {
          latest = (stored, header, at)
          return false
        }
        since.append(stored)
        own += try ownByteCount(stored)
        cost += Self.replayCost(stored)
        return cost <= Self.maxReplayCost
      }
    }
    // Due by bytes once the states since the latest keyframe cost twice what the next keyframe
    // should: as much as the latest residual keyframe, else ~3.5 bits per element (3.3–3.9
    // measured on F32 chains of rank-1 commits), so that few encodings are thrown away. Due by
    // replay cost once a replay from there would reach `maxReplayCost`: factor-only chains
    // (`commit-factors`, `--delta`: ~20 KB per rank-1 edit of a 4096×1024 tensor) pay for a
    // keyframe in bytes only after ~180 states, and this bounds their replays all the same.
    var expected = minimumExpected
    if let latest, latest.header?.kind == .residual {
      expected = max(expected, cache.byteCount(of: latest.stored.state.hash))
    }
    // Recorded before deciding: when no keyframe is kept below, the next commit goes on from here.
    cache.saveProgress(.init(hash: state.hash, cost: cost, ownBytes: own, expected: expected), of: tensor)
    let dueByCount = cost >= Self.maxReplayCost
    guard dueByCount || own >= 2 * expected else { return }
    // A residual against the latest complete state or standalone keyframe plus every factor
    // since, while that spans at most `maxKeyframeRank`; else (or when the walk found no start
    // within reach: a clone, a trimmed cache) a standalone copy (~0.85× raw for F32), from which
    // the next residuals start.
    var residual: (start: MaterializationPlan.Start, anchor: TensorState, factors: [DecodedFactors])?
    if let latest, own < state.byteCount * 2 {
      var start: MaterializationPlan.Start?
      var anchorState = latest.stored.state
      var older: [MaterializationPlan.Factors] = []
      if let kept = latest.header {
        if kept.kind == .standalone {
          start = .standalone
        } else if let found = try keyframeSegment(tensor, keyframe: kept, at: latest.commit) {
          (start, anchorState, older) = (found.0, found.1, found.2.factors)
        }
      } else {
        start = try completeSource(latest.stored, tensor: tensor)
      }
      older += try since.reversed().map { try encodedFactors(of: $0, tensor: tensor) }
      if let start, older.reduce(factors.rank, { $0 + $1.rank }) <= Self.maxKeyframeRank {
        var decoded = try older.map { f -> DecodedFactors in
          let (u, v) = try TensorRebuilder.decodedFactors(f)
          return DecodedFactors(u: u, v: v, rows: f.rows, cols: f.cols, rank: f.rank)
        }
        decoded.append(factors)
        residual = (start, anchorState, decoded)
      }
    }
    let header: KeyframeHeader
    let payload: [UInt8]
    if let residual {
      let plan = MaterializationPlan(
        tensor: tensor, revision: parent, start: residual.start, startState: residual.anchor, segment: nil,
        steps: [], target: residual.anchor)
      guard var predicted = try rebuilder.run(plan) else { return }
      try TensorRebuilder.applyConcatenated(residual.factors, to: &predicted, state: state, tensor: tensor)
      header = KeyframeHeader(
        kind: .residual, hash: state.hash, elementCount: state.elementCount,
        elementWidth: state.dtype.byteCount ?? 0, anchor: residual.anchor.hash, stateCount: residual.factors.count,
        payloadOffset: 0)
      payload = try predicted.withUnsafeBytes {
        try KeyframeCodec.encodeResidual(actual: bytes, predicted: $0, dtype: state.dtype)
      }
    } else {
      guard dueByCount || own >= state.byteCount * 2 else {
        // No residual keyframe within reach: the next try is worth it once a standalone one is.
        cache.saveProgress(.init(hash: state.hash, cost: cost, ownBytes: own, expected: state.byteCount), of: tensor)
        return
      }
      header = KeyframeHeader.standalone(of: state)
      payload = try KeyframeCodec.encodeStandalone(bytes, dtype: state.dtype)
    }
    let file = header.encoded() + payload
    // Within budget (at most half of what the states it stands for cost), unless due by count.
    guard dueByCount || 2 * file.count <= own else {
      // Too large for its budget yet: not tried again before the states since cost twice as much.
      cache.saveProgress(
        .init(hash: state.hash, cost: cost, ownBytes: own, expected: max(expected, file.count)), of: tensor)
      return
    }
    cache.save(file, hash: state.hash)
    if cache.header(state) != nil {
      let next = header.kind == .residual ? max(minimumExpected, file.count) : minimumExpected
      cache.saveProgress(.init(hash: state.hash, cost: 0, ownBytes: 0, expected: next), of: tensor)
    }
  }
}

/// How far a tensor's newest state is from its latest start (keyframe or complete state): the
/// replay cost and the own bytes of the states since, and the size the next keyframe is expected
/// to take. Only a shortcut for the next commit's keyframe decision (`saveKeyframe`): one small
/// file per tensor in the keyframe folder, for the newest state this repository committed.
struct ChainProgress: Equatable {
  var hash: String
  var cost: Int
  var ownBytes: Int
  var expected: Int
}

extension SnapshotCache {
  func progressPath(_ tensor: String) -> String {
    let key = Array(tensor.utf8).withUnsafeBytes { ContentHash.of($0).description }
    return (directory as NSString).appendingPathComponent(
      "progress-" + key.replacingOccurrences(of: ":", with: "-") + ".txt")
  }

  /// The recorded progress of `tensor`'s chain; nil when absent or not four fields.
  func progress(of tensor: String) -> ChainProgress? {
    guard capBytes > 0, let data = FileManager.default.contents(atPath: progressPath(tensor)), data.count < 512
    else { return nil }
    let fields = String(decoding: data, as: UTF8.self).split(separator: " ")
    guard fields.count == 4, let cost = Int(fields[1]), let own = Int(fields[2]),
      let expected = Int(fields[3].trimmingCharacters(in: .whitespacesAndNewlines)), cost >= 0, own >= 0,
      expected >= 0
    else { return nil }
    return ChainProgress(hash: String(fields[0]), cost: cost, ownBytes: own, expected: expected)
  }

  /// Records `progress` for `tensor` (temporary file and rename; a lost write only costs a walk).
  func saveProgress(_ progress: ChainProgress, of tensor: String) {
    guard capBytes > 0 else { return }
    let text = Array("\(progress.hash) \(progress.cost) \(progress.ownBytes) \(progress.expected)\n".utf8)
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    _ = try? text.withUnsafeBytes {
      try AtomicFileWriter.replace(progressPath(tensor), with: $0, hook: nil, durable: false)
    }
  }
}

/// Decoded Float32 factors of one low-rank state.
struct DecodedFactors {
  var u: [Float]
  var v: [Float]
  var rows: Int
  var cols: Int
  var rank: Int
}

extension TensorRebuilder {
  /// `bytes = round(bytes + Σ_states U·Vᵀ)` in one canonical pass: the states' factors side by
  /// side (oldest first), so the Float64 sum runs over all of them before the single rounding.
  static func applyConcatenated(
    _ factors: [DecodedFactors], to bytes: inout [UInt8], state: TensorState, tensor: String
  ) throws {
    guard let rows = factors.first?.rows, let cols = factors.first?.cols,
      factors.allSatisfy({ $0.rows == rows && $0.cols == cols }), rows * cols == state.elementCount,
      bytes.count == state.byteCount
    else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "states of different shapes in one chain")
    }
    let rank = factors.reduce(0) { $0 + $1.rank }
    guard rank > 0 else { return }
    var u = [Float](repeating: 0, count: rows * rank)
    var v = [Float](repeating: 0, count: cols * rank)
    var offset = 0
    for f in factors where f.rank > 0 {
      for i in 0..<rows {
        for r in 0..<f.rank { u[i * rank + offset + r] = f.u[i * f.rank + r] }
      }
      for j in 0..<cols {
        for r in 0..<f.rank { v[j * rank + offset + r] = f.v[j * f.rank + r] }
      }
      offset += f.rank
    }
    bytes.withUnsafeMutableBytes { raw in
      u.withUnsafeBufferPointer { u in
        v.withUnsafeBufferPointer { v in
          CanonicalRule.apply(to: raw, storage: .init(state.dtype), rows: rows, cols: cols, u: u, v: v, rank: rank)
        }
      }
    }
  }

  /// Applies a residual keyframe to the start state's bytes: its states' factors in one pass,
  /// then its residual, checked against its hash. False when the file is missing or does not
  /// give the state (it is deleted; the caller plans again without keyframes).
  func applyKeyframe(_ segment: MaterializationPlan.Segment, to bytes: inout [UInt8], tensor: String) throws -> Bool {
    let state = segment.state
    guard let file = snapshots.read(state.hash, limit: 2 * state.byteCount + 4096),
      let header = KeyframeHeader.parse(Array(file.prefix(KeyframeHeader.maxHeaderBytes))),
      header.kind == .residual, header.matches(state), header.stateCount == segment.factors.count
    else {
      snapshots.remove(state.hash)
      return false
    }
    let decoded = try segment.factors.map { f -> DecodedFactors in
      let (u, v) = try Self.decodedFactors(f)
      return DecodedFactors(u: u, v: v, rows: f.rows, cols: f.cols, rank: f.rank)
    }
    try Self.applyConcatenated(decoded, to: &bytes, state: state, tensor: tensor)
    do {
      try file.withUnsafeBytes { payload in
        try bytes.withUnsafeMutableBytes {
          try KeyframeCodec.applyResidual(
            UnsafeRawBufferPointer(rebasing: payload[header.payloadOffset...]), to: $0, dtype: state.dtype)
        }
      }
    } catch {
      snapshots.remove(state.hash)
      return false
    }
    guard bytes.withUnsafeBytes({ ContentHash.of($0).description }) == state.hash else {
      snapshots.remove(state.hash)
      return false
    }
    return true
  }
}

extension SnapshotCache {
  /// The bytes of a standalone keyframe of `state`, checked against its hash; nil (and the file
  /// deleted) when missing, damaged or not standalone.
  func loadStandalone(_ state: TensorState) -> [UInt8]? {
    guard let file = read(state.hash, limit: 2 * state.byteCount + 4096),
      let header = KeyframeHeader.parse(Array(file.prefix(KeyframeHeader.maxHeaderBytes))),
      header.kind == .standalone, header.matches(state)
    else {
      remove(state.hash)
      return nil
    }
    var out = [UInt8](repeating: 0, count: state.byteCount)
    do {
      try file.withUnsafeBytes { bytes in
        try out.withUnsafeMutableBytes {
          try KeyframeCodec.decodeStandalone(
            UnsafeRawBufferPointer(rebasing: bytes[header.payloadOffset...]), into: $0, dtype: state.dtype)
        }
      }
    } catch {
      remove(state.hash)
      return nil
    }
    guard out.withUnsafeBytes({ ContentHash.of($0).description }) == state.hash else {
      remove(state.hash)
      return nil
    }
    return out
  }
}
