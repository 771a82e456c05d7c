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
    @Flag(help: "Write one JSON document (schema mvc.bisect-step/1; with --jobs, mvc.bisect-probes/1).")
    var json = false
    @Option(
      help: """
        List up to this many commits to test at once (those that split the candidates into near-equal \
        parts, as 'bisect run --jobs' chooses them); nothing is checked out.
        """)
    var jobs: Int?
    @Option(help: "With --jobs: a commit already under test elsewhere (repeatable); the others are chosen around it.")
    var pending: [String] = []

    func validate() throws {
      if let jobs, jobs < 1 || jobs > 1024 { throw ValidationError("--jobs takes 1 to 1024 probes at once") }
      if jobs == nil && !pending.isEmpty { throw ValidationError("--pending goes with --jobs") }
    }

    func run() throws {
      let repository = try Session.open(global)
      guard let jobs else {
        return try BisectReport.print(try repository.bisectNext(), repository: repository, json: json)
      }
      let pendingIDs = try pending.map { try repository.resolve($0) }
      let choice = try repository.bisectProbes(count: jobs, pending: pendingIDs)
      let result = BisectProbesJSON(choice, pending: pendingIDs)
      if json { return output(try Format.json(result)) }
      if let conclusion = choice.conclusion { return try BisectReport.print(conclusion, repository: repository) }
      output(
        "\(choice.probes.count) commit\(choice.probes.count == 1 ? "" : "s") to test at once of \(choice.candidates.count) candidates (at most \(choice.largestPart) left after):"
      )
      for id in choice.probes { output("[\(id.hex)] \(try repository.commitInfo(id).summary)") }
    }
  }
}

/// `mvc.bisect-probes/1`: the commits to test at once (`bisect next --jobs K --json`).
struct BisectProbesJSON: Encodable {
  var schema = "mvc.bisect-probes/1"
  /// `testing`, `first_bad`, `only_skipped_left` or `waiting`.
  var status: String
  /// The commits to test, oldest first (empty unless `testing`, and when every useful one is pending).
  var probes: [String]
  var pending: [String]
  /// The number of candidates, and the largest part the probes and the pending ones can leave.
  var candidateCount: Int
  var largestPart: Int
  /// The first bad commit (`first_bad`).
  @NullWhenAbsent var commit: String?
  /// The commits that could be the first bad one (`only_skipped_left`).
  var candidates: [String]

  init(_ choice: BisectProbeChoice, pending: [ObjectID]) {
    probes = choice.probes.map(\.hex)
    self.pending = pending.map(\.hex)
    candidateCount = choice.candidates.count
    largestPart = choice.largestPart
    candidates = []
    switch choice.conclusion {
    case nil: status = "testing"
    case .firstBad(let id):
      status = "first_bad"
      commit = id.hex
    case .onlySkippedLeft(let ids):
      status = "only_skipped_left"
      candidates = ids.map(\.hex)
    case .waiting, .testing: status = "waiting"
    }
  }

  enum CodingKeys: String, CodingKey {
    case schema, status, probes, pending, commit, candidates
    case candidateCount = "candidate_count"
    case largestPart = "largest_part"
  }

}

/// `mvc.bisect-step/1`: what a bisection does after a start, a mark or `next`.
struct BisectStepJSON: Encodable {
  var schema = "mvc.bisect-step/1"
  /// `waiting`, `testing`, `first_bad` or `only_skipped_left`.
  var status: String
  /// The commit to test (`testing`) or the first bad commit (`first_bad`).
  @NullWhenAbsent var commit: String?
  @NullWhenAbsent var remaining: Int?
  @NullWhenAbsent var steps: Int?
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

}
