import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Revert: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Record a new commit that undoes an earlier commit's delta (−U·Vᵀ).",
      discussion: """
        Later edits were computed against a model that held REV, so the result is "the history \
        minus REV's delta", not a replay of the later edits without it. The working model must \
        be clean; it is rewritten to the new commit.

          mvc revert HEAD~7
          mvc bisect run ... ; mvc bisect reset; mvc revert <first bad commit>
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The commit to undo.") var revision: String

    func run() throws {
      let repository = try Session.open(global)
      let result = try repository.revert(try repository.resolve(revision))
      if !global.quiet { ChangeReport.print(result, repository: repository) }
    }
  }
}
