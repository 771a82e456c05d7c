import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Fetch from a remote and fast-forward the current branch and the working model.",
      discussion: """
        The working model follows through the same journaled rewrite as checkout. Uncommitted \
        changes are refused. When the histories have diverged, combine them with 'mvc merge'.

          mvc pull
          mvc pull origin main
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The remote (default: origin).") var remote = "origin"
    @Argument(help: "The remote branch (default: the current branch's name).") var branch: String?
    @Flag(help: "Replay local commits on top of the remote's (their deltas, as factors).") var rebase = false

    func run() throws {
      let repository = try Session.open(global)
      let outcome = try repository.pull(remote: remote, branch: branch, rebase: rebase)
      guard !global.quiet else { return }
      switch outcome {
      case .alreadyUpToDate:
        Diagnostics.printError("Already up to date.")
      case .fastForward(let from, let to, let rewritten):
        Diagnostics.printError("Updating \(from?.shortHex ?? "(none)")..\(to.shortHex)")
        Diagnostics.printError("Fast-forward: \(rewritten) tensor\(rewritten == 1 ? "" : "s") rewritten")
      case .rebased(let onto, let tip, let replayed):
        Diagnostics.printError(
          "Rebased \(replayed) commit\(replayed == 1 ? "" : "s") onto \(onto.shortHex): now at \(tip.shortHex)")
      }
    }
  }
}
