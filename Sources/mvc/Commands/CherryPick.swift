import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct CherryPick: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "cherry-pick",
      abstract: "Apply an earlier commit's delta on top of HEAD as a new commit.",
      discussion: """
          mvc cherry-pick alt~2
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The commit whose delta to apply.") var revision: String

    func run() throws {
      let repository = try Session.open(global)
      let result = try repository.cherryPick(try repository.resolve(revision))
      if !global.quiet { ChangeReport.print(result, repository: repository) }
    }
  }
}
