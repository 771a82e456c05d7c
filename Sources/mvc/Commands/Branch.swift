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
}
