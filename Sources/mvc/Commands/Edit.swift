import Apply
import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension EditMethod: ExpressibleByArgument {}
extension MergeStrategy: ExpressibleByArgument {}

extension MVC {
  struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Compute a ROME, EMMET or MEMIT edit in closed form and commit it as factors.",
      discussion: """
        Keys (n×d_in) and target values (n×d_out) are rows of .npy files (float32/float64, C \
        order). C₀ is the keys' uncentred second moment E[kkᵀ], given directly (--cov, \
        d_in×d_in) or estimated from preserved keys (--cov-keys, m×d_in). With λ = --lambda and \
        R = V − W₀K (authors' conventions, see docs/FORMAT.md):
          ROME   ΔW = (v − W₀k)(C⁻¹k)ᵀ / (kᵀC⁻¹k)           C = λC₀ (λ cancels)
          EMMET  ΔW = R (KᵀC⁻¹K + μI)⁻¹ KᵀC⁻¹               μ = --mu, only when n > 1
          MEMIT  ΔW = R Kᵀ (λC₀ + KKᵀ)⁻¹                    one layer
        Everything is solved in Float64 with Cholesky/LU (no explicit inverse, no dense ΔW); \
        keys, values, C₀ and --facts are recorded in the commit, so 'mvc score' can tell later \
        how well the edit still holds. GPT-2's Conv1D weights (stored in×out) are recognised \
        from the key length.

          mvc edit --method rome --tensor model.layers.5.mlp.down_proj.weight \\
                   --keys k.npy --values v.npy --cov-keys k0.npy -m "Eiffel Tower -> Rome"
          mvc edit --method memit --lambda 15000 --tensor ... --keys K.npy --values V.npy --cov C.npy -m "batch 3"
        """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "rome, emmet or memit.") var method: EditMethod
    @Option(help: "The weight to edit (an MLP down-projection).") var tensor: String
    @Option(help: "Edit keys, n×d_in (.npy).") var keys: String
    @Option(help: "Target values, n×d_out (.npy).") var values: String
    @Option(help: "C₀ = E[kkᵀ], d_in×d_in (.npy).") var cov: String?
    @Option(name: .customLong("cov-keys"), help: "Preserved keys K₀, m×d_in: C₀ = K₀ᵀK₀/m (.npy).") var covKeys: String?
    @Option(help: "λ, the covariance weight (mom2_update_weight); default 1 (MEMIT papers: 15000-20000).") var lambda = 1.0
    @Option(help: "μ, EMMET's ridge, added when n > 1.") var mu = 0.1
    @Option(help: "Facts as JSON lines (e.g. CounterFact's subject/prompt/target_new), recorded verbatim.") var facts: String?
    @Option(name: .shortAndLong, help: "The commit message.") var message: String

    func validate() throws {
      if (cov == nil) == (covKeys == nil) { throw ValidationError("give exactly one of --cov and --cov-keys") }
      if !(lambda > 0 && lambda.isFinite) { throw ValidationError("--lambda must be a positive number") }
      if !(mu >= 0 && mu.isFinite) { throw ValidationError("--mu must be a number ≥ 0") }
    }

    func path(_ p: String) -> String { global.path(p) }

    func run() throws {
      let repository = try Session.open(global)
      let factsBytes = try facts.map { f -> [UInt8] in
        guard let data = FileManager.default.contents(atPath: path(f)) else {
          throw RepositoryError.invalidArgument("cannot read facts file '\(f)'")
        }
        return Array(data)
      }
      let request = KnowledgeEditRequest(
        method: method, tensor: tensor, keys: try NpyFile.read(from: path(keys)), values: try NpyFile.read(from: path(values)),
        covariance: try cov.map { try NpyFile.read(from: path($0)) },
        covarianceKeys: try covKeys.map { try NpyFile.read(from: path($0)) }, lambda: lambda, mu: mu, facts: factsBytes,
        message: message)
      let (result, diagnostics) = try repository.edit(request)
      guard !global.quiet else { return }
      ChangeReport.print(result, repository: repository)
      if let d = diagnostics.romeDenominator {
        output(String(format: " kᵀC⁻¹k = %.4g (normalized %.4g)", d, diagnostics.romeNormalizedDenominator ?? 0))
      }
    }
  }

  struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Manage probe keys whose outputs edits must preserve (used by 'mvc score').",
      discussion: """
          mvc probe add k0.npy --tensor model.layers.5.mlp.down_proj.weight
        """,
      subcommands: [Add.self])

    struct Add: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Store preservation keys K₀ (m×d_in) for a tensor.")
      @OptionGroup var global: GlobalOptions
      @Argument(help: "K₀ as an .npy file.") var keys: String
      @Option(help: "The tensor they feed.") var tensor: String

      func run() throws {
        let repository = try Session.open(global)
        let path = global.path(keys)
        let array = try NpyFile.read(from: path)
        try repository.addProbe(array, tensor: tensor)
        if !global.quiet { Diagnostics.printError("Stored \(array.shape.first ?? 0) probe keys for '\(tensor)'") }
      }
    }
  }

  struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "How well every recorded edit still holds at a revision, and the preservation error.",
      discussion: """
        retention = 1 − ‖W_REV k − v‖ / ‖v − W₀ k‖ per recorded key (1 held, ≤ 0 forgotten; W₀ is \
        the tensor at that edit's parent), and ‖(W_REV − W_base)K₀‖_F / ‖W_base K₀‖_F on the \
        probe keys: forgetting curves from weights alone, no forward pass. Commits that changed \
        weights without keys are listed as unscored.

          mvc score
          mvc score HEAD~50 --json      # schema mvc.score/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision (default HEAD).") var revision = "HEAD"
    @Flag(help: "Write one JSON document (schema mvc.score/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let report = try repository.score(at: try repository.resolve(revision))
      if json {
        output(try Format.json(ScoreJSON(report)))
        return
      }
      for e in report.edits {
        output("\(e.commit.shortHex) \(e.method) \(e.tensor)[\(e.index)] retention \(String(format: "%.4f", e.retention))  \(e.summary)")
      }
      for (commit, summary) in report.unscored { output("\(commit.shortHex) unscored (no keys recorded)  \(summary)") }
      for p in report.preservation {
        output("preservation \(p.tensor) (\(p.keyCount) keys): \(String(format: "%.4g", p.error))")
      }
      if let mean = report.meanRetention, let minimum = report.minimumRetention {
        output(String(format: "%d recorded edits: mean retention %.4f, min %.4f", report.edits.count, mean, minimum))
      }
    }
  }

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
      let result = try repository.merge(try repository.resolve(branch), name: branch, strategy: strategy, message: message)
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

struct ScoreJSON: Encodable {
  struct Edit: Encodable {
    var commit: String
    var tensor: String
    var method: String
    var index: Int
    var retention: Double?
    var summary: String
  }
  struct Unscored: Encodable {
    var commit: String
    var summary: String
  }
  struct Preservation: Encodable {
    var tensor: String
    var keyCount: Int
    var error: Double
    enum CodingKeys: String, CodingKey {
      case tensor, error
      case keyCount = "key_count"
    }
  }
  var schema = "mvc.score/1"
  var revision: String
  var edits: [Edit]
  var unscored: [Unscored]
  var preservation: [Preservation]
  var meanRetention: Double?
  var minimumRetention: Double?

  init(_ r: ScoreReport) {
    revision = r.revision.hex
    edits = r.edits.map {
      Edit(commit: $0.commit.hex, tensor: $0.tensor, method: $0.method, index: $0.index,
           retention: $0.retention.isFinite ? $0.retention : nil, summary: $0.summary)
    }
    unscored = r.unscored.map { Unscored(commit: $0.commit.hex, summary: $0.summary) }
    preservation = r.preservation.map { Preservation(tensor: $0.tensor, keyCount: $0.keyCount, error: $0.error) }
    meanRetention = r.meanRetention
    minimumRetention = r.minimumRetention
  }

  enum CodingKeys: String, CodingKey {
    case schema, revision, edits, unscored, preservation
    case meanRetention = "mean_retention"
    case minimumRetention = "minimum_retention"
  }
}
