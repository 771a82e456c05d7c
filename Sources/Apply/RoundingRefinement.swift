/// Where the stored bytes put each element of a delta: for row `row` and the columns `cols`,
/// `lo[k] ≤ ΔW[row, cols.lowerBound + k] ≤ hi[k]` is what makes the reconstruction round to the
/// committed value (the midpoints to the stored value's two neighbours, minus the parent's value).
/// An element that constrains nothing has `lo = -∞, hi = +∞`.
package typealias RoundingIntervals =
  (_ row: Int, _ cols: Range<Int>, _ lo: UnsafeMutablePointer<Double>, _ hi: UnsafeMutablePointer<Double>) -> Void

/// What ``Factorization/refineAgainstRounding(_:rows:cols:maxSweeps:intervals:)`` did.
package struct RefinementReport: Sendable, Equatable {
  /// Elements outside their interval after each sweep's row half (the last: the factors
  /// returned, but for the Float32 rounding of `v`).
  package var violations: [Int]
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
  /// Only endpoints within a window around the current value are sorted: ±w per factor column,
  /// starting at 1/8 of the column's RMS, then 8× the median move of the previous half-sweep,
  /// so the cost is a linear pass over the tensor per coordinate and half-sweep plus a sort of
  /// the few endpoints near each value. Sweeps stop when one removes less than a tenth of the violations left.
  ///
  /// All arithmetic is Float64; the factors come back rounded to Float32, as they are stored.
  /// The result is a better starting point for the exactness residual, never a different
  /// contract: the residual still makes the reconstruction exact.
  /// - Parameters:
  ///   - factors: the rank finder's factors (`u` rows × rank, `v` cols × rank, row-major).
  ///   - maxSweeps: the most row-then-column sweeps to run.
  ///   - intervals: each element's interval, as ``RoundingIntervals``.
  /// - Returns: the refined factors (singular values and residual norm left as the rank finder
  ///   measured them) and the violation counts.
  package static func refineAgainstRounding(
    _ factors: LowRankFactors, rows: Int, cols: Int, maxSweeps: Int = 6, intervals: RoundingIntervals
  ) -> (factors: LowRankFactors, report: RefinementReport) {
    let rank = factors.rank
    guard rank > 0, rows > 0, cols > 0, maxSweeps > 0 else { return (factors, RefinementReport(violations: [])) }
    return withoutActuallyEscaping(intervals) { intervals in
      var best = refine(factors, rows: rows, cols: cols, maxSweeps: maxSweeps, intervals: intervals)
      // A rounded difference is a staircase of U·Vᵀ, not U·Vᵀ plus independent noise: the rank
      // finder can see one component too many (a bf16 rank-one edit comes out as rank 2). Keep
      // the lower rank when its factors and residual together are smaller.
      if rank > 1 {
        var lower = factors
        lower.rank = rank - 1
        lower.u = (0..<rows).flatMap { i in factors.u[(i * rank)..<(i * rank + rank - 1)] }
        lower.v = (0..<cols).flatMap { j in factors.v[(j * rank)..<(j * rank + rank - 1)] }
        lower.singularValues = Array(factors.singularValues.prefix(rank - 1))
        let other = refine(lower, rows: rows, cols: cols, maxSweeps: maxSweeps, intervals: intervals)
        // ~12 bits per residual element against 32 per factor element.
        func cost(_ r: (factors: LowRankFactors, report: RefinementReport)) -> Int {
          12 * (r.report.violations.last ?? 0) + 32 * r.factors.rank * (rows + cols)
        }
        if cost(other) < cost(best) { best = other }
      }
      return best
    }
  }

  private static func refine(
    _ factors: LowRankFactors, rows: Int, cols: Int, maxSweeps: Int, intervals: @escaping RoundingIntervals
  ) -> (factors: LowRankFactors, report: RefinementReport) {
    var refiner = IntervalRefiner(
      u: factors.u.map(Double.init), v: factors.v.map(Double.init), rows: rows, cols: cols, rank: factors.rank,
      intervals: intervals)
    var violations: [Int] = []
    var uWindow = refiner.initialWindows(of: refiner.u, count: rows)
    var vWindow = refiner.initialWindows(of: refiner.v, count: cols)
    for _ in 0..<maxSweeps {
      let (windows, now) = refiner.sweepRows(windows: uWindow)
      uWindow = windows
      if let before = violations.last, now == 0 || before - now < before / 10 {
        violations.append(now)
        break
      }
      violations.append(now)
      vWindow = refiner.sweepColumns(windows: vWindow)
    }
    var refined = factors
    refined.u = refiner.u.map { Float($0) }
    refined.v = refiner.v.map { Float($0) }
    return (refined, RefinementReport(violations: violations))
  }
}

/// The state of one refinement: Float64 factors and the element intervals they are fitted to.
private struct IntervalRefiner {
  var u: [Double]
  var v: [Double]
  let rows: Int
  let cols: Int
  let rank: Int
  let intervals: RoundingIntervals
  /// Columns per block of the column half-sweep: its endpoint buckets hold `2·rows` values each.
  var columnBlock: Int { max(1, min(cols, (1 << 21) / max(1, 2 * rows))) }

  init(u: [Double], v: [Double], rows: Int, cols: Int, rank: Int, intervals: @escaping RoundingIntervals) {
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
  /// left outside their interval.
  mutating func sweepRows(windows: [Double]) -> (windows: [Double], violations: Int) {
    let lo = UnsafeMutablePointer<Double>.allocate(capacity: cols)
    let hi = UnsafeMutablePointer<Double>.allocate(capacity: cols)
    var line = SweepLine(capacity: 2 * cols)
    defer {
      lo.deallocate()
      hi.deallocate()
    }
    var moves = [[Double]](repeating: [], count: rank)
    let reciprocal = v.map { $0 == 0 ? 0 : 1 / $0 }
    var violations = 0
    for i in 0..<rows {
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
    return (zip(moves, windows).map { Self.nextWindow($0, previous: $1) }, violations)
  }

  /// Updates every `v[j, t]`, a block of columns at a time (each row read once per block);
  /// returns the windows for the next column half-sweep.
  mutating func sweepColumns(windows: [Double]) -> [Double] {
    let block = columnBlock
    let lo = UnsafeMutablePointer<Double>.allocate(capacity: block)
    let hi = UnsafeMutablePointer<Double>.allocate(capacity: block)
    var lines = (0..<block).map { _ in SweepLine(capacity: 2 * rows) }
    defer {
      lo.deallocate()
      hi.deallocate()
    }
    var moves = [[Double]](repeating: [], count: rank)
    for t in 0..<rank {
      var first = 0
      while first < cols {
        let width = min(block, cols - first)
        for k in 0..<width { lines[k].reset(center: v[(first + k) * rank + t], halfWidth: windows[t]) }
        for i in 0..<rows {
          let c = u[i * rank + t]
          guard c != 0 else { continue }
          intervals(i, first..<(first + width), lo, hi)
          for k in 0..<width where lo[k] <= hi[k] {
            let j = first + k
            var rest = 0.0
            for s in 0..<rank where s != t { rest += u[i * rank + s] * v[j * rank + s] }
            lines[k].add((lo[k] - rest) / c, (hi[k] - rest) / c)
          }
        }
        for k in 0..<width {
          let j = first + k
          let x0 = v[j * rank + t]
          let x = lines[k].best()
          v[j * rank + t] = x
          moves[t].append(abs(x - x0))
        }
        first += width
      }
    }
    return zip(moves, windows).map { Self.nextWindow($0, previous: $1) }
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
private struct SweepLine {
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
    // At equal positions lower ends come first: the intervals are closed.
    events.sort { $0.x < $1.x || ($0.x == $1.x && $0.step > $1.step) }
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
