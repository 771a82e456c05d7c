import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Update a remote's branch and tags with the local ones.",
      discussion: """
        Sends refs/heads/BRANCH (fast-forward only) and every tag, with the objects they need. \
        The local keyframe cache never travels.

          mvc push
          mvc push origin experiment
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The remote (default: origin).") var remote = "origin"
    @Argument(help: "The branch (default: the current branch).") var branch: String?

    func run() throws {
      let repository = try Session.open(global)
      let summary = try repository.push(remote: remote, branch: branch)
      if let path = summary.referenceBasePath {
        Diagnostics.warn(
          "the base model is stored by reference: clones need the base file at '\(path)'")
      }
      guard !global.quiet else { return }
      Diagnostics.printError("To \(summary.url)")
      if summary.updates.isEmpty {
        Diagnostics.printError("Everything up-to-date")
      }
      for update in summary.updates {
        let range = update.old.map { "   \($0.shortHex)..\(update.new.shortHex)" } ?? " * [new branch]     "
        Diagnostics.printError("\(range)  \(summary.branch) -> \(summary.branch)")
      }
    }
  }
}
