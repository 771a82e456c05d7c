import DeltaStore
import Foundation
import TestSupport
import Testing

/// The keyframe cache (`.mvc/mvc-snapshots/<hash>.kf`, docs/FORMAT.md "Snapshots: bounding the
/// replay") only saves time and stays small: keyframes cost at most half of the states they stand
/// for, the folder stays under `mvc.snapshotCacheBytes`, `mvc gc` trims it, and damaged or deleted
/// keyframes leave every checkout byte-exact.
@Suite("snapshot cache")
struct SnapshotCacheTests {
  static let tensor = "model.layers.0.mlp.up_proj.weight"

  /// Keyframe files with their sizes and kinds (1 standalone, 2 residual: the byte after the magic).
  static func keyframes(in repository: URL) throws -> [(file: URL, bytes: Int, kind: UInt8)] {
    let directory = repository.appendingPathComponent("mvc-snapshots")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
    return try names.filter { $0.hasSuffix(".kf") }.sorted().map { name in
      let file = directory.appendingPathComponent(name)
      let data = try Data(contentsOf: file)
      return (file, data.count, data.count > 8 ? data[8] : 0)
    }
  }

  /// Bytes of every file under `url`.
  static func fileBytes(_ url: URL) -> Int {
    guard let e = FileManager.default.enumerator(at: url, includingPropertiesForKeys: [.fileSizeKey]) else { return 0 }
    var total = 0
    for case let file as URL in e { total += (try? file.resourceValues(forKeys: [.fileSizeKey]).fileSize ?? 0) ?? 0 }
    return total
  }

  /// One tensor edited `count` times at `rank`; returns the object bytes the edits added.
  static func editOneTensor(_ s: inout Scenario, count: Int, rank: Int) throws -> Int {
    let objectsBefore = fileBytes(s.repository.appendingPathComponent("objects"))
    for i in 1...count {
      try s.edit(rank: rank, tensor: tensor)
      try s.commit("edit \(i)")
    }
    return fileBytes(s.repository.appendingPathComponent("objects")) - objectsBefore
  }

  @Test func keyframesStayWithinHalfTheHistoryAndCheckoutsAreExactWithoutThem() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 21)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let added = try Self.editOneTensor(&s, count: 40, rank: 1)
      let saved = try Self.keyframes(in: s.repository)
      try #require(saved.count >= 2, "40 edits of one tensor left \(saved.count) keyframes")
      let cacheBytes = Self.fileBytes(s.repository.appendingPathComponent("mvc-snapshots"))
      #expect(2 * cacheBytes <= added, "keyframes \(cacheBytes) B against \(added) B of objects")

      // Going back rebuilds from keyframes; every state comes out exact.
      for back in [1, 7, 23, 39, 40] {
        expectSuccess(runMVC(["checkout", "-q", "HEAD~\(back)"], in: dir), "checkout HEAD~\(back)")
        try s.expectWorkingState(40 - back, "HEAD~\(back) with keyframes")
        expectSuccess(runMVC(["checkout", "-q", "main"], in: dir), "checkout main")
      }

      // Damage every keyframe: flip a byte in the payload of one, truncate the next, garble a header.
      for (i, entry) in try Self.keyframes(in: s.repository).enumerated() {
        var bytes = try Data(contentsOf: entry.file)
        switch i % 3 {
        case 0: bytes[bytes.count - 5] ^= 0x40
        case 1: bytes = bytes.prefix(bytes.count / 3)
        default: bytes[20] ^= 0x01
        }
        try bytes.write(to: entry.file)
      }
      for back in [3, 30, 17] {
        expectSuccess(runMVC(["checkout", "-q", "main~\(back)"], in: dir), "checkout main~\(back) over damage")
        try s.expectWorkingState(40 - back, "main~\(back) over damaged keyframes")
      }
      // And with the cache deleted.
      try FileManager.default.removeItem(at: s.repository.appendingPathComponent("mvc-snapshots"))
      expectSuccess(runMVC(["checkout", "-q", "main~11"], in: dir), "checkout main~11 without a cache")
      try s.expectWorkingState(29, "main~11 without keyframes")
      expectSuccess(runMVC(["checkout", "-q", "main"], in: dir), "checkout main")
      try s.expectWorkingState(40, "main")
      expectSuccess(runMVC(["fsck"], in: dir), "fsck")
    }
  }

  @Test func theCapHoldsAndGcTrims() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 5)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let cap = 6000
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.snapshotCacheBytes", "\(cap)"], in: dir), "config")
      _ = try Self.editOneTensor(&s, count: 48, rank: 1)
      let capped = Self.fileBytes(s.repository.appendingPathComponent("mvc-snapshots"))
      #expect(capped <= cap, "cache \(capped) B over its cap \(cap) B")
      #expect(try !Self.keyframes(in: s.repository).isEmpty, "no keyframe under a \(cap) B cap")
      for back in [5, 33] {
        expectSuccess(runMVC(["checkout", "-q", "main~\(back)"], in: dir), "checkout main~\(back)")
        try s.expectWorkingState(48 - back, "main~\(back) under the cap")
      }
      expectSuccess(runMVC(["checkout", "-q", "main"], in: dir), "checkout main")

      // A lower cap, then gc: trimmed to it; a stray file of no state goes too.
      let stray = s.repository.appendingPathComponent("mvc-snapshots/xxh3-128-0123.bin")
      try Data(repeating: 7, count: 100).write(to: stray)
      let lower = 2500
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.snapshotCacheBytes", "\(lower)"], in: dir), "config")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      let trimmed = Self.fileBytes(s.repository.appendingPathComponent("mvc-snapshots"))
      #expect(trimmed <= lower, "after gc the cache holds \(trimmed) B, cap \(lower) B")
      #expect(!FileManager.default.fileExists(atPath: stray.path), "gc left a file of no state")
      expectSuccess(runMVC(["checkout", "-q", "main~20"], in: dir), "checkout main~20 after gc")
      try s.expectWorkingState(28, "main~20 after gc")

      // Cap 0: no keyframes at all, and gc empties the folder.
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.snapshotCacheBytes", "0"], in: dir), "config")
      expectSuccess(runMVC(["checkout", "-q", "main"], in: dir), "checkout main")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      #expect(Self.fileBytes(s.repository.appendingPathComponent("mvc-snapshots")) == 0, "cap 0 kept files")
      _ = try Self.editOneTensor(&s, count: 6, rank: 1)
      #expect(try Self.keyframes(in: s.repository).isEmpty, "cap 0 still saved keyframes")
    }
  }

  /// Past the rank a residual keyframe may span, a standalone keyframe starts the next ones.
  @Test func standaloneKeyframesBoundTheChainAtHighRank() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 9)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      _ = try Self.editOneTensor(&s, count: 40, rank: 8)
      let kinds = try Self.keyframes(in: s.repository).map(\.kind)
      #expect(kinds.contains(1), "no standalone keyframe after 40 rank-8 edits of one tensor: \(kinds)")
      #expect(kinds.contains(2), "no residual keyframe after 40 rank-8 edits of one tensor: \(kinds)")
      for back in [2, 13, 26, 38] {
        expectSuccess(runMVC(["checkout", "-q", "main~\(back)"], in: dir), "checkout main~\(back)")
        try s.expectWorkingState(40 - back, "main~\(back)")
      }
    }
  }
}
