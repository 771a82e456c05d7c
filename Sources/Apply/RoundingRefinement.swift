import Dispatch

/// Where the stored bytes put each element of a delta: for row `row` and the columns `cols`,
/// `lo[k] ≤ ΔW[row, cols.lowerBound + k] ≤ hi[k]` is what makes the reconstruction round to the
/// committed value (the midpoints to the stored value's two neighbours, minus the parent's value).
/// An element that constrains nothing has `lo = -∞, hi = +∞`.
package typealias RoundingIntervals =
  (_ row: Int, _ cols: Range<Int>, _ lo: UnsafeMutablePointer<Double>, _ hi: UnsafeMutablePointer<Double>) -> Void

/// What ``Factorization/refineAgainstRounding(_:rows:cols:maxSweeps:workers:intervals:)`` did.
package struct RefinementReport: Sendable, Equatable {
  /// Elements outside their interval after each sweep's row half (the last: the factors
  /// returned, but for the Float32 rounding of `v`); with no sweeps, after the least-squares
  /// start when candidates were compared (from Float32 interval offsets: a close estimate), else
  /// none.
  package var violations: [Int]
  /// Elements each of those row halves visited: all of them until the active set is built
  /// (``ActiveElements``), then only those that can still change side.
  package var visited: [Int] = []
}

extension Factorization {
  /// Moves low-rank factors so that `U·Vᵀ` falls inside each element's rounding interval as often
  /// as possible: the factors a rank finder recovers from a rounded difference carry the
  /// rounding noise (for bf16 about 0.1 ulp per element, enough to round one element in ten to
  /// the other side), while the editor's own factors land in every interval but a few.
  ///
  /// The stored bytes pin each product `(U·Vᵀ)[i, j]` to an interval `[lo, hi]` (the editor's
  /// result rounded to the committed value). With `V` fixed, coordinate `U[i, t]` enters row `i`'s
  /// elements linearly, so each element is an interval for that one number, and the value inside
  /// the most intervals is found exactly by sorting their endpoints (a sweep line). Rows, then
  /// columns, one coordinate at a time: the count of elements outside their interval never grows
  /// (up to the window below), and the chosen value is the middle of the best segment, as far as
  /// possible from the intervals' edges.
  ///
  /// Before the sweeps, three least-squares passes (``IntervalRefiner/fitRows()`` and
  /// ``IntervalRefiner/fitColumns(counting:)``: Newton steps on the squared distance to the
  /// intervals, a linear pass each, no sorting) take the rank finder's factors from about a
  /// tenth of an ulp off to a small fraction of one on nearly every element, so the sweeps can
  /// start narrow.
  ///
  /// Only endpoints within a window around the current value are sorted: ±w per factor column,
  /// starting at 8× the 90th percentile of the last least-squares pass's moves (at most 1/8 of
  /// the column's RMS), then 8× that of the previous half-sweep's moves, so the cost is a
  /// linear pass over the tensor per coordinate and half-sweep plus a sort of the few endpoints
  /// near each value. Sweeps stop when one removes less than a tenth of the violations left.
  ///
  /// Once the windows are narrow enough that at most an eighth of the elements lie within
  /// reach of an interval edge (after the least-squares start, usually from the second sweep),
  /// the sweeps visit only those (``ActiveElements``: a budget, the window times the sweeps
  /// left, caps how far each coordinate may still move, so every other element stays inside its
  /// interval and adds nothing to any sweep line): windows never widen, so the factors and
  /// counts are those of visiting every element, for the cost of the few.
  ///
  /// All arithmetic is Float64; the factors come back rounded to Float32, as they are stored.
  /// The result is a better starting point for the exactness residual, never a different
  /// contract: the residual still makes the reconstruction exact.
  /// - Parameters:
  ///   - factors: the rank finder's factors (`u` rows × rank, `v` cols × rank, row-major).
  ///   - maxSweeps: the most row-then-column sweeps to run; 0 stops after the least-squares
  ///     start. The start alone takes about a third of the time and leaves more elements outside
  ///     (a bf16 rank-one edit of 4096×14336: ~30K of 58.7M instead of ~900, so its residual
  ///     stores ~50 KB more), and for F32, whose intervals are narrow, the sweeps move nearly
  ///     nothing (the same stored size for six times the time).
  ///   - workers: threads per half-sweep (the result does not depend on it); `intervals` is
  ///     called from all of them at once.
  ///   - activeSet: whether later sweeps visit only the active elements (false: every element,
  ///     for tests that compare the two).
  ///   - intervals: each element's interval, as ``RoundingIntervals``.
  /// - Returns: the refined factors (singular values and residual norm left as the rank finder
  ///   measured them) and the violation counts.
  package static func refineAgainstRounding(
    _ factors: LowRankFactors, rows: Int, cols: Int, maxSweeps: Int = 6, workers: Int = 1, activeSet: Bool = true,
    intervals: RoundingIntervals
  ) -> (factors: LowRankFactors, report: RefinementReport) {
    let rank = factors.rank
    guard rank > 0, rows > 0, cols > 0, maxSweeps >= 0 else {
      return (factors, RefinementReport(violations: [], visited: []))
    }
    return withoutActuallyEscaping(intervals) { intervals in
      let run = { (factors: LowRankFactors) -> RefinementRun in
        var run = RefinementRun(
          factors, rows: rows, cols: cols, workers: workers, maxSweeps: maxSweeps, activeSet: activeSet,
          intervals: intervals)
        // The least-squares start alone is counted only when candidates are compared.
        run.start(counting: rank > 1)
        return run
      }
      // A rounded difference is a staircase of U·Vᵀ, not U·Vᵀ plus independent noise: the rank
      // finder can see one component too many (a bf16 rank-one edit comes out as rank 2). The
      // lower rank is started first: when its cost after the first sweep is already below the
      // factors alone of the higher rank, the higher rank cannot win and is never refined (a
      // rank-one edit costs one candidate); otherwise both are started and the cheaper kept.
      var best: RefinementRun
      if rank > 1 {
        var lower = factors
        lower.rank = rank - 1
        lower.u = (0..<rows).flatMap { i in factors.u[(i * rank)..<(i * rank + rank - 1)] }
        lower.v = (0..<cols).flatMap { j in factors.v[(j * rank)..<(j * rank + rank - 1)] }
        lower.singularValues = Array(factors.singularValues.prefix(rank - 1))
        let other = run(lower)
        if other.cost < RefinementRun.factorCost(rank: rank, rows: rows, cols: cols) {
          best = other
        } else {
          best = run(factors)
          if other.cost < best.cost { best = other }
        }
      } else {
        best = run(factors)
      }
      while best.sweepCount < maxSweeps && !best.converged { best.sweep() }
      return best.result
    }
  }
}

/// One candidate's refinement, swept one row-then-column sweep at a time.
private struct RefinementRun {
  /// Least-squares passes (``IntervalRefiner/fitRows()``, then columns) before the first sweep.
  static let leastSquaresPasses = 3
  /// The narrowest first window, as a fraction of the widest (1/8 of the factor column's RMS).
  static let startWindow = 1.0 / 1024

  private var refiner: IntervalRefiner
  private var uWindow: [Double]
  private var vWindow: [Double]
  private let original: LowRankFactors
  private(set) var violations: [Int] = []
  private(set) var visited: [Int] = []
  private(set) var converged = false
  /// Once the windows are narrow: the elements that can still leave or enter their interval
  /// (``ActiveElements``); the sweeps then visit only these.
  private var active: ActiveElements?
  /// While `active` is set: how far each factor column's coordinates may still move.
  private var uBudget: [Double] = []
  private var columnsPending = false
  private var vBudget: [Double] = []
  private let maxSweeps: Int
  private let usesActiveSet: Bool
  var sweepCount: Int { violations.count }

  init(
    _ factors: LowRankFactors, rows: Int, cols: Int, workers: Int, maxSweeps: Int, activeSet: Bool,
    intervals: @escaping RoundingIntervals
  ) {
    original = factors
    self.maxSweeps = maxSweeps
    self.usesActiveSet = activeSet
    refiner = IntervalRefiner(
      u: factors.u.map(Double.init), v: factors.v.map(Double.init), rows: rows, cols: cols, rank: factors.rank,
      workers: workers, intervals: intervals)
    uWindow = refiner.initialWindows(of: refiner.u, count: rows)
    vWindow = refiner.initialWindows(of: refiner.v, count: cols)
  }

  /// The least-squares passes, then (unless `maxSweeps` is 0) the first sweep, its windows 8×
  /// the 90th percentile of the last pass's moves (as between sweeps), between 1/8192 and 1/8
  /// of the column's RMS: a narrower first window than the moves call for leaves more elements
  /// outside at the end.
  ///
  /// With `maxSweeps` 0 and `counting`, the last pass's column half counts the elements it
  /// leaves outside (from the intervals it holds), for ``cost``.
  mutating func start(counting: Bool) {
    var moves: (u: [[Double]], v: [[Double]]) = ([], [])
    for pass in 0..<Self.leastSquaresPasses {
      let rowMoves = refiner.fitRows()
      let (columnMoves, outside) = refiner.fitColumns(
        counting: counting && maxSweeps == 0 && pass == Self.leastSquaresPasses - 1)
      if let outside { violations.append(outside) }
      moves = (rowMoves, columnMoves)
    }
    if maxSweeps == 0 {
      converged = true
      return
    }
    guard !moves.u.isEmpty else { return sweep() }
    uWindow = zip(moves.u, uWindow).map { max($1 * Self.startWindow, IntervalRefiner.nextWindow($0, previous: $1)) }
    vWindow = zip(moves.v, vWindow).map { max($1 * Self.startWindow, IntervalRefiner.nextWindow($0, previous: $1)) }
    sweep()
  }

  /// One row half-sweep, then a column half-sweep unless the rows removed less than a tenth of
  /// the violations left (then the run has converged).
  mutating func sweep() {
    sweepRows()
    finishSweep()
  }

  /// The row half of a sweep.
  mutating func sweepRows() {
    if usesActiveSet { narrowActiveSet() }
    let (windows, now): ([Double], Int)
    if let active {
      let used = zip(uWindow, uBudget).map { min($0, $1) }
      uBudget = zip(uBudget, used).map { max(0, $0 - $1) }
      (windows, now) = refiner.sweepRows(windows: used, active: active)
      visited.append(active.count)
    } else {
      visited.append(refiner.rows * refiner.cols)
      (windows, now) = refiner.sweepRows(windows: uWindow)
    }
    uWindow = windows
    if let before = violations.last, now == 0 || before - now < before / 10 {
      violations.append(now)
      converged = true
      return
    }
    violations.append(now)
    columnsPending = true
  }

  /// The column half of the sweep whose row half ran last, unless that one converged.
  mutating func finishSweep() {
    guard columnsPending else { return }
    columnsPending = false
    if let active {
      let used = zip(vWindow, vBudget).map { min($0, $1) }
      vBudget = zip(vBudget, used).map { max(0, $0 - $1) }
      vWindow = refiner.sweepColumns(windows: used, active: active)
    } else {
      vWindow = refiner.sweepColumns(windows: vWindow)
    }
  }

  /// Builds (from every element) or narrows (from the current set) the active set. Built, it
  /// gives each factor column a budget: its current window times the sweeps left is the most its
  /// coordinates can still move in all, since windows never widen (each half-sweep's window is
  /// also capped by what is left of the budget; each narrowing lowers the budget to the current
  /// window times the sweeps left when that is less), so the set holds the elements within that
  /// reach of an interval edge, and the sweeps are those over every element. Nothing is kept
  /// while the set would hold more than an eighth of the elements (the sweeps stay full).
  private mutating func narrowActiveSet() {
    let steps = maxSweeps - sweepCount
    if let current = active {
      // A tighter cap is always allowed: the elements left out earlier stay inside whatever
      // moves the old budget allowed, and those kept are filtered for the new one.
      uBudget = zip(uBudget, uWindow).map { min($0, Double(steps) * $1) }
      vBudget = zip(vBudget, vWindow).map { min($0, Double(steps) * $1) }
      active = refiner.narrowed(
        current, margins: ActiveElements.Margins(steps: steps, uBudget: uBudget, vBudget: vBudget))
    } else {
      let margins = ActiveElements.Margins(
        steps: steps, uBudget: uWindow.map { Double(steps) * $0 }, vBudget: vWindow.map { Double(steps) * $0 })
      guard margins.isFinite else { return }
      active = refiner.activeElements(margins: margins, limit: refiner.rows * refiner.cols / 8)
      if active != nil { (uBudget, vBudget) = (margins.uBudget, margins.vBudget) }
    }
  }

  /// What the factors alone of rank `rank` cost: 32 bits per element.
  static func factorCost(rank: Int, rows: Int, cols: Int) -> Int { 32 * rank * (rows + cols) }

  /// ~12 bits per residual element against 32 per factor element.
  var cost: Int {
    12 * (violations.last ?? 0) + Self.factorCost(rank: original.rank, rows: refiner.rows, cols: refiner.cols)
  }

  var result: (factors: LowRankFactors, report: RefinementReport) {
    var refined = original
    refined.u = refiner.u.map { Float($0) }
    refined.v = refiner.v.map { Float($0) }
    return (refined, RefinementReport(violations: violations, visited: visited))
  }
}

/// The state of one refinement: Float64 factors and the element intervals they are fitted to.
struct IntervalRefiner {
  var u: [Double]
  var v: [Double]
  let rows: Int
  let cols: Int
  let rank: Int
  let intervals: RoundingIntervals
  /// Threads each half-sweep runs on.
  let workers: Int
  /// Columns per block of the column half-sweep: its endpoint buckets hold `2·rows` values each.
  var columnBlock: Int { max(1, min(cols, (1 << 21) / max(1, 2 * rows))) }

  init(
    u: [Double], v: [Double], rows: Int, cols: Int, rank: Int, workers: Int, intervals: @escaping RoundingIntervals
  ) {
    self.workers = max(1, workers)
    self.u = u
    self.v = v
    self.rows = rows
    self.cols = cols
    self.rank = rank
    self.intervals = intervals
  }

  /// Per column `t` of a factor (`count` × rank), an eighth of its RMS: the first half-sweep's
  /// window, far wider than the rank finder's error for the geometries worth refining.
  func initialWindows(of factor: [Double], count: Int) -> [Double] {
    (0..<rank).map { t in
      var s = 0.0
      for i in 0..<count { s += factor[i * rank + t] * factor[i * rank + t] }
      return (s / Double(max(count, 1))).squareRoot() / 8
    }
  }

  /// Updates every `u[i, t]`; returns the windows for the next row half-sweep and the elements
  /// left outside their interval. Rows are independent (V is fixed): `workers` threads take a
  /// contiguous range of rows each, with the same result as one.
  mutating func sweepRows(windows: [Double]) -> (windows: [Double], violations: Int) {
    let reciprocal = v.map { $0 == 0 ? 0 : 1 / $0 }
    let (rows, cols, rank, intervals) = (self.rows, self.cols, self.rank, self.intervals)
    let chunks = max(1, min(workers, rows / 64))
    var uValues = u
    let vValues = v
    let parts = Self.sweepInParallel(&uValues, chunks: chunks, empty: (moves: [[Double]](), violations: 0)) { c, u in
      Self.sweepRowRange(
        (rows * c / chunks)..<(rows * (c + 1) / chunks), u: u, v: vValues, reciprocal: reciprocal, rank: rank,
        cols: cols, windows: windows, intervals: intervals)
    }
    u = uValues
    let moves = (0..<rank).map { t in parts.flatMap { $0.moves[t] } }
    return (zip(moves, windows).map { Self.nextWindow($0, previous: $1) }, parts.reduce(0) { $0 + $1.violations })
  }

  /// The row half-sweep over `range`: writes only those rows of `u`.
  private static func sweepRowRange(
    _ range: Range<Int>, u: UnsafeMutablePointer<Double>, v: [Double], reciprocal: [Double], rank: Int, cols: Int,
    windows: [Double], intervals: RoundingIntervals
  ) -> (moves: [[Double]], violations: Int) {
    let lo = UnsafeMutablePointer<Double>.allocate(capacity: cols)
    let hi = UnsafeMutablePointer<Double>.allocate(capacity: cols)
    var line = SweepLine(capacity: 2 * cols)
    defer {
      lo.deallocate()
      hi.deallocate()
    }
    var moves = [[Double]](repeating: [], count: rank)
    var violations = 0
    for i in range {
      intervals(i, 0..<cols, lo, hi)
      for t in 0..<rank {
        let x0 = u[i * rank + t]
        line.reset(center: x0, halfWidth: windows[t])
        if rank == 1 {
          for j in 0..<cols where reciprocal[j] != 0 && lo[j] <= hi[j] {
            line.add(lo[j] * reciprocal[j], hi[j] * reciprocal[j])
          }
        } else {
          for j in 0..<cols where reciprocal[j * rank + t] != 0 && lo[j] <= hi[j] {
            var rest = 0.0
            for s in 0..<rank where s != t { rest += u[i * rank + s] * v[j * rank + s] }
            line.add((lo[j] - rest) * reciprocal[j * rank + t], (hi[j] - rest) * reciprocal[j * rank + t])
          }
        }
        let x = line.best()
        u[i * rank + t] = x
        moves[t].append(abs(x - x0))
      }
      for j in 0..<cols {
        var p = 0.0
        for t in 0..<rank { p += u[i * rank + t] * v[j * rank + t] }
        if p < lo[j] || p > hi[j] { violations += 1 }
      }
    }
    return (moves, violations)
  }

  /// Updates every `v[j, t]`, a block of columns at a time (each row read once per block);
  /// returns the windows for the next column half-sweep. Columns are independent (U is fixed):
  /// `workers` threads take a contiguous range of columns each, with the same result as one.
  mutating func sweepColumns(windows: [Double]) -> [Double] {
    let (rows, cols, rank, intervals) = (self.rows, self.cols, self.rank, self.intervals)
    let chunks = max(1, min(workers, cols / 64))
    // The workers' sweep lines together hold what one thread's did.
    let block = max(1, columnBlock / chunks)
    var moves = [[Double]](repeating: [], count: rank)
    let uValues = u
    var vValues = v
    for t in 0..<rank {
      let parts = Self.sweepInParallel(&vValues, chunks: chunks, empty: [Double]()) { c, v in
        Self.sweepColumnRange(
          (cols * c / chunks)..<(cols * (c + 1) / chunks), t: t, u: uValues, v: v, rank: rank, rows: rows,
          cols: cols, window: windows[t], block: block, intervals: intervals)
      }
      moves[t] = parts.flatMap { $0 }
    }
    v = vValues
    return zip(moves, windows).map { Self.nextWindow($0, previous: $1) }
  }

  /// The column half-sweep of factor column `t` over the columns `range`: writes only those
  /// entries of `v`; returns their moves.
  private static func sweepColumnRange(
    _ range: Range<Int>, t: Int, u: [Double], v: UnsafeMutablePointer<Double>, rank: Int, rows: Int, cols: Int,
    window: Double, block: Int, intervals: RoundingIntervals
  ) -> [Double] {
    let lo = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let hi = UnsafeMutablePointer<Double>.allocate(capacity: block)
    var lines = (0..<min(block, range.count)).map { _ in SweepLine(capacity: 2 * rows) }
    defer {
      lo.deallocate()
      hi.deallocate()
    }
    var moves: [Double] = []
    moves.reserveCapacity(range.count)
    var first = range.lowerBound
    while first < range.upperBound {
      let width = min(block, range.upperBound - first)
      for k in 0..<width { lines[k].reset(center: v[(first + k) * rank + t], halfWidth: window) }
      lines.withUnsafeMutableBufferPointer { lines in
        for i in 0..<rows {
          let c = u[i * rank + t]
          guard c != 0 else { continue }
          intervals(i, first..<(first + width), lo, hi)
          if rank == 1 {
            // No other terms: the general loop with `rest` = 0 (x − 0 = x).
            for k in 0..<width where lo[k] <= hi[k] { lines[k].add(lo[k] / c, hi[k] / c) }
            continue
          }
          for k in 0..<width where lo[k] <= hi[k] {
            let j = first + k
            var rest = 0.0
            for s in 0..<rank where s != t { rest += u[i * rank + s] * v[j * rank + s] }
            lines[k].add((lo[k] - rest) / c, (hi[k] - rest) / c)
          }
        }
      }
      for k in 0..<width {
        let j = first + k
        let x0 = v[j * rank + t]
        let x = lines[k].best()
        v[j * rank + t] = x
        moves.append(abs(x - x0))
      }
      first += width
    }
    return moves
  }

  /// A half-sweep on the worker threads: `body(c, values)` for each of the `chunks` contiguous
  /// parts, each writing only its own rows or columns of `values` (a copy of U or V) and
  /// returning its result, collected in order.
  static func sweepInParallel<Part>(
    _ values: inout [Double], chunks: Int, empty: Part, _ body: (Int, UnsafeMutablePointer<Double>) -> Part
  ) -> [Part] {
    var parts = [Part](repeating: empty, count: chunks)
    values.withUnsafeMutableBufferPointer { buffer in
      parts.withUnsafeMutableBufferPointer { partBuffer in
        guard let base = buffer.baseAddress, let outBase = partBuffer.baseAddress else { return }
        nonisolated(unsafe) let (values, out) = (base, outBase)
        forEachChunk(chunks) { c in out[c] = body(c, values) }
      }
    }
    return parts
  }

  /// Runs `body(c)` for each `c` in `0..<count`, on `count` threads (inline for one).
  static func forEachChunk(_ count: Int, _ body: (Int) -> Void) {
    if count == 1 {
      body(0)
    } else {
      // Each call writes only its own chunk's rows or columns and its own result slot.
      withoutActuallyEscaping(body) { body in
        nonisolated(unsafe) let body = body
        DispatchQueue.concurrentPerform(iterations: count) { body($0) }
      }
    }
  }

  /// 8× the 90th percentile of the half-sweep's moves, between a sixteenth of the previous
  /// window and the previous window (moves of zero, common once Float32 values settle, must not
  /// close the window).
  static func nextWindow(_ moves: [Double], previous: Double) -> Double {
    guard !moves.isEmpty else { return previous }
    let sorted = moves.sorted()
    return min(previous, max(previous / 16, 8 * sorted[sorted.count * 9 / 10]))
  }
}

/// The value inside the most intervals, among the interval endpoints near a center: an event
/// `+1` at each lower end and `-1` at each upper end inside `[center − w, center + w]`; the
/// coverage at any point of the window is a constant plus the sum of the events before it.
struct SweepLine {
  private var events: [(x: Double, step: Int32)] = []
  private var center = 0.0
  private var low = 0.0
  private var high = 0.0

  init(capacity: Int) { events.reserveCapacity(capacity) }

  /// Starts a new coordinate with the window `center ± halfWidth`.
  mutating func reset(center: Double, halfWidth: Double) {
    events.removeAll(keepingCapacity: true)
    self.center = center
    low = center - halfWidth
    high = center + halfWidth
  }

  /// The interval between `a` and `b` (either order).
  @inline(__always)
  mutating func add(_ a: Double, _ b: Double) {
    let lower = min(a, b)
    let upper = max(a, b)
    guard upper >= low, lower <= high, lower.isFinite || upper.isFinite else { return }
    if lower >= low { events.append((lower, 1)) }
    if upper <= high { events.append((upper, -1)) }
  }

  /// The middle of the segment of greatest coverage (among ties, the one holding the center, else
  /// the nearest to it), as a Float32 value. Without events, the center.
  mutating func best() -> Double {
    guard !events.isEmpty else { return center }
    reduceAndSort()
    var coverage = 0
    var bestCoverage = 0
    var bestSegment = (low, events[0].x)
    var bestDistance = distance(low, events[0].x)
    for k in 0..<events.count {
      coverage += Int(events[k].step)
      let left = events[k].x
      let right = k + 1 < events.count ? events[k + 1].x : high
      guard right >= left else { continue }
      let d = distance(left, right)
      if coverage > bestCoverage || (coverage == bestCoverage && d < bestDistance) {
        bestCoverage = coverage
        bestSegment = (left, right)
        bestDistance = d
      }
    }
    let mid = bestSegment.0 / 2 + bestSegment.1 / 2
    guard mid.isFinite else { return center }
    // The factors are stored as Float32: of the Float32 values around the middle, the one inside
    // the most intervals (the nearest to the middle among ties).
    let rounded = Float(mid)
    var best = (x: Double(rounded), coverage: coverageAt(Double(rounded)))
    for candidate in [rounded.nextDown, rounded.nextUp] where candidate.isFinite {
      let c = coverageAt(Double(candidate))
      if c > best.coverage || (c == best.coverage && abs(Double(candidate) - mid) < abs(best.x - mid)) {
        best = (Double(candidate), c)
      }
    }
    return best.x
  }

  /// Sorts the events (at equal positions lower ends first: the intervals are closed), after
  /// replacing those of the stretches of the window that cannot hold the best segment by two
  /// events each, so only the events near the best coverage are sorted: a full sort of every
  /// endpoint was more than half of a refinement's time.
  ///
  /// The window is cut into buckets of ~16 events. With `C[b]` the coverage where bucket `b`
  /// starts, every point of the bucket is covered at most `C[b] + (lower ends in b)` times, and
  /// `L = max C[b]` is reached by a real segment. A bucket whose bound is below `L` holds no
  /// best segment: its events become one at its first position (stepping far down, so its
  /// inside is never chosen) and one at its last (stepping back up, plus the bucket's net
  /// count). The segments that enter and leave it keep their ends and coverage, so the scan in
  /// ``best()`` finds the same segment as over every event.
  private mutating func reduceAndSort() {
    let order: ((x: Double, step: Int32), (x: Double, step: Int32)) -> Bool = {
      $0.x < $1.x || ($0.x == $1.x && $0.step > $1.step)
    }
    let n = events.count
    let bucketCount = n / 16
    let scale = Double(bucketCount) / (high - low)
    guard bucketCount >= 8, scale.isFinite, scale > 0, low.isFinite, n < Int(Int32.max / 2) else {
      events.sort(by: order)
      return
    }
    @inline(__always) func bucket(_ x: Double) -> Int { min(bucketCount - 1, max(0, Int((x - low) * scale))) }
    var lowers = [Int32](repeating: 0, count: bucketCount)
    var net = [Int32](repeating: 0, count: bucketCount)
    var first = [Double](repeating: .infinity, count: bucketCount)
    var last = [Double](repeating: -.infinity, count: bucketCount)
    for e in events {
      let b = bucket(e.x)
      if e.step > 0 { lowers[b] += 1 }
      net[b] += e.step
      first[b] = min(first[b], e.x)
      last[b] = max(last[b], e.x)
    }
    var coverage: Int32 = 0
    var reachable: Int32 = 0
    for b in 0..<bucketCount {
      reachable = max(reachable, coverage)
      coverage += net[b]
    }
    reachable = max(reachable, coverage)
    var candidate = [Bool](repeating: false, count: bucketCount)
    coverage = 0
    for b in 0..<bucketCount {
      candidate[b] = first[b] <= last[b] && coverage + lowers[b] >= reachable
      coverage += net[b]
    }
    var kept: [(x: Double, step: Int32)] = []
    kept.reserveCapacity(n / 4)
    for e in events where candidate[bucket(e.x)] { kept.append(e) }
    let far = Int32(n + 1)
    for b in 0..<bucketCount where first[b] <= last[b] && !candidate[b] {
      if first[b] == last[b] {
        kept.append((first[b], net[b]))
      } else {
        kept.append((first[b], -far))
        kept.append((last[b], net[b] + far))
      }
    }
    kept.sort(by: order)
    events = kept
  }

  /// The coverage at `x` (relative to the window's low end) over the sorted events.
  private func coverageAt(_ x: Double) -> Int {
    var c = 0
    for e in events {
      if e.x > x || (e.x == x && e.step < 0) { break }
      c += Int(e.step)
    }
    return c
  }

  /// How far `[left, right]` is from the center (0 when it holds it).
  private func distance(_ left: Double, _ right: Double) -> Double {
    center < left ? left - center : center > right ? center - right : 0
  }
}
