import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Branch: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List, create or delete branches.",
      discussion: """
          mvc branch                 # list; * marks the current branch
          mvc branch alt HEAD~5      # create 'alt' at HEAD~5 (HEAD stays)
          mvc branch -d alt
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Name of the branch to create or delete.") var name: String?
    @Argument(help: "Where the new branch starts (default HEAD).") var startPoint: String?
    @Flag(name: [.customShort("d"), .long], help: "Delete the branch.") var delete = false

    func run() throws {
      let repository = try Session.open(global)
      guard let name else {
        for branch in try repository.branches() {
          output("\(branch.isCurrent ? "*" : " ") \(branch.name)")
        }
        if case .detached(let id) = try repository.head() { output("* (HEAD detached at \(id.shortHex))") }
        return
      }
      if delete {
        try repository.deleteBranch(name)
        if !global.quiet { Diagnostics.printError("Deleted branch \(name)") }
        return
      }
      let start = try startPoint.map { try repository.resolve($0) } ?? repository.headCommit()
      try repository.createBranch(name, at: start)
    }
  }

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
        Diagnostics.printError("Switched to \(create ? "a new " : "")branch '\(name)' (\(summary.rewrittenTensors.count) tensors rewritten)")
      }
    }
  }

  struct Tag: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List or create tags.",
      discussion: """
          mvc tag                        # list
          mvc tag v1                     # lightweight tag at HEAD
          mvc tag v2 HEAD~3 -m "before the disabling edit"
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The tag name.") var name: String?
    @Argument(help: "The commit (default HEAD).") var revision: String?
    @Option(name: .shortAndLong, help: "Make an annotated tag with this message.") var message: String?

    func run() throws {
      let repository = try Session.open(global)
      guard let name else {
        for tag in try repository.tags() { output(tag.name) }
        return
      }
      let target = try revision.map { try repository.resolve($0) } ?? repository.headCommit()
      try repository.createTag(name, at: target, message: message)
    }
  }
}
