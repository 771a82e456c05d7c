import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Diff: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show the tensors that differ between two states, with rank and norms.",
      discussion: """
        With no revision: HEAD against the working model. With one: that revision against the \
        working model. With two: the first against the second.

          mvc diff                      # what 'mvc commit' would record
          mvc diff HEAD~5 HEAD --stat
          mvc diff main alt --json      # schema mvc.diff/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Up to two revisions.") var revisions: [String] = []
    @Flag(help: "Only the summary line per tensor (the default output is already a summary).") var stat = false
    @Flag(help: "Write one JSON document (schema mvc.diff/1).") var json = false
    @Flag(help: "Exit with 1 when there are differences.") var exitCode = false

    func validate() throws {
      if revisions.count > 2 { throw ValidationError("at most two revisions") }
    }

    func run() throws {
      let repository = try Session.open(global)
      let from = try revisions.first.map { try repository.resolve($0) } ?? repository.headCommit()
      let to = try revisions.count == 2 ? repository.resolve(revisions[1]) : nil
      let diffs = try repository.diff(from: from, to: to)
      if json {
        output(try Format.json(DiffJSON(from: from.hex, to: to?.hex, diffs: diffs)))
      } else {
        for d in diffs {
          var line =
            "\(d.change.padding(toLength: 9, withPad: " ", startingAt: 0)) \(d.name) \(d.dtype.rawValue) \(Format.shape(d.shape))"
          if d.change == "modified" {
            line += d.rank.map { " rank \($0)" } ?? " dense"
            if let f = d.frobenius { line += String(format: " ‖ΔW‖_F %.4g", f) }
            if let s = d.spectral { line += String(format: " ‖ΔW‖_2 %.4g", s) }
            if let f = d.frobenius, let w = d.weightFrobenius, w > 0 { line += String(format: " ‖ΔW‖/‖W‖ %.3g", f / w) }
          }
          output(line)
        }
        if !stat { output("\(diffs.count) tensor\(diffs.count == 1 ? "" : "s") differ") }
      }
      if exitCode && !diffs.isEmpty { throw ExitCode(1) }
    }
  }
}

struct DiffJSON: Encodable {
  struct Entry: Encodable {
    var tensor: String
    var change: String
    var dtype: String
    var shape: [Int]
    @NullWhenAbsent var rank: Int?
    @NullWhenAbsent var frobeniusNorm: Double?
    @NullWhenAbsent var spectralNorm: Double?
    @NullWhenAbsent var weightFrobeniusNorm: Double?

    enum CodingKeys: String, CodingKey {
      case tensor, change, dtype, shape, rank
      case frobeniusNorm = "frobenius_norm"
      case spectralNorm = "spectral_norm"
      case weightFrobeniusNorm = "weight_frobenius_norm"
    }
  }
  var schema = "mvc.diff/1"
  var from: String
  @NullWhenAbsent var to: String?
  var tensors: [Entry]

  init(from: String, to: String?, diffs: [TensorDiff]) {
    self.from = from
    self.to = to
    tensors = diffs.map {
      Entry(
        tensor: $0.name, change: $0.change, dtype: $0.dtype.rawValue, shape: $0.shape, rank: $0.rank,
        frobeniusNorm: $0.frobenius, spectralNorm: $0.spectral, weightFrobeniusNorm: $0.weightFrobenius)
    }
  }
}
