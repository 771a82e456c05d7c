import Apply
import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension MVC {
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
          mvc score --signals           # collapse signals per edited tensor along the history

        --signals adds, per float matrix changed on the first-parent history and at each commit \
        that changed it: ‖W_t‖_F/‖W_0‖_F (norm growth), ‖W_t − W_0‖_F, the spectral norm σ₁ of \
        the cumulative update and σ₁²/‖ΔW‖_F² (its top-direction energy), and ‖W_t − W_0‖_F/√t \
        against its early value (the median of the first 5 changes): '!' marks where it first \
        exceeds 1.5× (the flag 'log --stat' shows; in the authors' MEMIT runs retention fell \
        100-300 edits later). W_0 is the root's state.
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision (default HEAD).") var revision = "HEAD"
    @Flag(help: "Write one JSON document (schema mvc.score/1).") var json = false
    @Flag(help: "Add the collapse signals of every edited tensor along the history.") var signals = false

    func run() throws {
      let repository = try Session.open(global)
      let commit = try repository.resolve(revision)
      let report = try repository.score(at: commit)
      let signalReport = signals ? try repository.signals(at: commit) : nil
      if json {
        var document = ScoreJSON(report)
        document.signals = signalReport.map(SignalsJSON.init)
        output(try Format.json(document))
        return
      }
      if let signalReport {
        for p in signalReport.points {
          output(
            String(
              format: "%@ %@ edits %d ‖W‖/‖W₀‖ %.6f ‖W−W₀‖_F %.4g σ₁ %.4g σ₁²/‖ΔW‖² %.3f drift %@%@",
              p.commit.shortHex, p.tensor, p.editCount, p.measure.normGrowth, p.measure.distance, p.measure.spectral,
              p.measure.topEnergy ?? 0, p.driftRatio.map { String(format: "%.2f×", $0) } ?? "-",
              p.flagged ? " !" : ""))
        }
      }
      for e in report.edits {
        output(
          "\(e.commit.shortHex) \(e.method) \(e.tensor)[\(e.index)] retention \(String(format: "%.4f", e.retention))  \(e.summary)"
        )
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
}

struct ScoreJSON: Encodable {
  struct Edit: Encodable {
    var commit: String
    var tensor: String
    var method: String
    var index: Int
    @NullWhenAbsent var retention: Double?
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
  @NullWhenAbsent var meanRetention: Double?
  @NullWhenAbsent var minimumRetention: Double?
  /// With --signals only.
  @NullWhenAbsent var signals: SignalsJSON?

  init(_ r: ScoreReport) {
    revision = r.revision.hex
    edits = r.edits.map {
      Edit(
        commit: $0.commit.hex, tensor: $0.tensor, method: $0.method, index: $0.index,
        retention: $0.retention.isFinite ? $0.retention : nil, summary: $0.summary)
    }
    unscored = r.unscored.map { Unscored(commit: $0.commit.hex, summary: $0.summary) }
    preservation = r.preservation.map { Preservation(tensor: $0.tensor, keyCount: $0.keyCount, error: $0.error) }
    meanRetention = r.meanRetention
    minimumRetention = r.minimumRetention
  }

  enum CodingKeys: String, CodingKey {
    case schema, revision, edits, unscored, preservation, signals
    case meanRetention = "mean_retention"
    case minimumRetention = "minimum_retention"
  }
}

/// The `signals` object of `mvc.score/1` (`score --signals --json`).
struct SignalsJSON: Encodable {
  struct Point: Encodable {
    var commit: String
    var position: Int
    var tensor: String
    var editCount: Int
    var normGrowth: Double
    var weightNorm: Double
    var baseNorm: Double
    var distance: Double
    var spectralNorm: Double
    @NullWhenAbsent var topEnergy: Double?
    var driftPerSqrtEdit: Double
    @NullWhenAbsent var driftRatio: Double?
    var flagged: Bool

    enum CodingKeys: String, CodingKey {
      case commit, position, tensor, distance, flagged
      case editCount = "edit_count"
      case normGrowth = "norm_growth"
      case weightNorm = "weight_norm"
      case baseNorm = "base_norm"
      case spectralNorm = "spectral_norm"
      case topEnergy = "top_energy"
      case driftPerSqrtEdit = "drift_per_sqrt_edit"
      case driftRatio = "drift_ratio"
    }
  }
  var commits: [String]
  var driftFactor = SignalFlags.driftFactor
  var points: [Point]

  init(_ r: SignalReport) {
    commits = r.commits.map(\.id.hex)
    points = r.points.map {
      Point(
        commit: $0.commit.hex, position: $0.position, tensor: $0.tensor, editCount: $0.editCount,
        normGrowth: $0.measure.normGrowth, weightNorm: $0.measure.weightNorm, baseNorm: $0.measure.baseNorm,
        distance: $0.measure.distance, spectralNorm: $0.measure.spectral, topEnergy: $0.measure.topEnergy,
        driftPerSqrtEdit: $0.driftPerSqrtEdit, driftRatio: $0.driftRatio, flagged: $0.flagged)
    }
  }

  enum CodingKeys: String, CodingKey {
    case commits, points
    case driftFactor = "drift_factor"
  }
}
