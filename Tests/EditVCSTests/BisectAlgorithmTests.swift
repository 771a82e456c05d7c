import TestSupport
import Testing

@testable import EditVCS

// Histories are built from integers: commit 0 is the good root, higher numbers are newer.

/// A linear history 0 ← 1 ← … ← `candidateCount`, newest first like `git rev-list`; with 0 good and
/// the newest bad, there are exactly `candidateCount` candidates.
private func linearGraph(candidateCount: Int) -> BisectGraph<Int> {
  var parents: [Int: [Int]] = [:]
  for id in 1...candidateCount { parents[id] = [id - 1] }
  return BisectGraph(commits: Array((0...candidateCount).reversed()), parents: parents)
}

/// Runs `git bisect` to its end against an oracle, the way `bisect run` would.
/// - Returns: The final step and the number of commits tested.
private func runBisection<ID: Hashable>(
  graph: BisectGraph<ID>, bad: ID, good: Set<ID>,
  isBad: (ID) -> Bool, isUntestable: (ID) -> Bool = { _ in false }
) -> (result: BisectStep<ID>, testCount: Int) {
  var bad = bad
  var good = good
  var skipped = Set<ID>()
  var testCount = 0
  while testCount <= graph.commitCount {
    let step = BisectAlgorithm.next(graph: graph, bad: bad, good: good, skipped: skipped)
    guard case .test(let id, _, _) = step else { return (step, testCount) }
    testCount += 1
    if isUntestable(id) {
      skipped.insert(id)
    } else if isBad(id) {
      bad = id
    } else {
      good.insert(id)
    }
  }
  Issue.record("bisection did not terminate after \(testCount) tests")
  return (.onlySkippedLeft(candidates: []), testCount)
}

/// ⌈log₂ n⌉ for n ≥ 1.
private func ceilLog2(_ n: Int) -> Int { n <= 1 ? 0 : Int.bitWidth - (n - 1).leadingZeroBitCount }

@Suite struct BisectAlgorithmTests {
  // MARK: git's numbers

  @Test func linearThirtyMatchesGitMessage() {
    // git: "Bisecting: 14 revisions left to test after this (roughly 4 steps)" for 30 candidates:
    // weights 1…30 oldest first, approx_halfway stops at weight 15, nr = 30 − 15 − 1,
    // estimate_bisect_steps(30) = 4 (16 < 3·14).
    let graph = linearGraph(candidateCount: 30)
    let step = BisectAlgorithm.next(graph: graph, bad: 30, good: [0], skipped: [])
    #expect(step == .test(15, remaining: 14, steps: 4))
  }

  @Test func linearTenThousandStopsAtGitsApproximateHalfway() {
    // approx_halfway accepts |2w − 10000| < 10000/1024 = 9, first met at w = 4996.
    let graph = linearGraph(candidateCount: 10000)
    let step = BisectAlgorithm.next(graph: graph, bad: 10000, good: [0], skipped: [])
    #expect(step == .test(4996, remaining: 5003, steps: 12))
    // With any skipped commit git computes every weight and takes the exact best.
    let sorted = BisectAlgorithm.next(graph: graph, bad: 10000, good: [0], skipped: [-1])
    #expect(sorted == .test(5000, remaining: 4999, steps: 12))
  }

  @Test(arguments: [
    (0, 0), (1, 0), (2, 0), (3, 1), (4, 1), (5, 1), (6, 2), (8, 2), (11, 3), (30, 4), (1000, 9),
    (1024, 9), (10000, 12),
  ])
  func estimateStepsMatchesGit(all: Int, expected: Int) {
    #expect(BisectAlgorithm.estimateSteps(candidateCount: all) == expected)
  }

  @Test func prngAndSquareRootMatchGit() {
    #expect(BisectAlgorithm.prn(0) == 0)
    #expect(BisectAlgorithm.prn(1) == 16838)  // the first rand() after srand(1)
    #expect(BisectAlgorithm.prn(29) == 29559)
    #expect(BisectAlgorithm.integerSquareRoot(0) == 0)
    #expect(BisectAlgorithm.integerSquareRoot(1) == 1)
    #expect(BisectAlgorithm.integerSquareRoot(2) == 1)
    #expect(BisectAlgorithm.integerSquareRoot(99) == 9)
    #expect(BisectAlgorithm.integerSquareRoot(32768) == 181)
    for count in 1...5000 {
      let index = BisectAlgorithm.skipAwayIndex(count: count)
      #expect(index >= 0 && index < count, "count \(count)")
    }
  }

  @Test func singleCandidateIsFirstBad() {
    let graph = linearGraph(candidateCount: 30)
    #expect(BisectAlgorithm.next(graph: graph, bad: 30, good: [29], skipped: []) == .firstBad(30))
    #expect(BisectAlgorithm.next(graph: graph, bad: 30, good: [29], skipped: [3]) == .firstBad(30))
  }

  // MARK: Finding the culprit

  @Test(arguments: [30, 1000, 10000])
  func linearHistoryFindsCulprit(candidateCount: Int) {
    let graph = linearGraph(candidateCount: candidateCount)
    var random = SplitMix64(seed: UInt64(candidateCount))
    let bound = ceilLog2(candidateCount) + 1
    for _ in 0..<4 {
      let culprit = 1 + Int(random.next() % UInt64(candidateCount))
      let (result, testCount) = runBisection(
        graph: graph, bad: candidateCount, good: [0], isBad: { $0 >= culprit })
      #expect(result == .firstBad(culprit))
      #expect(testCount <= bound, "culprit \(culprit): \(testCount) tests")
    }
  }

  /// 0 ← a1…a10 (ids 1…10) and 0 ← b1…b10 (ids 11…20), merged by 21 with parents [10, 20].
  private func mergedBranches() -> BisectGraph<Int> {
    var parents: [Int: [Int]] = [1: [0], 11: [0], 21: [10, 20]]
    for id in 2...10 { parents[id] = [id - 1] }
    for id in 12...20 { parents[id] = [id - 1] }
    let commits = [21] + Array((1...10).reversed()) + Array((11...20).reversed()) + [0]
    return BisectGraph(commits: commits, parents: parents)
  }

  @Test func mergedBranchesFirstStepMatchesGit() {
    // Oldest first: 0, b1…b10, a1…a10, merge. The merge's count_distance is 21; b10 has weight 10,
    // halfway of 21 (2·10 − 21 = −1). estimate_bisect_steps(21) = 3 (16 ≥ 3·5).
    let step = BisectAlgorithm.next(graph: mergedBranches(), bad: 21, good: [0], skipped: [])
    #expect(step == .test(20, remaining: 10, steps: 3))
  }

  @Test func mergedBranchesFindEveryCulprit() {
    let graph = mergedBranches()
    for culprit in 1...21 {
      let (result, testCount) = runBisection(
        graph: graph, bad: 21, good: [0], isBad: { graph.isAncestor(culprit, of: $0) })
      #expect(result == .firstBad(culprit))
      #expect(testCount <= ceilLog2(21) + 1, "culprit \(culprit): \(testCount) tests")
    }
  }

  /// A seeded DAG: commit i > 0 has one or two parents among earlier commits.
  private func randomDAG(commitCount: Int, random: inout SplitMix64) -> [Int: [Int]] {
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
    return parents
  }

  @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
  func randomDAGBestHalvingAndCulprit(seed: UInt64) {
    var random = SplitMix64(seed: seed)
    let commitCount = 80
    let parents = randomDAG(commitCount: commitCount, random: &random)
    let graph = BisectGraph(commits: Array((0..<commitCount).reversed()), parents: parents)
    let bad = commitCount - 1
    let candidates = BisectAlgorithm.candidates(graph: graph, bad: bad, good: [0])
    #expect(candidates.first == bad)
    #expect(!candidates.contains(0))

    // Below 1024 candidates approx_halfway only stops at an exact best, so the choice must reach
    // the greatest min(weight, N − weight), with weights counted by brute force.
    let all = candidates.count
    func weight(_ id: Int) -> Int { candidates.filter { graph.isAncestor($0, of: id) }.count }
    let bestDistance = candidates.map { min(weight($0), all - weight($0)) }.max() ?? 0
    let step = BisectAlgorithm.next(graph: graph, bad: bad, good: [0], skipped: [])
    guard case .test(let chosen, let remaining, let steps) = step else {
      Issue.record("expected a commit to test, got \(step)")
      return
    }
    #expect(min(weight(chosen), all - weight(chosen)) == bestDistance)
    #expect(remaining == all - weight(chosen) - 1)
    #expect(steps == BisectAlgorithm.estimateSteps(candidateCount: all))

    // Every culprit is found, from a shuffled commit list too.
    var shuffled = Array(0..<commitCount)
    shuffled.shuffle(using: &random)
    let shuffledGraph = BisectGraph(commits: shuffled, parents: parents)
    for culprit in candidates.shuffled(using: &random).prefix(10) {
      for g in [graph, shuffledGraph] {
        let (result, testCount) = runBisection(
          graph: g, bad: bad, good: [0], isBad: { g.isAncestor(culprit, of: $0) })
        #expect(result == .firstBad(culprit))
        #expect(testCount <= all)
      }
    }
  }

  @Test func topologicalOrderIsStable() {
    var random = SplitMix64(seed: 99)
    let parents = randomDAG(commitCount: 50, random: &random)
    let newestFirst = Array((0..<50).reversed())
    #expect(BisectGraph(commits: newestFirst, parents: parents).topologicalOrder == newestFirst)

    var shuffled = newestFirst
    shuffled.shuffle(using: &random)
    let order = BisectGraph(commits: shuffled + [7], parents: parents).topologicalOrder
    #expect(order.count == 50)
    let position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
    for (child, its) in parents {
      for parent in its {
        #expect((position[child] ?? 0) < (position[parent] ?? 0), "\(child) → \(parent)")
      }
    }
  }

  @Test func isAncestorIsInclusiveAndFollowsMerges() {
    let graph = mergedBranches()
    #expect(graph.isAncestor(21, of: 21))
    #expect(graph.isAncestor(13, of: 21))
    #expect(graph.isAncestor(0, of: 5))
    #expect(!graph.isAncestor(13, of: 10))
    #expect(!graph.isAncestor(21, of: 20))
    #expect(!graph.isAncestor(99, of: 21))
  }

  // MARK: Skipped commits

  @Test func skippedBestIsSkippedAwayDeterministically() {
    // The best (15) is skipped. Sorted by distance, ties oldest first, the non-skipped candidates
    // are 14, 16, 13, 17, … ; skip_away(29): prn = 29559, index = (29·29559/32768)·171/181 = 24,
    // which is commit 2. "remaining" still uses the best's weight (git's `reaches`).
    let graph = linearGraph(candidateCount: 30)
    let step = BisectAlgorithm.next(graph: graph, bad: 30, good: [0], skipped: [15])
    #expect(step == .test(2, remaining: 14, steps: 4))
    #expect(BisectAlgorithm.next(graph: graph, bad: 30, good: [0], skipped: [15]) == step)
  }

  @Test func tiesFollowTheGivenOrdering() {
    // 31 candidates: weights 15 and 16 are both at distance 15.
    let graph = linearGraph(candidateCount: 31)
    #expect(
      BisectAlgorithm.next(graph: graph, bad: 31, good: [0], skipped: [-1])
        == .test(15, remaining: 15, steps: 4))
    #expect(
      BisectAlgorithm.next(graph: graph, bad: 31, good: [0], skipped: [-1], breakingTiesBy: >)
        == .test(16, remaining: 14, steps: 4))
  }

  @Test func culpritFoundWhenLaterNeighboursAreSkipped() {
    let graph = linearGraph(candidateCount: 30)
    let (result, _) = runBisection(
      graph: graph, bad: 30, good: [0], isBad: { $0 >= 17 },
      isUntestable: { [18, 19].contains($0) })
    #expect(result == .firstBad(17))
  }

  @Test func skippedParentOfCulpritLeavesOnlySkipped() {
    // 16 cannot be tested, so 16 and 17 both remain: git lists the skipped ones, then the bad one.
    let graph = linearGraph(candidateCount: 30)
    let (result, _) = runBisection(
      graph: graph, bad: 30, good: [0], isBad: { $0 >= 17 },
      isUntestable: { [16, 18].contains($0) })
    #expect(result == .onlySkippedLeft(candidates: [16, 17]))
  }

  @Test func everyCandidateSkippedButBad() {
    // Distances 1, 2, 2, 1 for 1…4: sorted 2, 3, 1, 4, then bad.
    let graph = linearGraph(candidateCount: 5)
    #expect(
      BisectAlgorithm.next(graph: graph, bad: 5, good: [0], skipped: [1, 2, 3, 4])
        == .onlySkippedLeft(candidates: [2, 3, 1, 4, 5]))
    // The bad commit skipped as well: it is in git's tried list (distance 0, last) and nothing is
    // appended after it (error_if_skipped_commits(tried, NULL)).
    #expect(
      BisectAlgorithm.next(graph: graph, bad: 5, good: [0], skipped: [1, 2, 3, 4, 5])
        == .onlySkippedLeft(candidates: [2, 3, 1, 4, 5]))
  }

  @Test(arguments: [3, 7, 11])
  func mergedBranchesWithSkipsNeverChooseSkipped(seed: UInt64) {
    let graph = mergedBranches()
    var random = SplitMix64(seed: seed)
    let culprit = 1 + Int(random.next() % 21)
    let untestable = Set((0..<4).map { _ in 1 + Int(random.next() % 20) }).subtracting([culprit])
    var bad = 21
    var good: Set<Int> = [0]
    var skipped = Set<Int>()
    for _ in 0..<30 {
      let step = BisectAlgorithm.next(graph: graph, bad: bad, good: good, skipped: skipped)
      switch step {
      case .test(let id, _, _):
        #expect(!skipped.contains(id) && !good.contains(id) && id != bad)
        if untestable.contains(id) {
          skipped.insert(id)
        } else if graph.isAncestor(culprit, of: id) {
          bad = id
        } else {
          good.insert(id)
        }
      case .firstBad(let id):
        #expect(id == culprit)
        return
      case .onlySkippedLeft(let candidates):
        #expect(candidates.contains(culprit))
        #expect(candidates.last == bad)
        #expect(candidates.dropLast().allSatisfy { untestable.contains($0) })
        return
      }
    }
    Issue.record("bisection did not terminate")
  }
}
