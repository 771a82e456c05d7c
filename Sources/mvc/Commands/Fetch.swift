import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Download objects and refs from another repository.",
      discussion: """
        Branches land in refs/remotes/REMOTE/*, tags in refs/tags/*; the working model and \
        your branches stay as they are.

          mvc fetch
          mvc fetch upstream
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The remote (default: origin).") var remote = "origin"

    func run() throws {
      let repository = try Session.open(global)
      let summary = try repository.fetch(remote: remote)
      guard !global.quiet, !summary.updates.isEmpty else { return }
      Diagnostics.printError("From \(summary.url)")
      for update in summary.updates {
        let short = update.name.replacingOccurrences(of: "refs/remotes/", with: "")
          .replacingOccurrences(of: "refs/tags/", with: "")
        let range = update.old.map { "   \($0.shortHex)..\(update.new.shortHex)" } ?? " * [new ref]        "
        Diagnostics.printError("\(range)  \(short)")
      }
    }
  }
}
