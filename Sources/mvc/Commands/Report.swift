import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write the history as one self-contained HTML page: graph, edits, signals, bisection.",
      discussion: """
        One file, inline CSS and SVG, no script and no network: open it in any browser, mail it, \
        keep it beside a paper. It holds the commit graph with branches and tags; per commit \
        its message, method, recorded facts, tensors with rank, relative norm and storage, and \
        flags (norm outliers, drift, reverts, bisection marks); charts of the collapse signals \
        ('mvc score --signals') and of the recorded edits' retention along the first-parent \
        history of HEAD, and the relative update norms ('mvc plot'); the running or finished \
        bisection with its first bad commit (or --culprit).

          mvc report -o history.html
          mvc report -o history.html --culprit HEAD~13
          mvc report -o history.html main       # during a bisection: the charts follow main
        """)

    @OptionGroup var global: GlobalOptions
    @Option(name: .shortAndLong, help: "The HTML file to write.") var output: String
    @Option(help: "Mark this commit as the culprit.") var culprit: String?
    @Argument(help: "The tip whose first-parent history the charts follow (default HEAD).") var revision = "HEAD"

    func run() throws {
      let repository = try Session.open(global)
      let input = try repository.historyReportInput(
        tip: try repository.resolve(revision), culprit: try culprit.map { try repository.resolve($0) })
      let path = global.path(output)
      do {
        try Data(HistoryReport.html(input).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
      } catch {
        throw RepositoryError.cannotAccess(path: output, operation: "write", reason: error.localizedDescription)
      }
      if !global.quiet { Diagnostics.printError("Wrote \(input.rows.count) commits to '\(output)'") }
    }
  }
}
