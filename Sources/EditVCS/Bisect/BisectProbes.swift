import Foundation

// Parallel bisection: the choice of k commits to test at once, generalizing git's weights.
//
// One probe at commit s answers "is the first bad commit among the ancestors of s?". With probes
// S = {s₁ … s_k} in flight, the candidates fall into *parts*: those with the same answers to every
// probe, i.e. the same set { s ∈ S : c is an ancestor of s }. Whatever the answers, the first bad
// commit is left in one part, so a good choice of S makes the parts small. The cost minimized here
// is Σ |part|², the expected number of candidates left when every candidate is equally likely to be
// the first bad one (divided by N). For one probe that is |A|² + (N − |A|)², smallest when
// min(|A|, N − |A|) is largest: git's weight rule. On a linear history k probes then sit at the
// k (k+1)-quantiles and split the candidates into k+1 near-equal parts; on a branched history
// the same cost counts the parts a merge creates.
//
// Probes already in flight (asynchronous dispatch) are fixed; the new ones start greedy (each
// one minimizing the cost given those before it) or at git's weights' quantiles, and are then
// improved by re-choosing each in turn given all the others until nothing changes, which moves
// greedy's 1/2, 1/4 on a line with k = 2 to the thirds.

/// k commits to test at once and what they leave.
package struct BisectProbePlan<ID: Hashable> {
  /// The new commits to test, oldest first (each the most useful given the others and `pending`).
  package var probes: [ID]
  /// The number of candidates (git's `all`).
  package var candidateCount: Int
  /// The size of the largest part the probes (new and pending) leave: an upper bound on the
  /// candidates left after they all answer.
  package var largestPart: Int
}

extension BisectProbePlan: Sendable where ID: Sendable {}

extension BisectAlgorithm {
  /// Chooses up to `count` commits to test in parallel with `pending`.
  ///
  /// Candidates that are the bad commit, skipped, pending, or in `excluded` are never chosen (a
  /// probe of the bad commit answers nothing). Pending probes that are no longer candidates are
  /// ignored. With `count == 1`, nothing pending, and nothing excluded, the probe is git's own
  /// choice (``next(graph:bad:good:skipped:breakingTiesBy:)``), skip handling included.
  /// Fewer than `count` probes come back when fewer useful commits are left; none when the
  /// bisection is over (see ``next(graph:bad:good:skipped:)``).
  package static func probes<ID>(
    graph: BisectGraph<ID>, bad: ID, good: Set<ID>, skipped: Set<ID>, pending: [ID] = [],
    excluded: Set<ID> = [], count: Int, breakingTiesBy areInIncreasingOrder: @escaping (ID, ID) -> Bool
  ) -> BisectProbePlan<ID> {
    guard let walk = Walk(graph: graph, bad: bad, good: good) else {
      return BisectProbePlan(probes: [], candidateCount: 0, largestPart: 0)
    }
    let all = walk.candidates.count
    let step = next(graph: graph, bad: bad, good: good, skipped: skipped, breakingTiesBy: areInIncreasingOrder)
    guard case .test(let gitChoice, _, _) = step, count > 0 else {
      return BisectProbePlan(probes: [], candidateCount: all, largestPart: all)
    }
    let pendingPositions = pending.compactMap { graph.position[$0] }.filter { walk.isCandidate[$0] }
    let parts = ProbeParts(walk: walk, parents: graph.parentPositions)
    if count == 1 && pendingPositions.isEmpty && excluded.isEmpty {
      let position = graph.position[gitChoice] ?? walk.badPosition
      return BisectProbePlan(
        probes: [gitChoice], candidateCount: all, largestPart: parts.largestPart(fixed: [position]))
    }

    var allowed = walk.isCandidate
    allowed[walk.badPosition] = false
    for id in skipped.union(excluded) { if let p = graph.position[id] { allowed[p] = false } }
    for p in pendingPositions { allowed[p] = false }

    // Two starts, each improved by re-choosing every probe given the others until a sweep changes
    // nothing: greedy (each probe the best given those before it), and, with nothing pending,
    // the weight quantiles (the candidates reaching closest to i·N/(k+1) candidates, git's
    // halfway rule for k probes). The cheaper result wins.
    var starts: [[Int]] = []
    var greedy: [Int] = []
    var greedyAllowed = allowed
    for _ in 0..<count {
      guard let best = parts.best(fixed: pendingPositions + greedy, allowed: greedyAllowed) else { break }
      greedy.append(best)
      greedyAllowed[best] = false
    }
    starts.append(greedy)
    if pendingPositions.isEmpty && greedy.count == count && count > 1 {
      let weight = parts.weights()
      var quantiles: [Int] = []
      var quantileAllowed = allowed
      for i in 1...count {
        let target = Double(i * all) / Double(count + 1)
        let best = walk.candidates.lazy.filter { quantileAllowed[$0] }.min { a, b in
          abs(Double(weight[a]) - target) < abs(Double(weight[b]) - target)
        }
        guard let best else { break }
        quantiles.append(best)
        quantileAllowed[best] = false
      }
      if quantiles.count == count { starts.append(quantiles) }
    }
    var chosen: [Int] = []
    var chosenCost = Int.max
    for (index, start) in starts.enumerated() {
      // The quantile start is near its optimum on a line; greedy's may need many sweeps, which
      // cost O(N·parts) each, so it gets 64 only when it is the only start.
      let sweeps = index == 0 && starts.count > 1 ? 16 : 64
      let improved = parts.improve(start, pending: pendingPositions, allowed: allowed, sweeps: sweeps)
      let cost = parts.cost(fixed: pendingPositions + improved)
      if cost < chosenCost {
        chosen = improved
        chosenCost = cost
      }
    }
    chosen.sort { parts.order[$0] < parts.order[$1] }
    return BisectProbePlan(
      probes: chosen.map { graph.ids[$0] }, candidateCount: all,
      largestPart: parts.largestPart(fixed: pendingPositions + chosen))
  }
}

/// The parts a set of probes cuts the candidates into, and the cost of adding one more probe.
struct ProbeParts {
  let walk: BisectAlgorithm.Walk
  let parents: [[Int]]
  /// Candidate parents of each candidate, by graph position.
  private var candidateParents: [[Int]]
  /// The index of each candidate in `walk.candidates` (oldest first), by graph position.
  private(set) var order: [Int]

  init(walk: BisectAlgorithm.Walk, parents: [[Int]]) {
    self.walk = walk
    self.parents = parents
    candidateParents = [[Int]](repeating: [], count: parents.count)
    order = [Int](repeating: -1, count: parents.count)
    for (i, position) in walk.candidates.enumerated() {
      candidateParents[position] = parents[position].filter { walk.isCandidate[$0] }
      order[position] = i
    }
  }

  /// The part label of every candidate (by position) and the size of each part. A probe's bad
  /// answer keeps the candidates reachable from it (itself included): a walk per probe.
  func labels(fixed: [Int]) -> (label: [Int], sizes: [Int]) {
    var label = [Int](repeating: 0, count: parents.count)
    var sizes = [walk.candidates.count]
    var reachedBy = [Int](repeating: -1, count: parents.count)
    var stack: [Int] = []
    for (index, probe) in fixed.enumerated() {
      var split: [Int: Int] = [:]  // old label -> new label of its members reachable from the probe
      reachedBy[probe] = index
      stack.append(probe)
      while let current = stack.popLast() {
        let old = label[current]
        let new: Int
        if let known = split[old] {
          new = known
        } else {
          new = sizes.count
          split[old] = new
          sizes.append(0)
        }
        label[current] = new
        sizes[old] -= 1
        sizes[new] += 1
        for parent in candidateParents[current] where reachedBy[parent] != index {
          reachedBy[parent] = index
          stack.append(parent)
        }
      }
    }
    return (label, sizes)
  }

  /// Re-chooses each probe of `start` given all the others (and `pending`) until a sweep
  /// changes nothing (at most 64 sweeps).
  func improve(_ start: [Int], pending: [Int], allowed: [Bool], sweeps maximum: Int = 64) -> [Int] {
    var chosen = start
    var allowed = allowed
    for position in chosen { allowed[position] = false }
    var sweeps = 0
    var changed = chosen.count > 1
    while changed && sweeps < maximum {
      changed = false
      sweeps += 1
      for index in chosen.indices {
        let old = chosen[index]
        var others = chosen
        others.remove(at: index)
        allowed[old] = true
        // `old` is allowed, so the best is at least as good; only a strict gain moves it.
        let (best, bestCost, oldCost) = scan(fixed: pending + others, allowed: allowed, old: old)
        if let best, best != old, let oldCost, bestCost < oldCost {
          chosen[index] = best
          changed = true
        }
        allowed[chosen[index]] = false
      }
    }
    return chosen
  }

  /// The number of candidates each candidate reaches, itself included (git's weight), by position.
  func weights() -> [Int] {
    var weight = [Int](repeating: 0, count: parents.count)
    let reached = reachedCounts(label: [Int](repeating: 0, count: parents.count), partCount: 1)
    for (i, position) in walk.candidates.enumerated() { weight[position] = reached[i] }
    return weight
  }

  func cost(fixed: [Int]) -> Int { labels(fixed: fixed).sizes.reduce(0) { $0 + $1 * $1 } }

  func largestPart(fixed: [Int]) -> Int { labels(fixed: fixed).sizes.max() ?? 0 }

  /// The allowed candidate whose probe, added to `fixed`, leaves the smallest Σ |part|²; ties go
  /// to the oldest (git's oldest-first order). Nil when nothing is allowed or nothing helps.
  func best(fixed: [Int], allowed: [Bool]) -> Int? { scan(fixed: fixed, allowed: allowed, old: nil).best }

  /// ``best(fixed:allowed:)`` with the cost it leaves, and the cost `old` would leave instead.
  func scan(fixed: [Int], allowed: [Bool], old: Int?) -> (best: Int?, bestCost: Int, oldCost: Int?) {
    let (label, sizes) = labels(fixed: fixed)
    let partCount = sizes.count
    let reached = reachedCounts(label: label, partCount: partCount)
    let baseline = sizes.reduce(0) { $0 + $1 * $1 }
    var best: Int?
    var bestCost = baseline
    var oldCost: Int?
    for (i, position) in walk.candidates.enumerated() where allowed[position] {
      var cost = 0
      let row = i * partCount
      for p in 0..<partCount {
        let inside = reached[row + p]
        let outside = sizes[p] - inside
        cost += inside * inside + outside * outside
      }
      if position == old { oldCost = cost }
      if cost < bestCost {
        bestCost = cost
        best = position
      }
    }
    return (best, bestCost, oldCost)
  }

  /// `reached[i * partCount + p]`: the candidates of part p among the ancestors of candidate i
  /// (oldest-first index, itself included), in one oldest-first pass: a single candidate parent
  /// adds one, a merge is walked (git's count_distance).
  private func reachedCounts(label: [Int], partCount: Int) -> [Int] {
    var reached = [Int](repeating: 0, count: walk.candidates.count * partCount)
    var stamp = [Int](repeating: 0, count: parents.count)
    var currentStamp = 0
    for (i, position) in walk.candidates.enumerated() {
      let candidateParents = self.candidateParents[position]
      let row = i * partCount
      if candidateParents.count == 1 {
        let parentRow = order[candidateParents[0]] * partCount
        for p in 0..<partCount { reached[row + p] = reached[parentRow + p] }
        reached[row + label[position]] += 1
      } else if candidateParents.isEmpty {
        reached[row + label[position]] = 1
      } else {
        currentStamp += 1
        stamp[position] = currentStamp
        var stack = [position]
        while let current = stack.popLast() {
          reached[row + label[current]] += 1
          for parent in self.candidateParents[current] where stamp[parent] != currentStamp {
            stamp[parent] = currentStamp
            stack.append(parent)
          }
        }
      }
    }
    return reached
  }
}
