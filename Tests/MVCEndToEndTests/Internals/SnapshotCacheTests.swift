import DeltaStore
import Foundation
import TestSupport
import Testing

/// The snapshot cache (`.mvc/mvc-snapshots/<hash>.bin`, docs/FORMAT.md) only saves time: its
/// files hold exactly the state they are named after, and damaged ones are dropped and rebuilt
/// from the object database, with the checkout still byte-exact.
@Suite("snapshot cache")
struct SnapshotCacheTests {
  /// Snapshot files by name, with the hash each file's name claims and the hash of its bytes.
  static func snapshots(in repository: URL) throws -> [(file: URL, claimed: String, actual: String)] {
    let directory = repository.appendingPathComponent("mvc-snapshots")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
    return try names.filter { $0.hasSuffix(".bin") }.sorted().map { name in
      let file = directory.appendingPathComponent(name)
      let bytes = try Data(contentsOf: file)
      let actual = bytes.withUnsafeBytes { ContentHash.of($0).description }
      let claimed = String(name.dropLast(".bin".count)).replacingOccurrences(of: "xxh3-128-", with: "xxh3-128:")
      return (file, claimed, actual)
    }
  }

  @Test func damagedSnapshotsAreDroppedAndTheChainReplayed() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 21)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let tensor = "model.layers.0.mlp.up_proj.weight"
      // One tensor edited 40 times: about one state in 16 is a grid state, saved at commit time.
      for i in 1...40 {
        try s.edit(rank: 1, tensor: tensor)
        try s.commit("edit \(i)")
      }
      let saved = try Self.snapshots(in: s.repository)
      try #require(!saved.isEmpty, "40 states of one tensor left no snapshot (seeded: should not happen)")
      for entry in saved { #expect(entry.claimed == entry.actual, "\(entry.file.lastPathComponent) holds other bytes") }

      // Going back replays from snapshots; every state comes out exact.
      for back in [1, 7, 23, 40] {
        expectSuccess(runMVC(["checkout", "-q", "HEAD~\(back)"], in: dir), "checkout HEAD~\(back)")
        try s.expectWorkingState(40 - back, "HEAD~\(back) with snapshots")
        expectSuccess(runMVC(["checkout", "-q", "main"], in: dir), "checkout main")
      }

      // Damage every snapshot: flip a byte in one, truncate the next.
      for (i, entry) in try Self.snapshots(in: s.repository).enumerated() {
        var bytes = try Data(contentsOf: entry.file)
        if i % 2 == 0 {
          bytes[bytes.count / 2] ^= 0x40
        } else {
          bytes = bytes.prefix(bytes.count / 3)
        }
        try bytes.write(to: entry.file)
      }
      expectSuccess(runMVC(["checkout", "-q", "HEAD~3"], in: dir), "checkout HEAD~3 over damaged snapshots")
      try s.expectWorkingState(37, "HEAD~3 over damaged snapshots")
      expectSuccess(runMVC(["checkout", "-q", "HEAD~30"], in: dir), "checkout HEAD~30 over damaged snapshots")
      try s.expectWorkingState(7, "HEAD~30 over damaged snapshots")
      // Damaged files are gone or were written again by the replay: none holds wrong bytes.
      for entry in try Self.snapshots(in: s.repository) {
        #expect(entry.claimed == entry.actual, "\(entry.file.lastPathComponent) still damaged")
      }
      let fsck = runMVC(["fsck"], in: dir)
      expectSuccess(fsck, "fsck")
    }
  }
}
