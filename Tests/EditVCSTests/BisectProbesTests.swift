import TestSupport
import Testing

@testable import EditVCS

// Parallel bisection's probe choice (BisectAlgorithm.probes): k commits that split the candidates
// into k+1 near-equal parts. Histories are integers, 0 the good root, higher numbers newer.

private func linear(_ candidateCount: Int) -> BisectGraph<Int> {
  var parents: [Int: [Int]] = [:]
  for id in 1...candidateCount { parents[id] = [id - 1] }
  return BisectGraph(commits: Array((0...candidateCount).reversed()), parents: parents)
}

/// A seeded DAG: commit i > 0 has one or two parents among earlier commits.
private func randomDAG(_ commitCount: Int, seed: UInt64) -> BisectGraph<Int> {
  var random = SplitMix64(seed: seed)
  var parents: [Int: [Int]] = [:]
  for id in 1..<commitCount {
    let first = id - 1 - Int(random.next() % UInt64(min(id, 3)))
    if id > 2 && random.next() % 4 == 0 {
      let second = Int(random.next() % UInt64(id))
      parents[id] = second == first ? [first] : [first, second]
    } else {
      parents[id] = [first]
    }
  }
  return BisectGraph(commits: Array((0..<commitCount).reversed()), parents: parents)
}

/// Σ |part|² over the parts `probes` cut the candidates into, by brute force.
private func cost(_ graph: BisectGraph<Int>, bad: Int, good: Set<Int>, probes: [Int]) -> Int {
  let candidates = BisectAlgorithm.candidates(graph: graph, bad: bad, good: good)
  var parts: [[Bool]: Int] = [:]
  for c in candidates { parts[probes.map { graph.isAncestor(c, of: $0) }, default: 0] += 1 }
  return parts.values.reduce(0) { $0 + $1 * $1 }
}

/// Runs a parallel bisection in rounds of `k` probes against an oracle.
/// - Returns: the first bad commit found (nil if none) and the number of rounds.
private func roundsToCulprit(_ graph: BisectGraph<Int>, bad: Int, k: Int, culprit: Int) -> (Int?, Int) {
  var bad = bad
  var good: Set<Int> = [0]
  var rounds = 0
  while rounds <= graph.commitCount {
    let step = BisectAlgorithm.next(graph: graph, bad: bad, good: good, skipped: [])
    if case .firstBad(let id) = step { return (id, rounds) }
    let plan = BisectAlgorithm.probes(graph: graph, bad: bad, good: good, skipped: [], count: k, breakingTiesBy: <)
    guard !plan.probes.isEmpty else { return (nil, rounds) }
    rounds += 1
    // The answers of one round, recorded as git would take them: every good, then the
    // oldest bad (the bad answers of one round are nested on a line; on a DAG take any of them).
    var bads: [Int] = []
    for probe in plan.probes {
      if graph.isAncestor(culprit, of: probe) { bads.append(probe) } else { good.insert(probe) }
    }
    if let newest = bads.first(where: { b in bads.allSatisfy { graph.isAncestor(b, of: $0) } }) ?? bads.first {
      bad = newest
    }
  }
  return (nil, rounds)
}

/// ⌈log_{base} n⌉ for n ≥ 1.
private func ceilLog(_ n: Int, base: Int) -> Int {
  var power = 1
  var result = 0
  while power < n {
    power *= base
    result += 1
  }
  return result
}

@Suite struct BisectProbesTests {
  @Test(arguments: [1, 2, 3, 4, 7, 8])
  func linearProbesSplitIntoNearEqualParts(k: Int) {
    for n in [200, 1000] {
      let plan = BisectAlgorithm.probes(graph: linear(n), bad: n, good: [0], skipped: [], count: k, breakingTiesBy: <)
      #expect(plan.probes.count == k)
      #expect(plan.candidateCount == n)
      // k probes on a line leave k+1 parts; the best possible largest part is ⌈n/(k+1)⌉.
      let optimum = (n + k) / (k + 1)
      #expect(plan.largestPart <= optimum + 1, "n \(n) k \(k): probes \(plan.probes), largest part \(plan.largestPart)")
      #expect(plan.probes == plan.probes.sorted(), "probes come oldest first")
      #expect(!plan.probes.contains(n), "the bad commit is never a probe")
    }
  }

  @Test func tenThousandCommitsSplitIntoNineParts() {
    let n = 10000
    let plan = BisectAlgorithm.probes(graph: linear(n), bad: n, good: [0], skipped: [], count: 8, breakingTiesBy: <)
    #expect(plan.probes.count == 8)
    #expect(plan.largestPart <= (n + 8) / 9 + 1, "largest part \(plan.largestPart)")
  }

  @Test func oneProbeIsGitsChoice() {
    for graph in [linear(30), linear(10000), randomDAG(80, seed: 3)] {
      let bad = graph.topologicalOrder[0]
      let step = BisectAlgorithm.next(graph: graph, bad: bad, good: [0], skipped: [], breakingTiesBy: <)
      let plan = BisectAlgorithm.probes(graph: graph, bad: bad, good: [0], skipped: [], count: 1, breakingTiesBy: <)
      guard case .test(let id, _, _) = step else {
        Issue.record("expected a commit to test")
        continue
      }
      #expect(plan.probes == [id])
    }
  }

  @Test func pendingProbesAreKeptAndFilledAround() {
    // 100 candidates with 50 in flight: the next probe halves one of the two halves.
    let plan = BisectAlgorithm.probes(
      graph: linear(100), bad: 100, good: [0], skipped: [], pending: [50], count: 1, breakingTiesBy: <)
    #expect(plan.probes.count == 1)
    let probe = plan.probes[0]
    #expect(abs(probe - 25) <= 1 || abs(probe - 75) <= 1, "probe \(probe)")
    #expect(plan.largestPart == 50, "the other half is left whole")
    // Three in flight at the quartiles: one more goes into a quarter's middle.
    let more = BisectAlgorithm.probes(
      graph: linear(100), bad: 100, good: [0], skipped: [], pending: [25, 50, 75], count: 2, breakingTiesBy: <)
    #expect(more.probes.count == 2)
    #expect(Set(more.probes).isDisjoint(with: [25, 50, 75]))
    #expect(more.largestPart <= 25)
  }

  @Test func skippedExcludedAndBadAreNeverChosen() {
    let skipped: Set<Int> = Set(40...60)
    let plan = BisectAlgorithm.probes(
      graph: linear(100), bad: 100, good: [0], skipped: skipped, excluded: [25, 75], count: 5, breakingTiesBy: <)
    #expect(plan.probes.count == 5)
    #expect(Set(plan.probes).isDisjoint(with: skipped.union([25, 75, 100])))
    // Three candidates left (1, 2 and bad 3): at most the two that are not bad can be probes.
    let small = BisectAlgorithm.probes(graph: linear(3), bad: 3, good: [0], skipped: [], count: 8, breakingTiesBy: <)
    #expect(Set(small.probes) == [1, 2])
    #expect(small.largestPart == 1)
  }

  @Test func overBisectionHasNoProbes() {
    let plan = BisectAlgorithm.probes(graph: linear(10), bad: 5, good: [4], skipped: [], count: 3, breakingTiesBy: <)
    #expect(plan.probes.isEmpty)
    #expect(plan.candidateCount == 1)
  }

  @Test(arguments: [1, 2, 3, 7])
  func linearRoundsFindEveryCulprit(k: Int) {
    let n = 200
    let graph = linear(n)
    let bound = ceilLog(n, base: k + 1) + 1
    for culprit in stride(from: 1, through: n, by: 7) {
      let (found, rounds) = roundsToCulprit(graph, bad: n, k: k, culprit: culprit)
      #expect(found == culprit)
      #expect(rounds <= bound, "k \(k) culprit \(culprit): \(rounds) rounds, bound \(bound)")
    }
  }

  @Test(arguments: [1, 2, 3, 4, 5, 6])
  func branchedHistoriesSplitNearOptimallyAndFindTheCulprit(seed: UInt64) {
    let graph = randomDAG(40, seed: seed)
    let bad = 39
    let candidates = BisectAlgorithm.candidates(graph: graph, bad: bad, good: [0]).filter { $0 != bad }
    // k = 2: against the best pair by brute force.
    let plan = BisectAlgorithm.probes(graph: graph, bad: bad, good: [0], skipped: [], count: 2, breakingTiesBy: <)
    var best = Int.max
    for a in candidates {
      for b in candidates where b > a { best = min(best, cost(graph, bad: bad, good: [0], probes: [a, b])) }
    }
    let ours = cost(graph, bad: bad, good: [0], probes: plan.probes)
    #expect(Double(ours) <= Double(best) * 1.15, "seed \(seed): cost \(ours), best \(best), probes \(plan.probes)")
    // Every culprit is found with k = 3 within ⌈log₄ N⌉ + 2 rounds.
    let bound = ceilLog(candidates.count + 1, base: 4) + 2
    for culprit in candidates + [bad] {
      let (found, rounds) = roundsToCulprit(graph, bad: bad, k: 3, culprit: culprit)
      #expect(found == culprit, "seed \(seed) culprit \(culprit)")
      #expect(rounds <= bound, "seed \(seed) culprit \(culprit): \(rounds) rounds, bound \(bound)")
    }
  }
}
