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
    case schema, revision, edits, unscored, preservation
    case meanRetention = "mean_retention"
    case minimumRetention = "minimum_retention"
  }
}
