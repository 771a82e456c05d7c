import Apply
import DeltaStore
import Foundation

/// Writes tensor states and commit trees. Every object is written before any reference moves.
extension EditRepository {
  func makeCompressor(level: Int32 = 3) throws -> ZstdCompressor {
    try ZstdCompressor(level: level, workerCount: environment.compressionWorkers)
  }

  func writeBlob(_ bytes: [UInt8]) throws -> ObjectID {
    try RepositoryError.wrap("writing an object to '\(gitDirectory)'") { try git.writeBlob(bytes) }
  }

  func writeTree(_ entries: [GitRepository.TreeEntry]) throws -> ObjectID {
    try RepositoryError.wrap("writing a tree to '\(gitDirectory)'") { try git.writeTree(entries) }
  }

  /// A complete state: the bytes in chunks of ≤ 64 MiB, each as exponent-aligned byte planes
  /// (chunk encoding 2, `PlaneCodec`: raw, zstd or Huffman per plane).
  func writeFullState(
    name: String, dtype: DType, shape: [Int], shard: Int, bytes: UnsafeRawBufferPointer, hash: String
  ) throws -> (tree: ObjectID, storedByteCount: Int) {
    // Level 1: on float weights zstd's higher levels gain <1% and cost 5-10× the time; the
    // exponent plane, where levels matter, is entropy-coded instead.
    let compressor = try makeCompressor(level: 1)
    let chunks = try FullTensorCodec.encode(
      bytes, dtype: dtype, chunkByteCount: TensorBlobs.chunkByteCount, encoding: .planes, compressor: compressor)
    return try writeFullStateTree(
      name: name, dtype: dtype, shape: shape, shard: shard, hash: hash, chunks: try chunks.map { try writeBlob($0) },
      storedByteCount: chunks.reduce(0) { $0 + $1.count })
  }

  /// A state that points at a tensor of a read-only base file (`init --reference-base`).
  func writeReferenceState(
    name: String, dtype: DType, shape: [Int], shard: Int, hash: String, path: String, shardFile: String
  ) throws -> (tree: ObjectID, storedByteCount: Int) {
    let state = TensorState(
      name: name, dtype: dtype, shape: shape, shard: shard, hash: hash, kind: .reference,
      referencePath: path, referenceShardFile: shardFile)
    let meta = try JSONCoding.encode(state)
    return (try writeTree([.init(name: TreeEntryName.meta, id: try writeBlob(meta), isTree: false)]), meta.count)
  }

  /// A low-rank change of the parent state: factors, optional residual, and the metadata.
  func writeLowRankState(
    name: String, dtype: DType, shape: [Int], shard: Int, hash: String, parentHash: String,
    rows: Int, cols: Int, rank: Int, u: [Float], v: [Float], residual: EncodedResidual?,
    approximate: Bool, norms: DeltaNorms
  ) throws -> (tree: ObjectID, storedByteCount: Int, state: TensorState) {
    let compressor = try makeCompressor(level: 3)
    var entries: [GitRepository.TreeEntry] = []
    var stored = 0
    if rank > 0 {
      let uBlob = try TensorBlobs.encodeFactor(u, compressor: compressor)
      let vBlob = try TensorBlobs.encodeFactor(v, compressor: compressor)
      entries.append(.init(name: TreeEntryName.u, id: try writeBlob(uBlob), isTree: false))
      entries.append(.init(name: TreeEntryName.v, id: try writeBlob(vBlob), isTree: false))
      stored += uBlob.count + vBlob.count
    }
    if let residual {
      entries.append(.init(name: TreeEntryName.residual, id: try writeBlob(residual.bytes), isTree: false))
      stored += residual.bytes.count
    }
    let state = TensorState(
      name: name, dtype: dtype, shape: shape, shard: shard, hash: hash, kind: .lowRank,
      parentHash: parentHash, rank: rank, rows: rows, cols: cols,
      residualNonzeroCount: residual?.nonzeroCount ?? 0, approximate: approximate ? true : nil, norms: norms,
      residualFormat: residual.flatMap(Self.residualFormat))
    let meta = try JSONCoding.encode(state)
    entries.append(.init(name: TreeEntryName.meta, id: try writeBlob(meta), isTree: false))
    return (try writeTree(entries), stored + meta.count, state)
  }

  /// The repository format a residual blob needs, nil for 1.
  static func residualFormat(_ residual: EncodedResidual) -> Int? {
    if residual.isConditioned { return conditionedResidualFormatVersion }
    return residual.isRiceCoded ? riceResidualFormatVersion : nil
  }

  /// Where a new commit's side files (`files/`) come from.
  enum SideFileTree {
    /// The first parent's (commits that change tensors only: delta, factors, merge, revert, rebase).
    case inherited
    /// This tree (nil: none), from the working model's folder.
    case tree(ObjectID?)
  }

  /// Writes the root tree and the commit object; moves no reference.
  func writeCommit(
    layout: ModelLayout, headers: [String: [UInt8]], indexBytes: [UInt8]?,
    tensorTrees: [String: ObjectID], record: EditRecord, message: String, parents: [ObjectID],
    extraEntries: [GitRepository.TreeEntry] = [], sideFiles: SideFileTree = .inherited
  ) throws -> ObjectID {
    let filesTree: ObjectID?
    switch sideFiles {
    case .inherited: filesTree = try parents.first.flatMap { try contents(of: $0).filesTree }
    case .tree(let tree): filesTree = tree
    }
    var modelEntries: [GitRepository.TreeEntry] = [
      .init(name: TreeEntryName.layout, id: try writeBlob(try JSONCoding.encode(layout)), isTree: false)
    ]
    for (name, bytes) in headers.sorted(by: { $0.key < $1.key }) {
      modelEntries.append(.init(name: name, id: try writeBlob(bytes), isTree: false))
    }
    if let indexBytes {
      modelEntries.append(.init(name: TreeEntryName.index, id: try writeBlob(indexBytes), isTree: false))
    }
    let tensorEntries = tensorTrees.map {
      GitRepository.TreeEntry(name: TreeName.escape($0.key), id: $0.value, isTree: true)
    }
    // Format 2 or 3 only when needed: a commit without side files, Rice-coded or conditioned
    // residuals or plane-encoded chunks stays readable by older builds.
    let version = max(
      filesTree == nil ? baseFormatVersion : sideFilesFormatVersion,
      try residualFormatVersion(of: tensorTrees, parents: parents),
      try needsPlaneChunks(tensorTrees, parents: parents) ? planeChunksFormatVersion : baseFormatVersion)
    let format = Array("mvc repository format \(version)\n".utf8)
    let root: [GitRepository.TreeEntry] =
      [
        .init(name: TreeEntryName.format, id: try writeBlob(format), isTree: false),
        .init(name: TreeEntryName.model, id: try writeTree(modelEntries), isTree: true),
        .init(name: TreeEntryName.edit, id: try writeBlob(try JSONCoding.encode(record)), isTree: false),
        .init(name: TreeEntryName.tensors, id: try writeTree(tensorEntries), isTree: true),
      ] + extraEntries + (filesTree.map { [.init(name: TreeEntryName.files, id: $0, isTree: true)] } ?? [])
    let tree = try writeTree(root)
    return try RepositoryError.wrap("writing a commit") {
      try git.createCommit(tree: tree, parents: parents, message: message, author: signature())
    }
  }

  /// Whether a commit with these tensor states needs chunk encoding 2 to be read: one of them
  /// is a full state in that encoding, or a low-rank state whose parents' format may have
  /// such a state in its chain (a parent of format ≥ 2).
  func needsPlaneChunks(_ tensorTrees: [String: ObjectID], parents: [ObjectID]) throws -> Bool {
    let parentFormat = try parents.map { try contents(of: $0).formatVersion }.max() ?? baseFormatVersion
    for (name, tree) in tensorTrees {
      let state = try storedState(tree, tensor: name).state
      if state.kind == .full, (state.chunkEncoding ?? 1) >= ChunkEncoding.planes.rawValue { return true }
      if state.kind == .lowRank, parentFormat >= planeChunksFormatVersion { return true }
    }
    return false
  }

  /// The root commit: every tensor stored complete (or by reference to the base file).
  func commitBase(working: WorkingModel, message: String, reference: WorkingModel?) throws -> ObjectID {
    // Taken before the bytes are hashed: the cache is saved only if the files are unchanged since.
    let stats = working.fileStats()
    var trees: [String: ObjectID] = [:]
    var changes: [EditRecord.TensorChange] = []
    let names = working.tensorNames
    var hashes: [String: String] = [:]
    if reference == nil {
      let stored = try timed("store \(names.count) complete states") {
        try storeCompleteStates(of: working) { done, total, bytes in
          self.report("storing base", done, total, bytes: bytes)
        }
      }
      for name in names {
        guard let state = stored[name] else { continue }
        hashes[name] = state.hash
        trees[name] = state.tree
        changes.append(.init(name: name, storage: "full", storedByteCount: state.storedByteCount))
      }
    }
    for (i, name) in names.enumerated() {
      guard let reference, let (shard, info) = working.location(of: name) else { continue }
      // Only hashes are needed: both files are streamed, neither is held in memory.
      guard let hash = try working.hash(of: name) else { continue }
      // The base must be a separate, unchanging copy: the working model will be rewritten.
      guard let (refShard, refInfo) = reference.location(of: name),
        refInfo.dtype == info.dtype, refInfo.shape == info.shape, try reference.hash(of: name) == hash
      else {
        throw RepositoryError.referenceBaseChanged(path: reference.path, tensor: name)
      }
      let written = try writeReferenceState(
        name: name, dtype: info.dtype, shape: info.shape, shard: shard, hash: hash,
        path: reference.shardPath(refShard), shardFile: reference.shardFiles[refShard])
      hashes[name] = hash
      trees[name] = written.tree
      changes.append(.init(name: name, storage: "reference", storedByteCount: written.storedByteCount))
      report("storing base", i + 1, names.count, bytes: info.byteCount)
    }
    let (layout, headers) = working.layout()
    let record = EditRecord(
      formatVersion: baseFormatVersion, method: "base", changes: changes,
      details: reference.map { ["reference_base": $0.path] })
    let commit = try writeCommit(
      layout: layout, headers: headers, indexBytes: working.indexBytes, tensorTrees: trees, record: record,
      message: message, parents: [], sideFiles: .tree(try writeSideFilesTree(try working.sideFiles())))
    try RepositoryError.wrap("creating branch 'main'") {
      try git.updateReference(
        "refs/heads/" + Self.defaultBranch, to: commit, expected: nil, message: "init: base model")
    }
    saveStatCache(working: working, hashes: hashes, stats: stats)
    return commit
  }

  /// Records hashes mvc computed from the working files' bytes.
  /// - Parameter stats: the files' stat records taken before `hashes` were computed (nil: now).
  func saveStatCache(working: WorkingModel, hashes: [String: String], stats: [FileStat]? = nil) {
    let files = working.fileStats()
    // Hashes of files that changed while being hashed, or of a file renamed over the mapped one,
    // describe neither version.
    guard stats == nil || stats == files, working.stillMapped(files) else { return }
    writeStatCache(
      StatCache(files: files, tensorHashes: hashes, writtenAtNanoseconds: StatCache.writeTime(after: files)))
  }

  /// Records the verified hashes of a model mvc has just written.
  /// - Parameter written: what `fstat` said of each file through the descriptor its bytes went
  ///   through (shards in layout order, then the index). The record is keyed by those, so it can
  ///   only ever vouch for the files mvc wrote: when a path names another file by now (an editor
  ///   renamed one over it), no cache is left and the next command hashes what is there.
  func recordStatCache(written: [FileStat], hashes: [String: String]) {
    guard !written.isEmpty, written.allSatisfy({ FileStat(path: $0.path) == $0 }) else {
      invalidateStatCache()
      return
    }
    writeStatCache(
      StatCache(files: written, tensorHashes: hashes, writtenAtNanoseconds: StatCache.writeTime(after: written)))
  }

  private func writeStatCache(_ cache: StatCache) {
    // The cache only saves time: a lost or torn cache costs a rehash (a torn one fails to
    // decode), so it is renamed into place without the fsyncs that durable files get. One that
    // cannot be written (a full disk) must not leave the old one behind.
    guard let data = try? JSONCoding.encode(cache),
      (try? Data(data).write(to: URL(fileURLWithPath: statCachePath), options: .atomic)) != nil
    else {
      invalidateStatCache()
      return
    }
  }

  /// The stat cache's hashes when it vouches for the working files as they are, else nil.
  func cachedWorkingHashes(_ working: WorkingModel) -> [String: String]? {
    cachedWorkingHashesAndStats(working)?.hashes
  }

  private func cachedWorkingHashesAndStats(_ working: WorkingModel) -> (hashes: [String: String], stats: [FileStat])? {
    let stats = working.fileStats()
    guard let cache = StatCache.load(from: statCachePath), working.stillMapped(stats),
      let hashes = cache.hashes(matching: stats)
    else { return nil }
    return (hashes, stats)
  }

  func invalidateStatCache() {
    try? FileManager.default.removeItem(atPath: statCachePath)
  }

  /// Tensor hashes of the working model, from the stat cache when the files are unchanged.
  func workingHashes(_ working: WorkingModel) throws -> [String: String] {
    try hashedWorkingModel(working).hashes
  }

  /// Tensor hashes of the working model and the files' stat records they belong to (taken before
  /// hashing): from the stat cache when it vouches for the files, else hashed now.
  /// - Parameter trustCache: false rehashes whatever the cache says (`checkout --force`).
  func hashedWorkingModel(
    _ working: WorkingModel, trustCache: Bool = true
  ) throws -> (hashes: [String: String], stats: [FileStat]) {
    if trustCache, let cached = cachedWorkingHashesAndStats(working) { return cached }
    let stats = working.fileStats()
    var hashes = trustCache ? reusableHashes(working, stats: stats) : [:]
    let stale = working.tensorNames.filter { hashes[$0] == nil }
    let fresh = try timed("hash \(stale.count) of \(working.tensorNames.count) tensors") {
      try working.hash(stale, workers: environment.workerThreads) { done, total in
        self.report("hashing", done, total)
      }
    }
    hashes.merge(fresh) { $1 }
    saveStatCache(working: working, hashes: hashes, stats: stats)
    return (hashes, stats)
  }

  /// The cached hashes of the tensors held in files the stat cache shows unchanged (when some
  /// others changed): only the changed files' tensors need hashing. The shard list must be the
  /// recorded one (an unchanged index, or a single file), so every tensor is where it was.
  /// - Parameter stats: the model files' stat records, taken before any hashing.
  private func reusableHashes(_ working: WorkingModel, stats: [FileStat]) -> [String: String] {
    guard let cache = StatCache.load(from: statCachePath), working.stillMapped(stats),
      cache.files.count == stats.count
    else { return [:] }
    let unchanged = cache.unchangedFiles(among: stats)
    if working.isSharded,
      !unchanged.contains((working.path as NSString).appendingPathComponent(WorkingModel.indexFileName))
    {
      return [:]
    }
    var reused: [String: String] = [:]
    for name in working.tensorNames {
      if let shard = working.location(of: name)?.shard, unchanged.contains(working.shardPath(shard)),
        let hash = cache.tensorHashes[name]
      {
        reused[name] = hash
      }
    }
    return reused
  }
}
