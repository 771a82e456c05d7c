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

enum ChangeReport {
  static func print(_ result: CommitResult, repository: EditRepository) {
    let branch = (try? repository.head().branchName) ?? nil
    let summary = (try? repository.commitInfo(result.commit).summary) ?? ""
    output("[\(branch ?? "detached HEAD") \(result.commit.shortHex)] \(summary)")
    for change in result.record.changes {
      var line = " \(change.storage.padding(toLength: 8, withPad: " ", startingAt: 0)) \(change.name)"
      if let rank = change.rank { line += "  rank \(rank)" }
      if let norms = change.norms { line += String(format: "  ‖ΔW‖/‖W‖ %.3g", norms.relativeFrobenius) }
      if let residual = change.residualNonzeroCount, residual > 0 { line += "  residual \(residual) elements" }
      line += "  stored \(Format.bytes(change.storedByteCount))"
      output(line)
    }
  }
}
