import Foundation

// git's bisection algorithm (git/git `bisect.c`: `find_bisection`, `do_find_bisection`,
// `best_bisection`, `best_bisection_sorted`, `managed_skipped`, `skip_away`, `get_prn`, `sqrti`,
// `estimate_bisect_steps`), generic over the commit identifier so it can be tested without a
// repository. Where this file departs from git, a comment says so and why.

/// The commit graph a bisection walks: every commit and its parents, in one fixed order.
///
/// `commits` may come in any order and may hold more than the ancestry of the bad commit (the good
/// side of a merge base, for example). Parents that are not in `commits` lie outside the walk and
/// are ignored, as git ignores commits beyond its boundary. Duplicate commits and duplicate parents
/// count once.
///
/// The graph keeps a topological order, children before parents: the *stable* topological sort of
/// `commits` (Kahn's algorithm that always takes the earliest commit of `commits` that is ready).
/// When `commits` is already topological, newest first like `git rev-list --topo-order`, that order
/// is `commits` itself. Every tie in ``BisectAlgorithm`` is broken by this order, so one graph
/// always bisects the same way.
package struct BisectGraph<ID: Hashable> {
  /// Commits, children before parents.
  let ids: [ID]
  /// The position of each commit in `ids`.
  let position: [ID: Int]
  /// The parents of each commit, as positions in `ids`, first parent first. Every parent's position
  /// is greater than its child's.
  let parentPositions: [[Int]]

  /// Builds the graph and its topological order.
  ///
  /// - Parameters:
  ///   - commits: The commits, in any order; newest first and topological (`git rev-list`) is best,
  ///     because ties then go the way git's would.
  ///   - parents: Each commit's parents, first parent first. A commit without an entry is a root.
  /// - Precondition: The parent links have no cycle (a git history never does).
  package init(commits: [ID], parents: [ID: [ID]]) {
    var given: [ID] = []
    var givenIndex: [ID: Int] = [:]
    given.reserveCapacity(commits.count)
    for id in commits where givenIndex[id] == nil {
      givenIndex[id] = given.count
      given.append(id)
    }
    let count = given.count
    var givenParents = [[Int]](repeating: [], count: count)
    var childCount = [Int](repeating: 0, count: count)
    for (child, id) in given.enumerated() {
      for parentID in parents[id] ?? [] {
        guard let parent = givenIndex[parentID] else { continue }  // outside the walk
        precondition(parent != child, "commit is its own parent in the bisect graph")
        if givenParents[child].contains(parent) { continue }
        givenParents[child].append(parent)
        childCount[parent] += 1
      }
    }

    // Kahn's algorithm over a min-heap of given positions: the result is `commits` itself
    // whenever `commits` is already topological, and is deterministic otherwise.
    var ready = MinHeap()
    for index in 0..<count where childCount[index] == 0 { ready.insert(index) }
    var order: [Int] = []
    order.reserveCapacity(count)
    while let index = ready.popMin() {
      order.append(index)
      for parent in givenParents[index] {
        childCount[parent] -= 1
        if childCount[parent] == 0 { ready.insert(parent) }
      }
    }
    precondition(order.count == count, "the parent links of the bisect graph form a cycle")

    var newPosition = [Int](repeating: 0, count: count)
    for (position, index) in order.enumerated() { newPosition[index] = position }
    ids = order.map { given[$0] }
    var positions: [ID: Int] = [:]
    positions.reserveCapacity(count)
    for (position, id) in ids.enumerated() { positions[id] = position }
    position = positions
    parentPositions = order.map { index in givenParents[index].map { newPosition[$0] } }
  }

  /// The number of distinct commits in the graph.
  package var commitCount: Int { ids.count }

  /// The commits, children before parents: the order that breaks ties.
  package var topologicalOrder: [ID] { ids }

  /// Whether `id` is one of the graph's commits.
  package func contains(_ id: ID) -> Bool { position[id] != nil }

  /// Whether `ancestor` is reachable from `descendant` through parent links, counting a commit as
  /// its own ancestor (`git merge-base --is-ancestor`). Commits outside the graph are nobody's
  /// ancestor.
  package func isAncestor(_ ancestor: ID, of descendant: ID) -> Bool {
    guard let target = position[ancestor], let start = position[descendant] else { return false }
    if target == start { return true }
    // Parents always sit later in `ids`, so nothing before `target`'s position can lead to it.
    var seen = Set<Int>([start])
    var stack = [start]
    while let current = stack.popLast() {
      for parent in parentPositions[current] where parent <= target && seen.insert(parent).inserted {
        if parent == target { return true }
        stack.append(parent)
      }
    }
    return false
  }
}

/// What a bisection does next.
package enum BisectStep<ID> {
  /// Test this commit. `remaining` and `steps` are git's "Bisecting: <remaining> revisions left to
  /// test after this (roughly <steps> steps)": `remaining = all − reaches − 1` where `reaches` is
  /// the weight of the best halving commit, and `steps = estimate_bisect_steps(all)`.
  case test(ID, remaining: Int, steps: Int)
  /// The bad commit is the only candidate left: "<id> is the first bad commit".
  case firstBad(ID)
  /// Every candidate left is skipped (the bad commit comes last): "There are only 'skip'ped commits
  /// left to test. The first bad commit could be any of:" followed by these commits.
  case onlySkippedLeft(candidates: [ID])
}

extension BisectStep: Equatable where ID: Equatable {}
extension BisectStep: Hashable where ID: Hashable {}
extension BisectStep: Sendable where ID: Sendable {}

/// git's bisection: choose the commit that best halves the candidates.
///
/// The **candidates** are the ancestors of `bad` (itself included) that are not ancestors of any
/// good commit (themselves included). The **weight** of a candidate is the number of candidates it
/// reaches, itself included; the best commit maximizes `min(weight, all − weight)` where `all` is
/// the number of candidates.
///
/// Which commit wins a tie, as in git:
/// - **No skipped commits at all** (`do_find_bisection` without `FIND_BISECTION_ALL`): weights are
///   filled in the oldest-first order (the reverse of ``BisectGraph/topologicalOrder``), merges
///   first, and the first commit found "approximately halfway" is taken at once (`approx_halfway`:
///   `|2·weight − all| ≤ 1`, or `< all / 1024` for big histories). Otherwise the first commit in
///   oldest-first order with the greatest distance wins (`best_bisection`).
/// - **Some skipped commit exists** (anywhere, as git's `skipped_revs.nr`): every weight is computed
///   and the candidates are sorted by distance, descending (`best_bisection_sorted`). git breaks
///   ties by object id; here ties go to `areInIncreasingOrder` when given (pass `<` on lowercase hex
///   ids to get git's `oidcmp` order), and then to the oldest-first order. If the best commit is
///   skipped, `skip_away` picks among the remaining non-skipped candidates with git's deterministic
///   PRNG (see ``skipAwayIndex(count:)``), so repeated runs pick the same commit.
package enum BisectAlgorithm {
  /// The next step of a bisection, breaking ties as described on ``BisectAlgorithm``.
  ///
  /// - Parameters:
  ///   - graph: All commits reachable from `bad` (more is fine).
  ///   - bad: The current bad commit (`refs/bisect/bad`).
  ///   - good: The good commits (`refs/bisect/good-*`); those outside `graph` are ignored.
  ///   - skipped: The skipped commits (`refs/bisect/skip-*`).
  /// - Returns: The commit to test with git's counts, the first bad commit, or the skipped
  ///   candidates that hide it.
  /// - Precondition: `graph` contains `bad`, and `bad` is not an ancestor of a good commit. Both are
  ///   user mistakes the caller must report first (git: "Some good revs are not ancestors of the bad
  ///   rev", "<id> was both good and bad"); check with ``BisectGraph/isAncestor(_:of:)``.
  package static func next<ID>(
    graph: BisectGraph<ID>, bad: ID, good: Set<ID>, skipped: Set<ID>
  ) -> BisectStep<ID> {
    step(graph: graph, bad: bad, good: good, skipped: skipped, areInIncreasingOrder: nil)
  }

  /// The next step of a bisection, with git's object-id tie-break among skipped-mode candidates.
  ///
  /// Identical to ``next(graph:bad:good:skipped:)`` except that, when some commit is skipped,
  /// candidates at the same distance are ordered by `areInIncreasingOrder` before falling back to
  /// the oldest-first order. Passing `<` on lowercase hex object ids reproduces git's `oidcmp`.
  package static func next<ID>(
    graph: BisectGraph<ID>, bad: ID, good: Set<ID>, skipped: Set<ID>,
    breakingTiesBy areInIncreasingOrder: (ID, ID) -> Bool
  ) -> BisectStep<ID> {
    withoutActuallyEscaping(areInIncreasingOrder) { order in
      step(graph: graph, bad: bad, good: good, skipped: skipped, areInIncreasingOrder: order)
    }
  }

  /// The candidates, newest first: ancestors of `bad` (inclusive) that are not ancestors of any
  /// good commit (inclusive). Empty when `bad` is not in `graph` or is an ancestor of a good commit.
  package static func candidates<ID>(graph: BisectGraph<ID>, bad: ID, good: Set<ID>) -> [ID] {
    guard let walk = Walk(graph: graph, bad: bad, good: good) else { return [] }
    return walk.candidates.reversed().map { graph.ids[$0] }
  }

  /// git's `estimate_bisect_steps(all)`: the number of steps left after the current one.
  ///
  /// With `all = 2ⁿ + x`, `0 ≤ x < 2ⁿ`, the answer is `n` when `2ⁿ < 3x` and `n − 1` otherwise
  /// (the probability of needing only `n − 1` steps, `(2ⁿ − x)/(2ⁿ + x)`, is below one half exactly
  /// when `2ⁿ < 3x`). Fewer than 3 candidates need 0 steps.
  package static func estimateSteps(candidateCount all: Int) -> Int {
    if all < 3 { return 0 }
    let n = Int.bitWidth - 1 - all.leadingZeroBitCount  // git's log2u: ⌊log₂ all⌋
    let e = 1 << n
    let x = all - e
    return e < 3 * x ? n : n - 1
  }

  // MARK: - git's pieces

  /// git's `PRN_MODULO`.
  static let prnModulo = 32768

  /// git's `get_prn`: one step of `man 3 rand`'s generator, seeded with `count`, in 32-bit
  /// unsigned arithmetic. `prn(1)` is 16838, the first `rand()` after `srand(1)`.
  static func prn(_ count: Int) -> Int {
    let next = UInt32(truncatingIfNeeded: count) &* 1_103_515_245 &+ 12345
    return Int((next / 65536) % UInt32(prnModulo))
  }

  /// git's `sqrti`: Newton's iteration in single precision, stopping when a step moves less than
  /// one half, then truncated. Kept in `Float` because that is what git computes with.
  static func integerSquareRoot(_ value: Int) -> Int {
    if value == 0 { return 0 }
    let target = Float(value)
    var x = target
    var step: Float
    repeat {
      let y = (x + target / x) / 2
      step = y > x ? y - x : x - y
      x = y
    } while step >= 0.5
    return Int(x)
  }

  /// The index `skip_away` tries among `count` non-skipped candidates sorted best first:
  /// `(count · prn / 32768) · sqrti(prn) / sqrti(32768)` with `prn = get_prn(count)`. The product
  /// of a uniform draw and a square-root factor favours small indices (commits near the best
  /// halving) with density growing like `index^(1/2)`, i.e. cumulative `(index/count)^(3/2)`. Always
  /// `< count` for `count > 0`. Matches git's C `int` arithmetic for `count < 65536` (beyond that,
  /// git's product overflows).
  static func skipAwayIndex(count: Int) -> Int {
    let prn = prn(count)
    return (count * prn / prnModulo) * integerSquareRoot(prn) / integerSquareRoot(prnModulo)
  }

  /// git's `approx_halfway`: 2 and 3 are halfway of 5, 3 is halfway of 6; for big histories
  /// anything within ~0.1% counts (e.g. [4996, 5004] of 10000).
  static func isApproximatelyHalfway(weight: Int, all: Int) -> Bool {
    let difference = 2 * weight - all
    if abs(difference) <= 1 { return true }
    return abs(difference) < all / 1024
  }

  // MARK: - The algorithm

  /// The candidate set of one call, as positions in `graph.ids`.
  struct Walk {
    /// Candidate positions, oldest first (parents before children): git's reversed list.
    let candidates: [Int]
    /// `isCandidate[position]`.
    let isCandidate: [Bool]
    let badPosition: Int

    init?<ID>(graph: BisectGraph<ID>, bad: ID, good: Set<ID>) {
      guard let badPosition = graph.position[bad] else { return nil }
      let count = graph.ids.count
      // UNINTERESTING: every ancestor of a good commit, the good commits included.
      var uninteresting = [Bool](repeating: false, count: count)
      var stack: [Int] = []
      for id in good {
        guard let position = graph.position[id], !uninteresting[position] else { continue }
        uninteresting[position] = true
        stack.append(position)
      }
      while let current = stack.popLast() {
        for parent in graph.parentPositions[current] where !uninteresting[parent] {
          uninteresting[parent] = true
          stack.append(parent)
        }
      }
      if uninteresting[badPosition] { return nil }
      // Ancestors of bad that are not uninteresting; an ancestor of an uninteresting commit is
      // uninteresting too, so the walk can stop there.
      var isCandidate = [Bool](repeating: false, count: count)
      isCandidate[badPosition] = true
      stack = [badPosition]
      while let current = stack.popLast() {
        for parent in graph.parentPositions[current]
        where !uninteresting[parent] && !isCandidate[parent] {
          isCandidate[parent] = true
          stack.append(parent)
        }
      }
      var candidates: [Int] = []
      for position in stride(from: count - 1, through: badPosition, by: -1)
      where isCandidate[position] {
        candidates.append(position)
      }
      self.candidates = candidates
      self.isCandidate = isCandidate
      self.badPosition = badPosition
    }
  }

  /// git's `do_find_bisection`: fills `weight` for the candidates and, when `stopHalfway` is set,
  /// returns the first candidate found approximately halfway.
  ///
  /// Merges (two or more candidate parents) are counted with a walk each (`count_distance`); every
  /// other candidate has one more than its single candidate parent (git's "single strand of
  /// pearls" shortcut), so a linear history costs O(N). Because `walk.candidates` is topological,
  /// oldest first, one pass fills every weight where git may need several (its list is date
  /// ordered); the commits are visited in the same order as git's first pass.
  static func findBisection(
    _ walk: Walk, graph parents: [[Int]], weight: inout [Int], stopHalfway: Bool
  ) -> Int? {
    let all = walk.candidates.count
    let unknownSingle = -1
    let unknownMerge = -2
    for position in walk.candidates {
      let interestingParents = parents[position].lazy.filter { walk.isCandidate[$0] }.count
      switch interestingParents {
      case 0: weight[position] = 1
      case 1: weight[position] = unknownSingle
      default: weight[position] = unknownMerge
      }
    }

    // count_distance for merges: candidates reachable from the merge, itself included. A stamp per
    // merge replaces git's COUNTED flag and clear_distance.
    var stamp = [Int](repeating: 0, count: weight.count)
    var currentStamp = 0
    var stack: [Int] = []
    for position in walk.candidates where weight[position] == unknownMerge {
      currentStamp += 1
      stamp[position] = currentStamp
      stack.append(position)
      var reached = 0
      while let current = stack.popLast() {
        reached += 1
        for parent in parents[current]
        where walk.isCandidate[parent] && stamp[parent] != currentStamp {
          stamp[parent] = currentStamp
          stack.append(parent)
        }
      }
      weight[position] = reached
      if stopHalfway && isApproximatelyHalfway(weight: reached, all: all) { return position }
    }

    for position in walk.candidates where weight[position] == unknownSingle {
      guard let parent = parents[position].first(where: { walk.isCandidate[$0] }) else {
        preconditionFailure("single-parent candidate without a candidate parent")
      }
      precondition(weight[parent] > 0, "bisect candidates are not in topological order")
      weight[position] = weight[parent] + 1
      if stopHalfway && isApproximatelyHalfway(weight: weight[position], all: all) {
        return position
      }
    }
    return nil
  }

  static func step<ID>(
    graph: BisectGraph<ID>, bad: ID, good: Set<ID>, skipped: Set<ID>,
    areInIncreasingOrder: ((ID, ID) -> Bool)?
  ) -> BisectStep<ID> {
    precondition(graph.contains(bad), "the bad commit is not in the bisect graph")
    guard let walk = Walk(graph: graph, bad: bad, good: good) else {
      preconditionFailure("the bad commit is an ancestor of a good commit")
    }
    let all = walk.candidates.count
    var weight = [Int](repeating: 0, count: graph.ids.count)
    func distance(_ position: Int) -> Int { min(weight[position], all - weight[position]) }

    if skipped.isEmpty {
      var best = findBisection(
        walk, graph: graph.parentPositions, weight: &weight, stopHalfway: true)
      if best == nil {
        // best_bisection: the first of the greatest distance, oldest first.
        var bestDistance = -1
        for position in walk.candidates where distance(position) > bestDistance {
          best = position
          bestDistance = distance(position)
        }
      }
      guard let best else { preconditionFailure("a bisection always has a candidate") }
      if best == walk.badPosition { return .firstBad(bad) }
      return .test(
        graph.ids[best], remaining: all - weight[best] - 1,
        steps: estimateSteps(candidateCount: all))
    }

    // FIND_BISECTION_ALL: every weight, then best_bisection_sorted.
    _ = findBisection(walk, graph: graph.parentPositions, weight: &weight, stopHalfway: false)
    var listIndex = [Int: Int]()
    for (index, position) in walk.candidates.enumerated() { listIndex[position] = index }
    let sorted = walk.candidates.sorted { a, b in
      let (da, db) = (distance(a), distance(b))
      if da != db { return da > db }
      if let areInIncreasingOrder {
        if areInIncreasingOrder(graph.ids[a], graph.ids[b]) { return true }
        if areInIncreasingOrder(graph.ids[b], graph.ids[a]) { return false }
      }
      return (listIndex[a] ?? 0) < (listIndex[b] ?? 0)
    }
    guard let head = sorted.first else { preconditionFailure("a bisection always has a candidate") }
    let reaches = weight[head]

    // managed_skipped / filter_skipped / skip_away.
    var chosen: Int?
    var tried: [Int] = []
    if !skipped.contains(graph.ids[head]) {
      chosen = head
    } else {
      var filtered: [Int] = []
      for position in sorted {
        if skipped.contains(graph.ids[position]) {
          tried.append(position)
        } else {
          filtered.append(position)
        }
      }
      if !filtered.isEmpty {
        // skip_away: never the bad commit itself unless nothing else is left.
        let index = skipAwayIndex(count: filtered.count)
        if filtered[index] != walk.badPosition {
          chosen = filtered[index]
        } else {
          chosen = index > 0 ? filtered[index - 1] : filtered[0]
        }
      }
    }

    guard let chosen else {
      // The bad commit is skipped too: git's error_if_skipped_commits(tried, NULL).
      return .onlySkippedLeft(candidates: tried.map { graph.ids[$0] })
    }
    if chosen == walk.badPosition {
      if tried.isEmpty { return .firstBad(bad) }
      return .onlySkippedLeft(candidates: tried.map { graph.ids[$0] } + [bad])
    }
    return .test(
      graph.ids[chosen], remaining: all - reaches - 1, steps: estimateSteps(candidateCount: all))
  }
}

/// A binary min-heap of `Int`, for the stable topological sort.
private struct MinHeap {
  private var storage: [Int] = []

  mutating func insert(_ value: Int) {
    storage.append(value)
    var child = storage.count - 1
    while child > 0 {
      let parent = (child - 1) / 2
      if storage[parent] <= storage[child] { break }
      storage.swapAt(parent, child)
      child = parent
    }
  }

  mutating func popMin() -> Int? {
    guard let first = storage.first else { return nil }
    let last = storage.removeLast()
    if storage.isEmpty { return first }
    storage[0] = last
    var parent = 0
    while true {
      let left = 2 * parent + 1
      let right = left + 1
      var smallest = parent
      if left < storage.count && storage[left] < storage[smallest] { smallest = left }
      if right < storage.count && storage[right] < storage[smallest] { smallest = right }
      if smallest == parent { break }
      storage.swapAt(parent, smallest)
      parent = smallest
    }
    return first
  }
}
