import ArgumentParser
import EditVCS
import Foundation

extension MVC.Bisect {
  struct Next: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Compute the commit to test next (and check it out, unless --no-checkout was given).",
      discussion: """
        git's 'bisect next': the step the marks so far give, by the same algorithm as every \
        mark. A program that drives the bisection itself (the Python client) asks for it with \
        --json, tests the commit, and records the answer with 'mvc bisect good|bad|skip REV'.

          mvc bisect start --no-checkout HEAD v1 --json
          mvc bisect next --json        # schema mvc.bisect-step/1
        """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Write one JSON document (schema mvc.bisect-step/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      try BisectReport.print(try repository.bisectNext(), repository: repository, json: json)
    }
  }
}

/// `mvc.bisect-step/1`: what a bisection does after a start, a mark or `next`.
struct BisectStepJSON: Encodable {
  var schema = "mvc.bisect-step/1"
  /// `waiting`, `testing`, `first_bad` or `only_skipped_left`.
  var status: String
  /// The commit to test (`testing`) or the first bad commit (`first_bad`).
  var commit: String?
  var remaining: Int?
  var steps: Int?
  /// The commits that could be the first bad one (`only_skipped_left`).
  var candidates: [String]
  var needGood: Bool
  var needBad: Bool
  var noCheckout: Bool

  init(_ outcome: BisectOutcome, noCheckout: Bool) {
    self.noCheckout = noCheckout
    candidates = []
    needGood = false
    needBad = false
    switch outcome {
    case .waiting(let good, let bad):
      status = "waiting"
      needGood = good
      needBad = bad
    case .testing(let id, let remaining, let steps):
      status = "testing"
      commit = id.hex
      self.remaining = remaining
      self.steps = steps
    case .firstBad(let id):
      status = "first_bad"
      commit = id.hex
    case .onlySkippedLeft(let ids):
      status = "only_skipped_left"
      candidates = ids.map(\.hex)
    }
  }

  enum CodingKeys: String, CodingKey {
    case schema, status, commit, remaining, steps, candidates
    case needGood = "need_good"
    case needBad = "need_bad"
    case noCheckout = "no_checkout"
  }

  func encode(to encoder: Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(schema, forKey: .schema)
    try container.encode(status, forKey: .status)
    try container.encode(commit, forKey: .commit)
    try container.encode(remaining, forKey: .remaining)
    try container.encode(steps, forKey: .steps)
    try container.encode(candidates, forKey: .candidates)
    try container.encode(needGood, forKey: .needGood)
    try container.encode(needBad, forKey: .needBad)
    try container.encode(noCheckout, forKey: .noCheckout)
  }
}
