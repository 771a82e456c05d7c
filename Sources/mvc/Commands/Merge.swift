import Apply
import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension MergeStrategy: ExpressibleByArgument {}

extension MVC {
  struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Join another branch's edits into the current branch.",
      discussion: """
        sum adds the other side's deltas since the merge base (exact in factors). resolve \
        re-solves one joint EMMET (MEMIT if any side used it) update over the keys and values \
        recorded on both sides, against the merge base, so interfering edits are balanced; it \
        refuses, naming the commits, when an edit has no recorded keys. The commit message \
        reports the mean retention under both strategies when keys were recorded.

          mvc merge alt
          mvc merge alt --strategy resolve
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The branch (or revision) to merge.") var branch: String
    @Option(help: "sum or resolve.") var strategy: MergeStrategy = .sum
    @Option(name: .shortAndLong, help: "The merge commit's message.") var message: String?

    func run() throws {
      let repository = try Session.open(global)
      let result = try repository.merge(
        try repository.resolve(branch), name: branch, strategy: strategy, message: message)
      switch result.kind {
      case .upToDate: output("Already up to date.")
      case .fastForward: output("Fast-forward to \(result.commit.shortHex)")
      case .merged:
        output("Merge made by the '\(strategy.rawValue)' strategy: \(result.commit.shortHex)")
        for key in result.scores.keys.sorted() {
          output("  mean retention (\(key)): \(String(format: "%.4f", result.scores[key] ?? 0))")
        }
      }
    }
  }
}
