import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension MVC {
  struct AccumulatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "accumulator",
      abstract: "Print Σ KKᵀ of a tensor's recorded edit keys at a revision (AlphaEdit's cache_c, ENCORE's SEQ_CACHE).",
      discussion: """
        The sum runs over the keys recorded by the edits present in the state of REV: a merge \
        brings both sides', a revert removes its source's, a cherry-pick adds them again. An \
        edit present that changed the tensor without recording keys is refused by name. This is \
        what 'mvc edit --method alphaedit|encore' uses; the matrix is cached in .mvc/mvc-cache.

          mvc accumulator model.layers.5.mlp.down_proj.weight
          mvc accumulator model.layers.5.mlp.down_proj.weight v3 -o cache_c.npy --json   # mvc.accumulator/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The tensor.") var tensor: String
    @Argument(help: "The revision (default HEAD).") var revision = "HEAD"
    @Option(name: .shortAndLong, help: "Write the d_in×d_in matrix as float64 .npy to this file.") var output: String?
    @Flag(help: "Write one JSON document (schema mvc.accumulator/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let commit = try repository.resolve(revision)
      let accumulator = try repository.accumulator(tensor, at: commit)
      if let output {
        let d = accumulator.dimension
        try NpyFile.write(accumulator.matrix, shape: [d, d], to: global.path(output))
      }
      let d = accumulator.dimension
      let trace = (0..<d).map { accumulator.matrix[$0 * d + $0] }.reduce(0, +)
      if json {
        mvcOutput(
          try Format.json(
            AccumulatorJSON(
              tensor: tensor, revision: commit.hex, dimension: d, keyCount: accumulator.keyCount, trace: trace,
              cacheKey: accumulator.key, fromCache: accumulator.fromCache, file: output,
              edits: accumulator.terms.map {
                .init(commit: $0.source.hex, multiplicity: $0.multiplicity, keyCount: $0.keyCount)
              })))
        return
      }
      guard !global.quiet else { return }
      for term in accumulator.terms {
        let summary = (try? repository.commitInfo(term.source).summary) ?? ""
        mvcOutput("\(term.source.shortHex) ×\(term.multiplicity) \(term.keyCount) keys  \(summary)")
      }
      mvcOutput(
        "\(accumulator.terms.count) edits, \(accumulator.keyCount) keys, d_in \(d), trace \(String(format: "%.6g", trace))"
      )
    }
  }
}

private func mvcOutput(_ text: String) { output(text) }

struct AccumulatorJSON: Encodable {
  struct Edit: Encodable {
    var commit: String
    var multiplicity: Int
    var keyCount: Int
    enum CodingKeys: String, CodingKey {
      case commit, multiplicity
      case keyCount = "key_count"
    }
  }
  var schema = "mvc.accumulator/1"
  var tensor: String
  var revision: String
  var dimension: Int
  var keyCount: Int
  var trace: Double
  var cacheKey: String
  var fromCache: Bool
  @NullWhenAbsent var file: String?
  var edits: [Edit]

  enum CodingKeys: String, CodingKey {
    case schema, tensor, revision, dimension, trace, file, edits
    case keyCount = "key_count"
    case cacheKey = "cache_key"
    case fromCache = "from_cache"
  }
}
