import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Verify the connectivity and validity of the objects in the repository.",
      discussion: """
        Checks that every object reachable from a reference is present and readable and that \
        every commit is a well-formed mvc tree. --full also rebuilds every tensor state of \
        every commit from the stored objects and checks it against its recorded hash. Prints \
        one problem per line and exits 1 when there is any.

          mvc fsck
          mvc fsck --full
        """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Rebuild and verify every tensor state of every commit.") var full = false

    func run() throws {
      let repository = try Session.open(global, toleratingUnfinishedMove: true)
      let report = try repository.fsck(full: full)
      for problem in report.problems { output(problem) }
      if !global.quiet {
        var line = "checked \(report.commitCount) commits, \(report.treeCount) trees, \(report.blobCount) blobs"
        if full { line += ", \(report.verifiedStateCount) tensor states rebuilt" }
        Diagnostics.printError(line)
      }
      if !report.isClean { throw ExitCode(1) }
    }
  }
}
