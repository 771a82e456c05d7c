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
  public var removedSnapshotCount: Int
  /// Files deleted from `.mvc/mvc-cache/` (accumulators, projectors) to bring it under its cap.
  public var removedDerivedCount: Int
}

extension EditRepository {
  /// `mvc gc`: packs every reachable object into one pack (libgit2's packbuilder; loose
  /// objects and older packs go only once the new pack and its index are durable), and prunes
  /// `.mvc/mvc-snapshots/` of states that no commit reachable from a reference has, then trims it
  /// to its cap, and trims `.mvc/mvc-cache/` (accumulators, projectors) to its own.
  public func gc() throws -> GcSummary {
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

    let outcome = try RepositoryError.wrap("packing objects") { try git.packReachableObjects() }
    return GcSummary(
      byteCountBefore: before, byteCountAfter: Self.byteCount(of: gitDirectory),
      packedObjectCount: outcome.objectCount, removedLooseObjectCount: outcome.removedLooseCount,
      removedPackCount: outcome.removedPackCount, unreachableLooseObjectCount: outcome.keptLooseCount,
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
