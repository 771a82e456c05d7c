import ArgumentParser
import EditVCS
import Foundation

extension ResetMode: EnumerableFlag {
  public static func help(for value: ResetMode) -> ArgumentHelp? {
    switch value {
    case .soft: return "Move the branch only; the working model keeps its bytes (shown as changes)."
    case .mixed: return "git's default; with no index, the same as --soft."
    case .hard: return "Also rewrite the working model to REV, discarding uncommitted changes."
    }
  }
}

extension MVC {
  struct Reset: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Reset the current branch (HEAD) to a commit.",
      discussion: """
        The branch HEAD is on (or a detached HEAD) moves to REV. The old tip is kept in \
        ORIG_HEAD and in the reflog, so 'mvc reset --hard ORIG_HEAD' or 'mvc reset --hard \
        HEAD@{1}' undoes a reset. --soft and --mixed (the default; there is no index) leave the \
        working model as it is and refuse when it has uncommitted changes; --hard rewrites it \
        through the same journaled move as checkout and discards uncommitted changes.

          mvc reset --hard HEAD~3       # drop the last three edits
          mvc reset --soft HEAD~2       # their changes, uncommitted
          mvc reset --hard HEAD@{1}     # undo the reset
        """)

    @OptionGroup var global: GlobalOptions
    @Flag var mode: ResetMode = .mixed
    @Argument(help: "Where the branch goes.") var revision = "HEAD"

    func run() throws {
      let repository = try Session.open(global)
      let target = try repository.resolve(revision)
      do {
        try repository.reset(to: target, mode: mode, revision: revision)
      } catch let error as RepositoryError {
        guard case .uncommittedChanges = error else { throw error }
        throw ResetRefused(error: error, revision: revision)
      }
      guard mode == .hard, !global.quiet else { return }
      output("HEAD is now at \(target.shortHex) \((try? repository.commitInfo(target).summary) ?? "")")
    }
  }
}

/// `--soft`/`--mixed` over uncommitted changes: git's hint points at `--hard`, not `--force`.
struct ResetRefused: LocalizedError {
  var error: RepositoryError
  var revision: String
  var errorDescription: String? { error.errorDescription }
  var recoverySuggestion: String? {
    "commit them ('mvc commit -m ...') first, or discard them with 'mvc reset --hard \(revision)'"
  }
}
