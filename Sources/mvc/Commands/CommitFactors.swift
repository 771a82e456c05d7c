import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension MVC {
  struct CommitFactors: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "commit-factors",
      abstract: "Commit an editor's own low-rank factors as they are, with their provenance (plumbing).",
      discussion: """
        FILE is a safetensors file holding, for each edited tensor T, 'T.u' (rows×r) and 'T.v' \
        (cols×r) in storage orientation: ΔW = U·Vᵀ over T as stored, row-major (for GPT-2's \
        Conv1D, stored in×out, that is the transpose of the module's out×in update). The factors \
        are stored as Float32 with no residual: the new state is HEAD's tensor plus U·Vᵀ under \
        the canonical rule (docs/FORMAT.md); F64 factors are rounded to F32 and the commit \
        records which (details.rounded_from_f64). The touched tensors of the working model \
        are rewritten in place; the working model must be clean. Provenance goes into the \
        commit's edit-data/ as 'mvc edit' records it; with --keys, --values and --cov for one \
        tensor and method rome, emmet or memit, 'mvc score' scores the commit.

          mvc commit-factors f.safetensors -m "Eiffel Tower -> Rome" --method rome --facts fact.jsonl
          mvc commit-factors f.safetensors -m "batch 3" --method memit --hyperparameters h.json --json
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The factor file (.safetensors with T.u and T.v per tensor T).") var file: String
    @Option(name: .shortAndLong, help: "The commit message.") var message: String
    @Option(help: "The editing method, recorded as the commit's method (a-z 0-9 . _ -).") var method = "factors"
    @Option(help: "Facts as JSON lines, recorded verbatim.") var facts: String?
    @Option(help: "The editor's hyper-parameters, a JSON object.") var hyperparameters: String?
    @Option(help: "Edit keys, n×d_in (.npy).") var keys: String?
    @Option(help: "Target values, n×d_out (.npy).") var values: String?
    @Option(help: "C₀, d_in×d_in (.npy).") var cov: String?
    @Flag(help: "Write one JSON document (schema mvc.commit-factors/1).") var json = false

    func read(_ path: String, what: String) throws -> [UInt8] {
      guard let data = FileManager.default.contents(atPath: global.path(path)) else {
        throw RepositoryError.cannotAccess(path: path, operation: "read the \(what) file", reason: nil)
      }
      return Array(data)
    }

    func run() throws {
      let repository = try Session.open(global)
      let request = FactorCommitRequest(
        file: global.path(file), message: message, method: method,
        facts: try facts.map { try read($0, what: "facts") },
        hyperparameters: try hyperparameters.map { try read($0, what: "hyper-parameters") },
        keys: try keys.map { try NpyFile.read(from: global.path($0)) },
        values: try values.map { try NpyFile.read(from: global.path($0)) },
        covariance: try cov.map { try NpyFile.read(from: global.path($0)) })
      let stored = try repository.commitFactors(request)
      if json {
        output(
          try Format.json(
            CommitFactorsJSON(
              commit: CommitJSON(try repository.summary(of: stored.result.commit)),
              roundedFromF64: stored.roundedFromFloat64)))
        return
      }
      guard !global.quiet else { return }
      ChangeReport.print(stored.result, repository: repository)
      for name in stored.roundedFromFloat64 {
        Diagnostics.printError("note: factors of '\(name)' were F64 and are stored rounded to F32")
      }
    }
  }
}

struct CommitFactorsJSON: Encodable {
  var schema = "mvc.commit-factors/1"
  var commit: CommitJSON
  var roundedFromF64: [String]

  enum CodingKeys: String, CodingKey {
    case schema, commit
    case roundedFromF64 = "rounded_from_f64"
  }
}
