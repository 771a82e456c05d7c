import Apply
import DeltaStore
import Foundation

/// Σ KKᵀ over the recorded keys of the edits present in a state: AlphaEdit's `cache_c` and
/// ENCORE's `SEQ_CACHE`, as a function of the history instead of the editing process.
///
/// An edit is present in the state of commit X when it is reachable from X: a merge brings both
/// sides' edits (each counted once), a revert removes its source's keys, a cherry-pick adds them
/// again (a commit's multiplicity is the sum of these signs). Any other commit present that
/// changed the tensor without recording keys makes the sum unknown and is refused by name.
public struct Accumulator: Sendable {
  /// One edit whose keys are in the sum.
  public struct Term: Sendable, Equatable {
    /// The commit that recorded the keys.
    public var source: ObjectID
    /// How many times the keys count (1, or more after cherry-picks).
    public var multiplicity: Int
    /// The number of keys (rows) it recorded.
    public var keyCount: Int
    /// The blob of its `edit-data/keys.npy.zst`.
    var keysBlob: ObjectID
  }

  public var tensor: String
  public var revision: ObjectID
  /// d_in.
  public var dimension: Int
  /// Σ multiplicity · KKᵀ, d_in×d_in row-major, symmetric.
  public var matrix: [Double]
  /// The edits counted, oldest first.
  public var terms: [Term]
  /// Whether the matrix came from `.mvc/mvc-cache/` instead of the keys.
  public var fromCache: Bool
  /// The cache key: XXH3-128 of the tensor, d_in and the (keys blob, multiplicity) terms.
  public var key: String

  /// Σ multiplicity · key count.
  public var keyCount: Int { terms.map { $0.multiplicity * $0.keyCount }.reduce(0, +) }
}

/// A local cache of derived matrices (accumulators, null-space projectors) under
/// `.mvc/mvc-cache/`: never pushed, safe to delete, keyed by what they are computed from,
/// verified on load (an XXH3-128 of the payload in the header) and capped in bytes
/// (`mvc.derivedCacheBytes`), least recently used first, on every save and by `mvc gc`.
struct DerivedMatrixCache {
  let directory: String
  /// The most the folder may hold, in file bytes; 0: nothing is saved.
  let capBytes: Int
  /// Whether the cap is the default one, which makes room for a single file larger than it
  /// (d_in² doubles: 1.6 GB at d_in = 14336), so that any model's matrix can be cached.
  let defaultCap: Bool

  var folder: CappedFolder { CappedFolder(directory: directory, capBytes: capBytes) }

  static let magic = Array("MVCDM001".utf8)

  func path(_ kind: String, _ key: String) -> String {
    (directory as NSString).appendingPathComponent("\(kind)-\(key).bin")
  }

  /// The stored doubles and the integer beside them, or nil when absent, torn or of another size.
  func load(_ kind: String, _ key: String, count: Int) -> (values: [Double], extra: Int)? {
    guard let data = FileManager.default.contents(atPath: path(kind, key)),
      data.count == 8 + 16 + 8 + count * 8
    else { return nil }
    let bytes = [UInt8](data)
    guard Array(bytes[0..<8]) == Self.magic else { return nil }
    var values = [Double](repeating: 0, count: count)
    var extra: Int64 = 0
    let payloadHash = bytes.withUnsafeBytes { raw -> ContentHash in
      withUnsafeMutableBytes(of: &extra) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[24..<32])) }
      values.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[32...])) }
      return ContentHash.of(UnsafeRawBufferPointer(rebasing: raw[24...]))
    }
    let stored = bytes.withUnsafeBytes { raw -> (UInt64, UInt64) in
      (raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self), raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
    }
    guard stored == (payloadHash.high, payloadHash.low) else { return nil }
    try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: path(kind, key))
    return (values, Int(extra))
  }

  /// Writes through a temporary file and a rename (no fsync: a lost file only costs time), then
  /// trims the folder to the cap, least recently used first (the new file last; under the
  /// default cap a file larger than it stays, alone). Failures are ignored.
  func save(_ kind: String, _ key: String, values: [Double], extra: Int) {
    let fileBytes = 8 + 16 + 8 + values.count * 8
    guard capBytes > 0, fileBytes <= capBytes || defaultCap else { return }
    var payload = [UInt8]()
    payload.reserveCapacity(8 + values.count * 8)
    withUnsafeBytes(of: Int64(extra)) { payload.append(contentsOf: $0) }
    values.withUnsafeBytes { payload.append(contentsOf: $0) }
    let hash = payload.withUnsafeBytes { ContentHash.of($0) }
    var file = Self.magic
    withUnsafeBytes(of: hash.high) { file.append(contentsOf: $0) }
    withUnsafeBytes(of: hash.low) { file.append(contentsOf: $0) }
    file.append(contentsOf: payload)
    let manager = FileManager.default
    do {
      try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
      let final = path(kind, key)
      let temporary = final + ".tmp-\(getpid())"
      try Data(file).write(to: URL(fileURLWithPath: temporary))
      if manager.fileExists(atPath: final) { try manager.removeItem(atPath: final) }
      try manager.moveItem(atPath: temporary, toPath: final)
      trim(keeping: (final as NSString).lastPathComponent)
    } catch {
      return
    }
  }

  /// Deletes abandoned temporary files, then the least recently used files down to the cap
  /// (`keeping`, or else the most recently used file, goes last; under the default cap it stays
  /// even when larger than the cap). Returns how many files it deleted.
  @discardableResult
  func trim(keeping: String? = nil) -> Int {
    var removed = 0
    var files = folder.files()
    for file in files where file.name.contains(".tmp-") {
      try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(file.name))
      removed += 1
    }
    files.removeAll { $0.name.contains(".tmp-") }
    guard let kept = files.first(where: { $0.name == keeping }) ?? files.last else { return removed }
    let cap = defaultCap ? max(capBytes, kept.bytes) : capBytes
    return removed + CappedFolder(directory: directory, capBytes: cap).trim(keeping: kept.name)
  }
}

extension EditRepository {
  /// The git config key holding the derived-matrix cache's cap in bytes (`0` turns it off).
  static let derivedCacheBytesKey = "mvc.derivedcachebytes"

  /// 1 GiB: the cap when the config sets none (a single larger matrix is still kept, alone).
  static let defaultDerivedCacheBytes = 1 << 30

  var derivedCacheDirectory: String { (gitDirectory as NSString).appendingPathComponent("mvc-cache") }

  var derivedCache: DerivedMatrixCache {
    let configured = (try? git.configString(Self.derivedCacheBytesKey)).flatMap { Self.parseByteCount($0) }
    return DerivedMatrixCache(
      directory: derivedCacheDirectory, capBytes: configured ?? Self.defaultDerivedCacheBytes,
      defaultCap: configured == nil)
  }

  /// The keys a commit recorded: the tensor they belong to and the blob, or nil.
  func recordedKeys(_ commit: ObjectID) throws -> (tensor: String, blob: ObjectID)? {
    let contents = try contents(of: commit)
    guard let record = try editRecord(of: contents) else { return nil }
    let root = try git.readTree(try commitInfo(commit).tree)
    guard let data = root.first(where: { $0.name == TreeEntryName.editData && $0.isTree }),
      let keys = try git.readTree(data.id).first(where: { $0.name == EditDataName.keys && !$0.isTree })
    else { return nil }
    // `mvc edit` names the tensor; `commit-factors --keys` takes keys for its one tensor only.
    guard let tensor = record.details?["tensor"] ?? (record.changes.count == 1 ? record.changes[0].name : nil) else {
      return nil
    }
    return (tensor, keys.id)
  }

  /// Whether `commit` changed `tensor` relative to its first parent.
  func changes(_ commit: ObjectID, tensor: String) throws -> Bool {
    guard let parent = try commitInfo(commit).parents.first else { return false }
    return try contents(of: commit).tensorTrees[tensor] != contents(of: parent).tensorTrees[tensor]
  }

  /// The signed keys a non-merge commit brings to `tensor`: its own recorded keys, or (revert,
  /// cherry-pick) its source's times ∓1.
  func keyContribution(of commit: ObjectID, tensor: String, depth: Int = 0) throws -> [ObjectID: Int] {
    guard try changes(commit, tensor: tensor) else { return [:] }
    func refuse(_ reason: String) throws -> Never {
      throw RepositoryError.accumulatorUnknown(
        tensor: tensor, commit: "\(commit.shortHex) (\(try commitInfo(commit).summary))", reason: reason)
    }
    if let keys = try recordedKeys(commit) {
      guard keys.tensor == tensor else { try refuse("recorded keys for '\(keys.tensor)' but changed this tensor too") }
      return [commit: 1]
    }
    let record = try editRecord(of: contents(of: commit))
    if let method = record?.method, method == "revert" || method == "cherry-pick", depth < 64,
      let sourceText = record?.details?["source"], let source = ObjectID(hex: sourceText)
    {
      guard try commitInfo(source).parents.count == 1 else {
        try refuse("replays the merge \(source.shortHex), whose edits are not one commit's keys")
      }
      let sign = method == "revert" ? -1 : 1
      return try keyContribution(of: source, tensor: tensor, depth: depth + 1).mapValues { $0 * sign }
    }
    try refuse("changed it without recording keys (method \(record?.method ?? "none"))")
  }

  /// The accumulator Σ KKᵀ of `tensor` in the state of `revision` (see ``Accumulator``).
  ///
  /// - Throws: `RepositoryError.accumulatorUnknown` naming the commit that changed the tensor
  ///   without keys, or a revert of an edit not present; `.tensorNotInCommit`; `.corruptObject`.
  public func accumulator(_ tensor: String, at revision: ObjectID) throws -> Accumulator {
    guard let tree = try contents(of: revision).tensorTrees[tensor] else {
      throw RepositoryError.tensorNotInCommit(tensor: tensor, revision: revision.shortHex)
    }
    let state = try storedState(tree, tensor: tensor).state
    guard state.shape.count == 2 else {
      throw RepositoryError.notAMatrix(
        tensor: tensor, dtype: state.dtype.rawValue, shape: state.shape, operation: "an accumulator", revisions: nil)
    }
    var multiplicity: [ObjectID: Int] = [:]
    var order: [ObjectID] = []
    let commits = try RepositoryError.wrap("walking history") { try git.walk(from: [revision], reverse: true) }
    for id in commits where try commitInfo(id).parents.count == 1 {
      for (source, count) in try keyContribution(of: id, tensor: tensor) {
        if multiplicity[source] == nil { order.append(source) }
        multiplicity[source, default: 0] += count
      }
    }
    var terms: [Accumulator.Term] = []
    var dimension: Int?
    var loaded: [ObjectID: NpyArray] = [:]
    for source in order {
      let count = multiplicity[source] ?? 0
      if count < 0 {
        throw RepositoryError.accumulatorUnknown(
          tensor: tensor, commit: "\(source.shortHex) (\(try commitInfo(source).summary))",
          reason: "is reverted more often than it is present")
      }
      guard count > 0, let keys = try recordedKeys(source) else { continue }
      let array = try readCompressedNpy(keys.blob, what: "keys of \(source.shortHex)")
      guard array.shape.count == 2, state.shape.contains(array.shape[1]),
        dimension == nil || dimension == array.shape[1]
      else {
        throw RepositoryError.corruptObject(
          what: "keys of \(source.shortHex)", reason: "shape \(array.shape) does not fit '\(tensor)' \(state.shape)")
      }
      dimension = array.shape[1]
      loaded[source] = array
      terms.append(.init(source: source, multiplicity: count, keyCount: array.shape[0], keysBlob: keys.blob))
    }
    // With no keys yet, d_in is not known from keys: the caller's keys decide it.
    let d = dimension ?? 0
    let key = Self.accumulatorKey(tensor: tensor, dimension: d, terms: terms)
    if d > 0, let cached = derivedCache.load("accumulator", key, count: d * d) {
      return Accumulator(
        tensor: tensor, revision: revision, dimension: d, matrix: cached.values, terms: terms, fromCache: true, key: key
      )
    }
    var matrix = [Double](repeating: 0, count: d * d)
    for term in terms {
      guard let keys = loaded[term.source] else { continue }
      try RepositoryError.applying(to: tensor) {
        try EditSolvers.addGram(ofKeys: keys.values, dimension: d, scale: Double(term.multiplicity), into: &matrix)
      }
    }
    if d > 0 { derivedCache.save("accumulator", key, values: matrix, extra: terms.count) }
    return Accumulator(
      tensor: tensor, revision: revision, dimension: d, matrix: matrix, terms: terms, fromCache: false, key: key)
  }

  static func accumulatorKey(tensor: String, dimension: Int, terms: [Accumulator.Term]) -> String {
    // By blob: two commits that recorded the same keys are the same term counted twice.
    let byBlob = Dictionary(terms.map { ($0.keysBlob.hex, $0.multiplicity) }, uniquingKeysWith: +)
    let lines = byBlob.map { "\($0.key) \($0.value)" }.sorted()
    let text = ([tensor, "\(dimension)"] + lines).joined(separator: "\n")
    return hexKey(Array(text.utf8))
  }

  static func hexKey(_ bytes: [UInt8]) -> String {
    let hash = bytes.withUnsafeBytes { ContentHash.of($0) }
    return String(format: "%016llx%016llx", hash.high, hash.low)
  }

  /// AlphaEdit's projector for C₀ and a threshold, from `.mvc/mvc-cache/` when it was computed
  /// before (keyed by XXH3-128 of C₀'s Float64 bytes and the threshold).
  func nullSpaceProjector(
    covariance: [Double], dimension: Int, threshold: Double, tensor: String
  ) throws -> (projector: NullSpaceProjector, covarianceHash: String, fromCache: Bool) {
    let covarianceHash = covariance.withUnsafeBytes { raw in Self.hexKey(Array(raw)) }
    let key = covarianceHash + "-" + String(threshold.bitPattern, radix: 16)
    if let cached = derivedCache.load("projector", key, count: dimension * dimension) {
      return (
        NullSpaceProjector(
          projector: cached.values, dimension: dimension, keptCount: cached.extra, threshold: threshold),
        covarianceHash, true
      )
    }
    let projector = try RepositoryError.applying(to: tensor) {
      try EditSolvers.nullSpaceProjector(covariance: covariance, dimension: dimension, threshold: threshold)
    }
    derivedCache.save("projector", key, values: projector.projector, extra: projector.keptCount)
    return (projector, covarianceHash, false)
  }
}

extension EditRepository {
  /// For AlphaEdit and ENCORE: sets the problem's accumulator (and AlphaEdit's projector, L2;
  /// ENCORE's α) from the history of `parent`, and returns what the commit records about them.
  func prepareSequentialEdit(
    _ request: KnowledgeEditRequest, problem: inout EditProblem, parent: ObjectID
  ) throws -> (accumulator: Accumulator, details: [String: String])? {
    guard request.method == .alphaedit || request.method == .encore else { return nil }
    let accumulator = try accumulator(request.tensor, at: parent)
    guard accumulator.dimension == 0 || accumulator.dimension == problem.dIn else {
      throw RepositoryError.inputShapeMismatch(
        input: "keys", shape: request.keys.shape,
        expected: "[n, \(accumulator.dimension)] as the keys recorded by the earlier edits of '\(request.tensor)'")
    }
    problem.accumulator = accumulator.dimension == 0 ? nil : accumulator.matrix
    var details = [
      "accumulator_edits": "\(accumulator.terms.count)", "accumulator_keys": "\(accumulator.keyCount)",
      "accumulator_key": accumulator.key,
    ]
    if request.method == .alphaedit {
      let (projector, covarianceHash, _) = try nullSpaceProjector(
        covariance: problem.covariance, dimension: problem.dIn, threshold: request.nullspaceThreshold,
        tensor: request.tensor)
      problem.projector = projector.projector
      problem.l2 = request.l2
      details["nullspace_threshold"] = "\(request.nullspaceThreshold)"
      details["projector_rank"] = "\(projector.keptCount)"
      details["covariance_hash"] = covarianceHash
      details["l2"] = "\(request.l2)"
    } else {
      problem.normLambda = request.normLambda
      details["norm_lambda"] = "\(request.normLambda)"
    }
    return (accumulator, details)
  }

  /// Saves the accumulator of the state just committed (the parent's plus the new keys), so the
  /// next sequential edit starts from it instead of summing the history again.
  func cacheAccumulator(after previous: Accumulator, keys: [Double], keysBlob: ObjectID, dIn: Int) {
    var matrix = previous.dimension == 0 ? [Double](repeating: 0, count: dIn * dIn) : previous.matrix
    guard (try? EditSolvers.addGram(ofKeys: keys, dimension: dIn, scale: 1, into: &matrix)) != nil else { return }
    var terms = previous.terms
    if let index = terms.firstIndex(where: { $0.keysBlob == keysBlob }) {
      terms[index].multiplicity += 1
    } else {
      terms.append(.init(source: previous.revision, multiplicity: 1, keyCount: keys.count / dIn, keysBlob: keysBlob))
    }
    let key = Self.accumulatorKey(tensor: previous.tensor, dimension: dIn, terms: terms)
    derivedCache.save("accumulator", key, values: matrix, extra: terms.count)
  }
}
