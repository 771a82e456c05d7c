import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Gc: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Pack the small objects and prune the local caches.",
      discussion: """
        Writes the reachable objects below mvc.gcBigObjectBytes (default 1 MiB: commits, trees, \
        JSON, factors, side files, small blobs) and the objects of packs of only such objects \
        into one new pack, then deletes the loose objects and packs it makes redundant (only \
        after the pack and its index are on disk and fsynced). Loose objects of at least that \
        many bytes, and packs with an entry of that size (and .keep packs), stay as they are, \
        as git's core.bigFileThreshold and gc.bigPackThreshold keep them: mvc's tensor chunks \
        are zstd already, so packing them again copies and hashes \
        every byte to save nothing. --full packs every reachable object into one pack (git's \
        'repack -a -d'; mvc never searches deltas, so there is no --aggressive). Unreachable \
        loose objects are kept. Keyframe-cache files of states that no reachable commit has are \
        removed, then the cache is trimmed to mvc.snapshotCacheBytes (default 1 GiB), least \
        recently used first, and the accumulator/projector cache (.mvc/mvc-cache) to \
        mvc.derivedCacheBytes (default 1 GiB). Prints the disk usage of .mvc/ (allocated blocks) \
        before and after.

          mvc gc
          mvc gc --full
          git --git-dir .mvc config mvc.gcBigObjectBytes 16m   # 0: as --full
          mvc gc --json                                        # mvc.gc/1
        """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Pack every reachable object into one pack, large ones included.") var full = false
    @Flag(help: "Write one JSON document (schema mvc.gc/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let summary = try repository.gc(full: full)
      if json {
        output(try Format.json(GcJSON(summary)))
        return
      }
      output("\(summary.byteCountBefore) bytes on disk before, \(summary.byteCountAfter) bytes on disk after")
      if !global.quiet {
        Diagnostics.printError(
          "packed \(summary.packedObjectCount) objects (\(Format.bytes(summary.byteCountBefore)) -> \(Format.bytes(summary.byteCountAfter))); kept as they are \(summary.keptLooseObjectCount) large loose objects (\(Format.bytes(summary.keptLooseObjectBytes))) and \(summary.keptPackCount) packs (\(Format.bytes(summary.keptPackBytes))); removed \(summary.removedLooseObjectCount) loose objects, \(summary.removedPackCount) old packs, \(summary.removedSnapshotCount) snapshots, \(summary.removedDerivedCount) cached matrices; kept \(summary.unreachableLooseObjectCount) unreachable loose objects"
        )
      }
    }
  }
}

struct GcJSON: Encodable {
  var schema = "mvc.gc/1"
  var full: Bool
  @NullWhenAbsent var bigObjectBytes: Int?
  var byteCountBefore: Int
  var byteCountAfter: Int
  var packedObjectCount: Int
  var keptLooseObjectCount: Int
  var keptLooseObjectBytes: Int
  var keptPackCount: Int
  var keptPackBytes: Int
  var removedLooseObjectCount: Int
  var removedPackCount: Int
  var unreachableLooseObjectCount: Int
  var removedSnapshotCount: Int
  var removedDerivedCount: Int

  init(_ summary: GcSummary) {
    full = summary.bigObjectBytes == nil
    bigObjectBytes = summary.bigObjectBytes
    byteCountBefore = summary.byteCountBefore
    byteCountAfter = summary.byteCountAfter
    packedObjectCount = summary.packedObjectCount
    keptLooseObjectCount = summary.keptLooseObjectCount
    keptLooseObjectBytes = summary.keptLooseObjectBytes
    keptPackCount = summary.keptPackCount
    keptPackBytes = summary.keptPackBytes
    removedLooseObjectCount = summary.removedLooseObjectCount
    removedPackCount = summary.removedPackCount
    unreachableLooseObjectCount = summary.unreachableLooseObjectCount
    removedSnapshotCount = summary.removedSnapshotCount
    removedDerivedCount = summary.removedDerivedCount
  }

  enum CodingKeys: String, CodingKey {
    case schema, full
    case bigObjectBytes = "big_object_bytes"
    case byteCountBefore = "byte_count_before"
    case byteCountAfter = "byte_count_after"
    case packedObjectCount = "packed_object_count"
    case keptLooseObjectCount = "kept_loose_object_count"
    case keptLooseObjectBytes = "kept_loose_object_bytes"
    case keptPackCount = "kept_pack_count"
    case keptPackBytes = "kept_pack_bytes"
    case removedLooseObjectCount = "removed_loose_object_count"
    case removedPackCount = "removed_pack_count"
    case unreachableLooseObjectCount = "unreachable_loose_object_count"
    case removedSnapshotCount = "removed_snapshot_count"
    case removedDerivedCount = "removed_derived_count"
  }
}
