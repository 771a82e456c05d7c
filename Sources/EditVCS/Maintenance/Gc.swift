import Foundation

/// What `mvc gc` did, with the disk usage of `.mvc/` before and after.
public struct GcSummary: Sendable {
  public var byteCountBefore: Int
  public var byteCountAfter: Int
  public var packedObjectCount: Int
  public var removedLooseObjectCount: Int
  public var removedPackCount: Int
  /// Loose objects that no reference reaches; kept, as git keeps them until they expire.
  public var unreachableLooseObjectCount: Int
  /// Reachable loose objects left loose because their files hold at least the threshold
  /// (`mvc.gcBigObjectBytes`), and the bytes of those files.
  public var keptLooseObjectCount: Int
  public var keptLooseObjectBytes: Int
  /// Packs left as they are (an entry of at least the threshold, a `.keep` file, or objects no other pack
  /// holds), and their bytes.
  public var keptPackCount: Int
  public var keptPackBytes: Int
  /// The threshold in force; nil for `--full`.
  public var bigObjectBytes: Int?
  public var removedSnapshotCount: Int
  /// Files deleted from `.mvc/mvc-cache/` (accumulators, projectors) to bring it under its cap.
  public var removedDerivedCount: Int
}

extension EditRepository {
  /// The git config key of gc's size rule: loose objects of at least this many bytes, and packs
  /// with an entry of that size, stay as they are (`0`: none does, as `--full`).
  static let gcBigObjectBytesKey = "mvc.gcbigobjectbytes"

  /// 1 MiB: a commit's commits, trees, JSON, factors and side files are far below it; mvc's
  /// tensor chunks (zstd, up to 64 MiB) mostly above. The size at which a push to a path copies
  /// a loose object as a file.
  public static let defaultGcBigObjectBytes = GitRepository.bigObjectBytes

  /// The threshold in force: `mvc.gcBigObjectBytes`, else the default; nil when it is `0`.
  /// - Throws: `RepositoryError.invalidConfig` for a value that is not a byte count (gc would
  ///   otherwise pack by a rule the user did not set).
  func gcBigObjectBytes() throws -> Int? {
    guard let text = try? git.configString(Self.gcBigObjectBytesKey) else { return Self.defaultGcBigObjectBytes }
    guard let value = Self.parseByteCount(text) else {
      throw RepositoryError.invalidConfig(
        key: "mvc.gcBigObjectBytes", file: (gitDirectory as NSString).appendingPathComponent("config"),
        reason: "'\(text)' is not a byte count (a number, with an optional k, m or g)")
    }
    return value == 0 ? nil : value
  }

  /// `mvc gc`: packs the reachable objects into one pack with mvc's own pack writer — by default
  /// only what is small (below `mvc.gcBigObjectBytes`, 1 MiB), leaving large loose objects loose
  /// and packs with a large entry as they are; with `full`, every reachable object (loose objects and older
  /// packs go only once the new pack and its index are durable) — and prunes
  /// `.mvc/mvc-snapshots/` of states that no commit reachable from a reference has, then trims it
  /// to its cap, and trims `.mvc/mvc-cache/` (accumulators, projectors) to its own.
  public func gc(full: Bool = false) throws -> GcSummary {
    let threshold = full ? nil : try gcBigObjectBytes()
    let before = Self.byteCount(of: gitDirectory)
    var problems: [String] = []
    let tips = try referenceTips(problems: &problems)
    if let problem = problems.first {
      // Packing from a broken set of references could drop objects someone still needs.
      throw RepositoryError.corruptObject(what: "references", reason: problem)
    }

    // Keyframe files are named after the state hash (`SnapshotCache.fileName`).
    var liveFiles = Set<String>()
    let commits = try RepositoryError.wrap("walking history") { try git.walk(from: tips) }
    for commit in commits {
      for hash in try tensorHashes(at: commit).values { liveFiles.insert(SnapshotCache.fileName(hash)) }
    }
    var removedSnapshots = 0
    let fileManager = FileManager.default
    let cache = snapshots
    // Also older versions' raw (`.bin`) and zstd (`.zst`) snapshots and abandoned temporary files.
    for file in cache.files() where !liveFiles.contains(file.name) {
      try? fileManager.removeItem(atPath: (snapshotDirectory as NSString).appendingPathComponent(file.name))
      removedSnapshots += 1
    }
    // Then down to the cap (`mvc.snapshotCacheBytes`), least recently used first.
    removedSnapshots += cache.trim()
    // The derived matrices are keyed by what they are computed from, not by a commit: only the cap.
    let removedDerived = derivedCache.trim()

    let outcome = try RepositoryError.wrap("packing objects") {
      try git.packReachableObjects(bigObjectBytes: threshold)
    }
    return GcSummary(
      byteCountBefore: before, byteCountAfter: Self.byteCount(of: gitDirectory),
      packedObjectCount: outcome.objectCount, removedLooseObjectCount: outcome.removedLooseCount,
      removedPackCount: outcome.removedPackCount, unreachableLooseObjectCount: outcome.unreachableLooseCount,
      keptLooseObjectCount: outcome.keptLooseCount, keptLooseObjectBytes: outcome.keptLooseBytes,
      keptPackCount: outcome.keptPackCount, keptPackBytes: outcome.keptPackBytes, bigObjectBytes: threshold,
      removedSnapshotCount: removedSnapshots, removedDerivedCount: removedDerived)
  }

  /// Disk usage of the regular files under `path` (allocated blocks, as `du` counts them: a
  /// loose object costs at least one block, which is much of what packing saves).
  static func byteCount(of path: String) -> Int {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total = 0
    while let item = enumerator.nextObject() as? String {
      var info = stat()
      guard lstat((path as NSString).appendingPathComponent(item), &info) == 0,
        (info.st_mode & S_IFMT) == S_IFREG
      else { continue }
      total += Int(info.st_blocks) * 512
    }
    return total
  }
}
