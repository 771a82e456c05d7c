import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Switch: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Switch to a branch; the working model follows.",
      discussion: """
          mvc switch alt
          mvc switch -c other main~2     # create 'other' at main~2 and switch to it
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The branch.") var name: String
    @Argument(help: "With -c: where the new branch starts (default HEAD).") var startPoint: String?
    @Flag(name: [.customShort("c"), .long], help: "Create the branch first.") var create = false
    @Flag(
      name: .shortAndLong,
      help: "Discard uncommitted changes in the working model; rehash it rather than trust the stat cache.")
    var force = false

    func validate() throws {
      if startPoint != nil && !create { throw ValidationError("a start point needs -c") }
    }

    func run() throws {
      let repository = try Session.open(global)
      let start = create ? try startPoint.map { try repository.resolve($0) } ?? repository.headCommit() : nil
      let summary = try repository.switchBranch(name, create: start, force: force)
      if !global.quiet {
        Diagnostics.printError(
          "Switched to \(create ? "a new " : "")branch '\(name)' (\(summary.rewrittenTensors.count) tensors rewritten)")
      }
    }
  }
}
