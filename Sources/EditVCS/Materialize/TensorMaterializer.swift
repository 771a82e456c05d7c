import Apply
import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Rebuilds a tensor's exact bytes at a commit from the stored states.
///
/// A state is `full` (complete), `reference` (complete, read from the base file), or a
/// `low_rank` change of an earlier state. The chain is followed back through first parents
/// until a complete state, or a state whose bytes the caller already has (the working
/// model's own tensor, when it holds a state on the chain: this is what makes a bisect step
/// or the checkout of a child commit cheap), then replayed forward under the canonical rule.
extension EditRepository {
  /// The chain of states of `tensor` at `commit`, newest first, down to the first complete
  /// state, the caller's current state (`known`), or (`useSnapshots`) a state with a keyframe.
  func stateChain(
    of tensor: String, at commit: ObjectID, stopAtHash known: String? = nil, useSnapshots: Bool = true
  ) throws -> [StoredTensorState] {
    var chain: [StoredTensorState] = []
    let cache = useSnapshots ? snapshots.listed() : nil
    try walkChain(of: tensor, at: commit) { stored, _ in
      chain.append(stored)
      return stored.state.hash != known && cache?.header(stored.state) == nil
    }
    return chain
  }

  /// Visits the states of `tensor` from `commit` back through first parents, newest first, with
  /// the commit at which each was found, until `visit` returns false or after the first state
  /// that is not low-rank (a complete state ends every chain).
  func walkChain(
    of tensor: String, at commit: ObjectID, _ visit: (StoredTensorState, ObjectID) throws -> Bool
  ) throws {
    var current = commit
    guard var tree = try contents(of: commit).tensorTrees[tensor] else {
      throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "has no tensor '\(tensor)'")
    }
    while true {
      let stored = try storedState(tree, tensor: tensor)
      guard try visit(stored, current), stored.state.kind == .lowRank else { return }
      // Find the commit that introduced this state: walk first parents while the entry stays.
      while true {
        guard let parent = try contents(of: current).parents.first else {
          throw RepositoryError.corruptObject(
            what: "tensor '\(tensor)'", reason: "change chain from \(commit.shortHex) ends without a full state")
        }
        guard let parentTree = try contents(of: parent).tensorTrees[tensor] else {
          throw RepositoryError.corruptObject(
            what: "tensor '\(tensor)'", reason: "low-rank state in \(current.shortHex) but absent in its parent")
        }
        current = parent
        if parentTree != tree {
          tree = parentTree
          break
        }
      }
      if stored.state.parentHash != nil, try storedState(tree, tensor: tensor).state.hash != stored.state.parentHash {
        throw RepositoryError.corruptObject(
          what: "tensor '\(tensor)'", reason: "state \(stored.tree.shortHex) does not follow its parent state")
      }
    }
  }

  /// The exact bytes of `tensor` at `commit`.
  /// - Parameter current: the bytes of this tensor the caller has now and their hash; used as
  ///   the starting point when that state lies on the chain.
  func materialize(
    _ tensor: String, at commit: ObjectID, current: CurrentBytes? = nil,
    useSnapshots: Bool = true
  ) throws -> [UInt8] {
    let plan = try planMaterialization(tensor, at: commit, current: current, useSnapshots: useSnapshots)
    guard let bytes = try runMaterialization(plan) else {
      // A damaged snapshot was dropped: rebuild from the object database alone.
      return try materialize(tensor, at: commit, current: current, useSnapshots: false)
    }
    return bytes
  }

  /// Reads from the object database (on the calling thread: libgit2 handles are not shared)
  /// everything the rebuild of `tensor` at `commit` needs, so `runMaterialization` can run on
  /// any thread.
  func planMaterialization(
    _ tensor: String, at commit: ObjectID, current: CurrentBytes? = nil,
    useSnapshots: Bool = true
  ) throws -> MaterializationPlan {
    let cache = snapshots.listed()
    var chain: [StoredTensorState] = []
    var keyframe: (header: KeyframeHeader, commit: ObjectID)?
    try timed("state chain of '\(tensor)'") {
      try walkChain(of: tensor, at: commit) { stored, at in
        chain.append(stored)
        guard stored.state.kind == .lowRank, stored.state.hash != current?.hash else { return false }
        if useSnapshots, let header = cache.header(stored.state) {
          keyframe = (header, at)
          return false
        }
        return true
      }
    }
    guard let oldest = chain.last else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "no state at \(commit.shortHex)")
    }
    var start: MaterializationPlan.Start
    var startState = oldest.state
    var segment: MaterializationPlan.Segment?
    if let current, oldest.state.hash == current.hash {
      start = .current(current.read)
    } else if let keyframe {
      if keyframe.header.kind == .standalone {
        start = .standalone
      } else if let found = try keyframeSegment(tensor, keyframe: keyframe.header, at: keyframe.commit) {
        (start, startState, segment) = found
      } else {
        // A keyframe whose anchor is not on the chain (or gone): drop it, plan without keyframes.
        cache.remove(keyframe.header.hash)
        return try planMaterialization(tensor, at: commit, current: current, useSnapshots: false)
      }
    } else if oldest.state.kind == .lowRank {
      // A chain may end on a low-rank state only when it is the caller's current state.
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "chain has no starting state")
    } else {
      start = try completeSource(oldest, tensor: tensor)
    }
    let steps = try chain.dropLast().reversed().map { stored in
      MaterializationPlan.Step(
        state: stored.state, factors: try encodedFactors(of: stored, tensor: tensor),
        residual: try stored.blobs[TreeEntryName.residual].map { try git.readBlob($0) })
    }
    return MaterializationPlan(
      tensor: tensor, revision: commit, start: start, startState: startState, segment: segment, steps: steps,
      target: chain[0].state, saveKeyframeAfterLongReplay: useSnapshots)
  }

  /// The start and the segment of a residual keyframe found at `commit`: the chain is walked on
  /// back to the keyframe's anchor, which must be a complete state or have a standalone keyframe.
  /// Nil when the anchor is not where the keyframe says.
  func keyframeSegment(_ tensor: String, keyframe: KeyframeHeader, at commit: ObjectID) throws -> (
    MaterializationPlan.Start, TensorState, MaterializationPlan.Segment
  )? {
    var states: [StoredTensorState] = []
    var anchor: StoredTensorState?
    try walkChain(of: tensor, at: commit) { stored, _ in
      if stored.state.hash == keyframe.anchor && !states.isEmpty {
        anchor = stored
        return false
      }
      states.append(stored)
      return states.count <= keyframe.stateCount
    }
    guard let anchor, states.count == keyframe.stateCount, states.first?.state.hash == keyframe.hash,
      let target = states.first?.state
    else { return nil }
    let start: MaterializationPlan.Start
    if anchor.state.kind != .lowRank {
      start = try completeSource(anchor, tensor: tensor)
    } else if snapshots.header(anchor.state)?.kind == .standalone {
      start = .standalone
    } else {
      return nil
    }
    let factors = try states.reversed().map { try encodedFactors(of: $0, tensor: tensor) }
    return (start, anchor.state, .init(state: target, factors: factors))
  }

  /// What rebuilds tensors from plans, on any thread: the snapshot cache and the trace, no
  /// libgit2 handle.
  var rebuilder: TensorRebuilder {
    TensorRebuilder(snapshots: snapshots, trace: environment.tracePerformance, workspaces: decodeWorkspaces)
  }

  /// Rebuilds the tensor a plan describes on this thread (see `TensorRebuilder.run`), a complete
  /// start state's chunks decoded on `environment.workerThreads` threads.
  func runMaterialization(_ plan: MaterializationPlan) throws -> [UInt8]? {
    var rebuilder = self.rebuilder
    rebuilder.decodeWorkers = environment.workerThreads
    return try rebuilder.run(plan)
  }

  /// Where the bytes of a `full` or `reference` state come from.
  func completeSource(_ stored: StoredTensorState, tensor: String) throws -> MaterializationPlan.Start {
    let state = stored.state
    switch state.kind {
    case .full:
      return .full(chunks: try (0..<(state.chunkCount ?? 0)).map { try storedChunk(stored, index: $0, tensor: tensor) })
    case .reference:
      guard let path = state.referencePath else {
        throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "reference state without a path")
      }
      try checkTrustedReference(path, tensor: tensor)
      return .reference(path: path)
    case .lowRank:
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "low-rank state has no bytes of its own")
    }
  }

  /// Chunk `index` of a `full` state: a loose chunk is read in place by the worker, a packed one
  /// (after gc or a clone) now, on this thread (libgit2's).
  func storedChunk(_ stored: StoredTensorState, index: Int, tensor: String) throws -> MaterializationPlan.Chunk {
    guard let id = stored.blobs[TreeEntryName.chunk(index)] else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "missing \(TreeEntryName.chunk(index))")
    }
    if let loose = try RepositoryError.wrap("reading tensor '\(tensor)'", { try git.looseBlob(id) }) {
      return .loose(loose)
    }
    return .packed(try RepositoryError.wrap("reading tensor '\(tensor)'", { try git.lookupBlob(id) }))
  }

  /// Loads a low-rank state's factors.
  func factors(of stored: StoredTensorState, tensor: String) throws -> (
    u: [Float], v: [Float], rows: Int, cols: Int, rank: Int
  ) {
    let f = try encodedFactors(of: stored, tensor: tensor)
    let (u, v) = try TensorRebuilder.decodedFactors(f)
    return (u, v, f.rows, f.cols, f.rank)
  }

  /// A low-rank state's factor blobs as stored (decoded when applied, one step at a time).
  func encodedFactors(of stored: StoredTensorState, tensor: String) throws -> MaterializationPlan.Factors {
    let state = stored.state
    guard let rank = state.rank, let rows = state.rows, let cols = state.cols, rows * cols == state.elementCount else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "low-rank state without rows/cols/rank")
    }
    if rank == 0 { return .init(u: [], v: [], rows: rows, cols: cols, rank: 0) }
    guard let uID = stored.blobs[TreeEntryName.u], let vID = stored.blobs[TreeEntryName.v] else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "missing factor blobs")
    }
    return .init(u: try git.readBlob(uID), v: try git.readBlob(vID), rows: rows, cols: cols, rank: rank)
  }
}

/// Rebuilds tensors from plans (`EditRepository.planMaterialization`) on any thread: it holds no
/// libgit2 handle, only the snapshot folder and the performance trace, both safe to share.
struct TensorRebuilder: Sendable {
  let snapshots: SnapshotCache
  let trace: (@Sendable (String) -> Void)?
  /// Where chunk decodes take their scratch buffers from.
  let workspaces: DecodeWorkspacePool
  /// Threads that work on one tensor together: a chunk of a complete state decoded, a low-rank
  /// state's contexts and reconstruction (1 on a pipeline's workers while they rebuild tensors
  /// side by side): the bytes are the same for any count.
  var decodeWorkers = 1

  /// Runs `body`, reporting its wall time to the performance trace when one is set.
  func timed<T>(_ phase: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
    try timePhase(trace, phase(), body)
  }

  /// Rebuilds the tensor a plan describes and checks it against the target state's hash.
  /// Returns nil when the plan uses a keyframe that turned out missing or damaged (it is
  /// deleted; plan again without keyframes).
  func run(_ plan: MaterializationPlan) throws -> [UInt8]? {
    let tensor = plan.tensor
    var bytes: [UInt8]
    switch plan.start {
    case .current(let read):
      // Read on this worker thread, into the buffer the replay then updates in place.
      bytes = try timed("read current bytes") { try read() }
    case .standalone:
      guard let loaded = timed("load standalone keyframe", { snapshots.loadStandalone(plan.startState) }) else {
        return nil
      }
      bytes = loaded
    case .full(let chunks):
      bytes = try timed("complete bytes (full)") {
        try plan.decodingStoredData { try decodeFull(plan.startState, chunks: chunks, tensor: tensor) }
      }
    case .reference(let path):
      bytes = try timed("complete bytes (reference)") {
        try referenceBytes(plan.startState, path: path, tensor: tensor)
      }
    }
    if let segment = plan.segment {
      let applied = try timed("apply keyframe (\(segment.factors.count) states)") {
        try applyKeyframe(segment, to: &bytes, tensor: tensor)
      }
      guard applied else { return nil }
    }
    try timed("replay of '\(tensor)': \(plan.steps.count) states after its start") {
      try replay(plan, to: &bytes)
    }
    let actual = timed("verify hash") { bytes.withUnsafeBytes { ContentHash.of($0).description } }
    guard actual == plan.target.hash else {
      throw RepositoryError.hashMismatch(
        tensor: tensor, revision: plan.revision.shortHex, expected: plan.target.hash, actual: actual)
    }
    saveKeyframeIfLongReplay(plan, bytes: bytes)
    return bytes
  }

  /// After a replay that reached `EditRepository.maxReplayCost` (no keyframe within reach: a
  /// clone, a trimmed cache, commits made elsewhere), saves a standalone keyframe of the target,
  /// within the cache's cap, so the next checkout of it, and commits on top, start there. Never
  /// fails the checkout: a keyframe is only a cache.
  private func saveKeyframeIfLongReplay(_ plan: MaterializationPlan, bytes: [UInt8]) {
    let state = plan.target
    let cost = plan.steps.reduce(0) { $0 + EditRepository.replayCost($1.state, hasResidual: $1.residual != nil) }
    guard plan.saveKeyframeAfterLongReplay, cost >= EditRepository.maxReplayCost, state.kind == .lowRank,
      KeyframeCodec.supports(state.dtype), snapshots.capBytes > 0, snapshots.header(state) == nil
    else { return }
    timed("save keyframe of '\(plan.tensor)' after replaying \(plan.steps.count) states") {
      let header = KeyframeHeader.standalone(of: state)
      guard let payload = try? bytes.withUnsafeBytes({ try KeyframeCodec.encodeStandalone($0, dtype: state.dtype) })
      else { return }
      snapshots.save(header.encoded() + payload, hash: state.hash)
    }
  }

  /// Applies the plan's states one after another (runs of F32 rank-≤1 states fused).
  private func replay(_ plan: MaterializationPlan, to bytes: inout [UInt8]) throws {
    let (steps, tensor) = (plan.steps, plan.tensor)
    var next = 0
    while next < steps.count {
      // Runs of F32 rank-one states without a residual (`commit-factors`, `--delta`) go through
      // the element-major kernel: each element through the whole run in registers.
      var end = next
      while end < steps.count, end - next < Self.factorRunLimit, Self.isFactorOnlyRankOne(steps[end]) { end += 1 }
      if end - next >= 2 {
        try timed("apply \(end - next) factor-only states in one pass") {
          try plan.decodingStoredData { try applyFactorRun(steps[next..<end], to: &bytes, tensor: tensor) }
        }
        next = end
        continue
      }
      // Runs of F32 rank-≤1 states (sequential ROME edits) are applied a row block at a time,
      // each block through the whole run while it is in cache; other states one by one.
      end = next
      var residuals = 0
      while end < steps.count, end - next < Self.fusedRunLimit, Self.isFusable(steps[end]) {
        if steps[end].residual != nil {
          guard residuals < Self.fusedRunLength else { break }
          residuals += 1
        }
        end += 1
      }
      if end - next >= 2 {
        try timed("apply \(end - next) states fused") {
          try plan.decodingStoredData { try applyFused(steps[next..<end], to: &bytes, tensor: tensor) }
        }
      } else {
        end = next + 1
        let step = steps[next]
        try timed("apply rank-\(step.state.rank ?? 0) state") {
          try plan.decodingStoredData { try applyLowRank(step, to: &bytes, tensor: tensor) }
        }
      }
      next = end
    }
  }

  /// Streams each chunk from its object into the zstd decoder, which scatters the byte planes
  /// straight into the tensor: no copy of the compressed chunk, no chunk-sized scratch buffer.
  ///
  /// The tensor's buffer is left uninitialized: its pages are touched only as chunks decode
  /// into them, so a repository that declares a huge tensor and holds garbage costs one chunk
  /// of memory before it fails, not the declared size. The chunk ranges cover every byte and the
  /// decoder checks each chunk produced exactly its range, so nothing uninitialized survives.
  private func decodeFull(_ state: TensorState, chunks: [MaterializationPlan.Chunk], tensor: String) throws -> [UInt8] {
    try EditRepository.checkAllocation(state.byteCount, tensor: tensor)
    var out = [UInt8](unsafeUninitializedCapacity: state.byteCount) { _, count in count = state.byteCount }
    try out.withUnsafeMutableBytes { try decode(chunks, of: state, tensor: tensor, into: $0) }
    return out
  }

  /// Decodes `chunks` of the `full` state `state` into `destination`: every chunk into the whole
  /// tensor, or a single chunk into that chunk's bytes alone (each chunk is coded on its own, so
  /// one chunk decodes as a one-chunk tensor of its size, which is how a checkout streams a
  /// complete state chunk by chunk).
  func decode(
    _ chunks: [MaterializationPlan.Chunk], of state: TensorState, tensor: String,
    into destination: UnsafeMutableRawBufferPointer
  ) throws {
    let chunkByteCount = state.chunkByteCount ?? TensorBlobs.chunkByteCount
    let encoding = ChunkEncoding(rawValue: state.chunkEncoding ?? 1) ?? .shuffledZstd
    let packed = chunks.compactMap { chunk -> GitBlob? in
      if case .packed(let blob) = chunk { return blob }
      return nil
    }
    if packed.count == chunks.count {
      // Each chunk is one buffer already (libgit2's): decoded from it, not gathered into a copy.
      try FullTensorCodec.decodeWholeChunks(
        chunkCount: chunks.count, dtype: state.dtype, chunkByteCount: chunkByteCount, encoding: encoding,
        tensor: tensor, into: destination, workspaces: workspaces, workers: decodeWorkers,
        chunkBytes: { i, sink in try sink(packed[i].content) }
      )
      return
    }
    try FullTensorCodec.decode(
      chunkCount: chunks.count, dtype: state.dtype, chunkByteCount: chunkByteCount, encoding: encoding, tensor: tensor,
      into: destination, workspaces: workspaces, workers: decodeWorkers
    ) { i, sink in
      switch chunks[i] {
      case .packed(let blob): try sink(blob.content)
      case .loose(let blob): try blob.forEachPiece(sink)
      }
    }
  }

  /// The bytes of a `reference` state, read from the base file outside the repository: a regular
  /// file only (never a FIFO or a device, never through a symbolic link), checked against the
  /// state's hash.
  private func referenceBytes(_ state: TensorState, path: String, tensor: String) throws -> [UInt8] {
    let file = try SafetensorsFile(path: path)
    guard let info = file.tensor(named: tensor), info.byteCount == state.byteCount else {
      throw RepositoryError.referenceBaseChanged(path: path, tensor: tensor)
    }
    let bytes = try file.read(info)
    guard bytes.withUnsafeBytes({ ContentHash.of($0).description }) == state.hash else {
      throw RepositoryError.referenceBaseChanged(path: path, tensor: tensor)
    }
    return bytes
  }

  /// The factors of an encoded state; rank 0 (a state that only differs by its residual) has none.
  static func decodedFactors(_ f: MaterializationPlan.Factors) throws -> (u: [Float], v: [Float]) {
    guard f.rank > 0 else { return ([], []) }
    return (
      try TensorBlobs.decodeFactor(f.u, elementCount: f.rows * f.rank),
      try TensorBlobs.decodeFactor(f.v, elementCount: f.cols * f.rank)
    )
  }

  /// States with a residual applied together a block at a time; their decoded residuals are held
  /// at once (~2.4 MB each for a 4M-element tensor with 5% of elements off by one ulp).
  static let fusedRunLength = 4

  /// States applied together a block at a time in all (runs of factor-only states go to
  /// `applyFactorRun` instead).
  static let fusedRunLimit = 32

  /// Factor-only states applied by one call of the element-major kernel: its Float64 copies of
  /// the factors take `(rows + cols) × 8` bytes per state (~14.7 MB at 128 states of a
  /// 14336-row tensor).
  static let factorRunLimit = 128

  /// An F32 rank-one state without a residual: all of it is its factors.
  static func isFactorOnlyRankOne(_ step: MaterializationPlan.Step) -> Bool {
    step.state.dtype == .f32 && step.factors.rank == 1 && step.residual == nil
  }

  /// Applies F32 rank-one factor-only states (oldest first) with
  /// `CanonicalRule.addRankOneRunF32`: the bytes of applying them one after another.
  func applyFactorRun(_ steps: ArraySlice<MaterializationPlan.Step>, to bytes: inout [UInt8], tensor: String) throws {
    guard let first = steps.first?.factors else { return }
    let (rows, cols) = (first.rows, first.cols)
    let decoded = try steps.map { step -> (u: [Float], v: [Float]) in
      let f = step.factors
      guard bytes.count == step.state.byteCount, f.rows == rows, f.cols == cols, rows * cols * 4 == bytes.count
      else {
        throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "state size differs from its parent")
      }
      return try Self.decodedFactors(f)
    }
    let v = decoded.flatMap(\.v)
    // Row parts on `decodeWorkers` threads (each element's chain is its own: the same bytes for
    // any count), each with its rows of every state's u, state after state as the kernel reads them.
    let parts = ParallelParts.ranges(rows, parts: decodeWorkers, minimum: max(1, (1 << 18) / max(cols, 1)))
    let partU = parts.map { part in decoded.flatMap { $0.u[part] } }
    bytes.withUnsafeMutableBytes { raw in
      guard let base = raw.baseAddress else { return }
      v.withUnsafeBufferPointer { vs in
        guard let vBase = vs.baseAddress else { return }
        nonisolated(unsafe) let (base, v) = (base, vBase)
        ParallelParts.run(parts.count, workers: decodeWorkers) { part in
          partU[part].withUnsafeBufferPointer { u in
            guard let u = u.baseAddress else { return }
            CanonicalRule.addRankOneRunF32(
              base + parts[part].lowerBound * cols * 4, rows: parts[part].count, cols: cols, count: decoded.count,
              u: u, v: v, storage: .init(.f32))
          }
        }
      }
    }
  }

  /// A conditioned residual is decoded against its parent's bytes, which a fused run does not
  /// have before it starts: such a state is applied on its own.
  static func isFusable(_ step: MaterializationPlan.Step) -> Bool {
    step.state.dtype == .f32 && step.factors.rank <= 1 && !(step.residual.map(ResidualCodec.needsContexts) ?? false)
  }

  /// Applies F32 rank-≤1 states (oldest first) a row block at a time. Each element's result
  /// depends only on its own value, u_i, v_j and its residual entry, so the bytes equal those of
  /// applying the states one after another.
  func applyFused(_ steps: ArraySlice<MaterializationPlan.Step>, to bytes: inout [UInt8], tensor: String) throws {
    let decoded = try steps.map { step -> (u: [Float], v: [Float], residual: DecodedResidual?) in
      let f = step.factors
      guard bytes.count == step.state.byteCount, f.rows * f.cols == step.state.elementCount else {
        throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "state size differs from its parent")
      }
      let (u, v) = try Self.decodedFactors(f)
      return (
        u, v,
        try step.residual.map {
          try ResidualCodec.decode($0, dtype: step.state.dtype, elementCount: step.state.elementCount)
        }
      )
    }
    guard let factors = steps.first?.factors else { return }
    let (rows, cols) = (factors.rows, factors.cols)
    guard steps.allSatisfy({ $0.factors.rows == rows && $0.factors.cols == cols }) else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "states of different shapes in one chain")
    }
    let blockRows = max(1, (256 << 10) / max(1, cols * 4))
    let binary32 = CanonicalRule.Storage(.f32)
    var cursors = [Int](repeating: 0, count: decoded.count)
    bytes.withUnsafeMutableBytes { raw in
      guard let base = raw.baseAddress else { return }
      var row = 0
      while row < rows {
        let count = min(blockRows, rows - row)
        let elements = (row * cols)..<((row + count) * cols)
        for (k, state) in decoded.enumerated() {
          if !state.u.isEmpty {
            state.u.withUnsafeBufferPointer { u in
              state.v.withUnsafeBufferPointer { v in
                guard let u = u.baseAddress, let v = v.baseAddress else { return }
                CanonicalRule.addRankOneF32(
                  base + elements.lowerBound * 4, rows: count, cols: cols, u: u + row, v: v, storage: binary32)
              }
            }
          }
          if let residual = state.residual {
            let entries = residual.entries(in: elements, from: cursors[k])
            residual.add(to: base, entries: entries)
            cursors[k] = entries.upperBound
          }
        }
        row += count
      }
    }
  }

  /// `bytes = round(bytes + U·Vᵀ) + residual`, in place.
  func applyLowRank(_ step: MaterializationPlan.Step, to bytes: inout [UInt8], tensor: String) throws {
    let state = step.state
    let f = step.factors
    guard bytes.count == state.byteCount else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "state size differs from its parent")
    }
    let (u, v) = try Self.decodedFactors(f)
    // A conditioned residual's contexts come from the parent's bytes, before they change.
    let contexts =
      step.residual.map(ResidualCodec.needsContexts) == true
      ? try contextsOfConditioned(step, parent: bytes, u: u, v: v) : nil
    try bytes.withUnsafeMutableBytes { raw in
      EditRepository.applyCanonical(
        to: raw, dtype: state.dtype, rows: f.rows, cols: f.cols, u: u, v: v, rank: f.rank, workers: decodeWorkers)
      if let residual = step.residual {
        try RoundingContexts.with(contexts) {
          try ResidualCodec.apply(
            residual, to: raw, dtype: state.dtype, elementCount: state.elementCount, contexts: $0)
        }
      }
    }
  }

  /// The rounding contexts a conditioned residual is decoded against; only an F32 state has one.
  private func contextsOfConditioned(
    _ step: MaterializationPlan.Step, parent: [UInt8], u: [Float], v: [Float]
  ) throws -> [UInt8] {
    let f = step.factors
    guard step.state.dtype == .f32, parent.count == f.rows * f.cols * 4 else {
      throw DeltaStoreError.corruptResidual(
        reason: "conditioned residual for a \(step.state.dtype.rawValue) tensor; only F32 has one")
    }
    return timed("rounding contexts") {
      RoundingContexts.compute(
        parent: parent, rows: f.rows, cols: f.cols, u: u, v: v, rank: f.rank, workers: decodeWorkers)
    }
  }
}
