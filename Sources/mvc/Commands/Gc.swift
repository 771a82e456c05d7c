import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Gc: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Pack reachable objects and prune the local keyframe cache.",
      discussion: """
        Writes every object reachable from a reference into one pack, then deletes the loose \
        objects and older packs it makes redundant (only after the pack and its index are on \
        disk and fsynced). Unreachable loose objects are kept. Keyframe-cache files of states \
        that no reachable commit has are removed, then the cache is trimmed to \
        mvc.snapshotCacheBytes (default 1 GiB), least recently used first, and the \
        accumulator/projector cache (.mvc/mvc-cache) to mvc.derivedCacheBytes (default 1 GiB). Prints the disk usage of .mvc/ (allocated blocks) before and after.

          mvc gc
        """)

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let repository = try Session.open(global)
      let summary = try repository.gc()
      output("\(summary.byteCountBefore) bytes on disk before, \(summary.byteCountAfter) bytes on disk after")
      if !global.quiet {
        Diagnostics.printError(
          "packed \(summary.packedObjectCount) objects (\(Format.bytes(summary.byteCountBefore)) -> \(Format.bytes(summary.byteCountAfter))); removed \(summary.removedLooseObjectCount) loose objects, \(summary.removedPackCount) old packs, \(summary.removedSnapshotCount) snapshots, \(summary.removedDerivedCount) cached matrices; kept \(summary.unreachableLooseObjectCount) unreachable loose objects"
        )
      }
    }
  }
}
