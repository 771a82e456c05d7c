import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Draw each commit's relative update norm per tensor as a self-contained SVG.",
      discussion: """
        The y axis is logarithmic: a disabling edit stands orders of magnitude above the rest. \
        Norm outliers get an orange ring, reverted commits a grey dashed line, and the culprit \
        (--culprit, or the first bad commit found by the current bisection) a red band.

          mvc plot --out norms.svg
          mvc plot --out norms.svg --culprit HEAD~13 alt
        """)

    @OptionGroup var global: GlobalOptions
    @Option(name: .shortAndLong, help: "The SVG file to write.") var out: String
    @Option(help: "Mark this commit as the culprit.") var culprit: String?
    @Argument(help: "The history's tip (default HEAD).") var revision = "HEAD"

    func run() throws {
      let repository = try Session.open(global)
      let input = try repository.normPlotInput(
        tip: try repository.resolve(revision), culprit: try culprit.map { try repository.resolve($0) })
      let path = global.path(out)
      do {
        try Data(NormPlot.svg(input).utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
      } catch {
        throw RepositoryError.cannotAccess(path: out, operation: "write", reason: error.localizedDescription)
      }
      if !global.quiet { Diagnostics.printError("Wrote \(input.commitLabels.count) commits to '\(out)'") }
    }
  }
}
