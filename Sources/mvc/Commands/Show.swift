import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show a commit: message, and per tensor its storage, rank and norms.",
      discussion: """
          mvc show
          mvc show HEAD~2
          mvc show v1 --json        # schema mvc.show/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The commit (default HEAD).") var revision = "HEAD"
    @Flag(help: "Write one JSON document (schema mvc.show/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let id = try repository.resolve(revision)
      let history = try repository.log(from: id)
      let flags = NormOutliers.flags(history.reversed()).filter { $0.commit == id }
      guard let summary = history.first else { return }
      if json {
        output(try Format.json(ShowJSON(commit: CommitJSON(summary, flags: flags))))
        return
      }
      output(CommitText.render(summary, oneline: false, stat: true, flags: flags))
    }
  }
}

struct ShowJSON: Encodable {
  var schema = "mvc.show/1"
  var commit: CommitJSON
}
