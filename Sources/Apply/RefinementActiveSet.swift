/// The elements a refinement's later sweeps must still look at, with their intervals.
///
/// A half-sweep moves each factor coordinate by at most its window (plus a Float32 rounding),
/// and once the set is built the windows of factor column `t` are capped so that they add up to
/// at most a budget `Bu[t]` (`Bv[t]`): `u[i, t]` moves by at most `Du ≈ Bu[t]` in all, `v[j, t]`
/// by `Dv ≈ Bv[t]`, and the product `(U·Vᵀ)[i, j]` by at most
/// `M = Σ_t Du·(|v[j, t]| + Dv) + |u[i, t]|·Dv`. An element whose product lies inside its
/// interval by more than `M` on both sides stays inside whatever the sweeps do, and its interval
/// covers every window its row's and column's coordinates are searched in, so it adds no event to
/// any sweep line and no violation: leaving it out gives the very same factors and counts. The
/// others are kept here, row by row (`rowStart`, `column`, `lo`, `hi`) and indexed column by
/// column (`columnStart`, `byColumn`), both in ascending order, as the full sweeps visit them.
struct ActiveElements {
  /// Row `i`'s elements are `rowStart[i]..<rowStart[i + 1]`.
  var rowStart: [Int]
  var column: [Int32]
  var row: [Int32]
  var lo: [Double]
  var hi: [Double]
  /// Column `j`'s elements are `byColumn[columnStart[j]..<columnStart[j + 1]]` (indices into the above).
  var columnStart: [Int]
  var byColumn: [Int32]

  var count: Int { column.count }

  /// How far each factor coordinate can still move: its column's budget (the sum of the windows
  /// left), widened by the Float32 rounding of each of the `steps` half-sweeps left.
  struct Margins {
    var steps: Int
    var uBudget: [Double]
    var vBudget: [Double]

    var isFinite: Bool { (uBudget + vBudget).allSatisfy { $0.isFinite && $0 >= 0 } && steps > 0 }

    /// The most coordinate `x` (budget `b`) moves over the sweeps left.
    @inline(__always)
    func drift(_ x: Double, budget b: Double) -> Double {
      b + Double(steps) * 0x1p-20 * (abs(x) + b)
    }

    /// Per coordinate, what `M` needs, in one array: `Du` then `|u|` (rows × rank each), `Dv`
    /// then `|v| + Dv` (cols × rank each), so `M = Σ_t Du·(|v| + Dv) + |u|·Dv`.
    func terms(u: [Double], v: [Double], rank: Int) -> [Double] {
      let du = u.indices.map { drift(u[$0], budget: uBudget[$0 % rank]) }
      let dv = v.indices.map { drift(v[$0], budget: vBudget[$0 % rank]) }
      return du + u.map(abs) + dv + v.indices.map { abs(v[$0]) + dv[$0] }
    }

    /// `M` for element `(i, j)` of a `rows × cols` tensor from ``terms(u:v:rank:)``, and its
    /// interval `[lo, hi]`.
    @inline(__always)
    static func margin(
      _ terms: UnsafePointer<Double>, rows: Int, cols: Int, i: Int, j: Int, rank: Int, lo: Double, hi: Double
    ) -> Double {
      let au = terms + rows * rank
      let dv = au + rows * rank
      let av = dv + cols * rank
      var m = 0.0
      for t in 0..<rank { m += terms[i * rank + t] * av[j * rank + t] + au[i * rank + t] * dv[j * rank + t] }
      return widened(m, lo: lo, hi: hi)
    }

    /// The sum `m` widened by the Float64 rounding of the products and of the sweep line's
    /// endpoints, far below M.
    @inline(__always)
    static func widened(_ m: Double, lo: Double, hi: Double) -> Double {
      let width = hi - lo
      return m * (1 + 0x1p-10) + (width.isFinite ? 0x1p-30 * width : 0)
    }

    /// Whether the element can still change side (or is outside now).
    @inline(__always)
    func isActive(product p: Double, lo: Double, hi: Double, margin m: Double) -> Bool {
      !(lo <= hi && p - lo > m && hi - p > m)
    }
  }

  /// Row-major entries gathered per row range, joined in row order. Each part's arrays are
  /// emptied as they are copied, so the parts and the joined set are never both held whole (at
  /// 3.5M elements the copy was ~70 MB of a commit's peak).
  init(rows: Int, cols: Int, parts: inout [(counts: [Int], column: [Int32], lo: [Double], hi: [Double])]) {
    rowStart = [0]
    rowStart.reserveCapacity(rows + 1)
    for part in parts { for c in part.counts { rowStart.append(rowStart[rowStart.count - 1] + c) } }
    let total = parts.reduce(0) { $0 + $1.column.count }
    func joined<T>(_ take: (Int) -> [T]) -> [T] {
      var all = [T]()
      all.reserveCapacity(total)
      for k in parts.indices { all.append(contentsOf: take(k)) }
      return all
    }
    column = joined { k in
      defer { parts[k].column = [] }
      return parts[k].column
    }
    lo = joined { k in
      defer { parts[k].lo = [] }
      return parts[k].lo
    }
    hi = joined { k in
      defer { parts[k].hi = [] }
      return parts[k].hi
    }
    row = [Int32](repeating: 0, count: column.count)
    for i in 0..<rows { for e in rowStart[i]..<rowStart[i + 1] { row[e] = Int32(i) } }
    // Counting sort by column, stable: rows ascending within each column.
    columnStart = [Int](repeating: 0, count: cols + 1)
    for j in column { columnStart[Int(j) + 1] += 1 }
    for j in 0..<cols { columnStart[j + 1] += columnStart[j] }
    var next = columnStart
    byColumn = [Int32](repeating: 0, count: column.count)
    for e in 0..<column.count {
      let j = Int(column[e])
      byColumn[next[j]] = Int32(e)
      next[j] += 1
    }
  }
}

extension IntervalRefiner {
  /// Every element that can still change side under `margins` (one pass over the tensor, on the
  /// worker threads), or nil when there are more than `limit`.
  ///
  /// A pass that ends over the limit is mostly wasted (it stops only once a thread holds more
  /// than the limit), so every ``sampleStride``-th row is looked at first, and the pass is
  /// skipped when they hold more than 5/4 of their share of the limit. Both decisions count
  /// every thread's elements (the sampled rows are the same on any number of threads), so the
  /// set is built or not whatever the thread count. Either way the factors are the same (the
  /// sweeps then visit every element); only the time differs.
  func activeElements(margins: ActiveElements.Margins, limit: Int) -> ActiveElements? {
    let stride = Self.sampleStride
    if rows >= 4 * stride,
      activeParts(margins: margins, limit: limit / stride * 5 / 4, rowStride: stride) == nil
    {
      return nil
    }
    guard var parts = activeParts(margins: margins, limit: limit, rowStride: 1) else { return nil }
    return ActiveElements(rows: rows, cols: cols, parts: &parts)
  }

  /// Rows sampled before a pass that builds the active set: one in this many.
  static let sampleStride = 16

  /// The active elements of every `rowStride`-th row, gathered per row range (one count per row
  /// looked at), or nil when there are more than `limit`.
  private func activeParts(margins: ActiveElements.Margins, limit: Int, rowStride: Int) -> [(
    counts: [Int], column: [Int32], lo: [Double], hi: [Double]
  )]? {
    let (rows, cols, rank, intervals, u, v) = (self.rows, self.cols, self.rank, self.intervals, self.u, self.v)
    let chunks = max(1, min(workers, rows / 64))
    var parts = [(counts: [Int], column: [Int32], lo: [Double], hi: [Double])?](repeating: nil, count: chunks)
    let terms = margins.terms(u: u, v: v, rank: rank)
    parts.withUnsafeMutableBufferPointer { partBuffer in
      guard let outBase = partBuffer.baseAddress else { return }
      nonisolated(unsafe) let out = outBase
      Self.forEachChunk(chunks) { c in
        let range = (rows * c / chunks)..<(rows * (c + 1) / chunks)
        let lo = UnsafeMutablePointer<Double>.allocate(capacity: cols)
        let hi = UnsafeMutablePointer<Double>.allocate(capacity: cols)
        defer {
          lo.deallocate()
          hi.deallocate()
        }
        var part = (counts: [Int](), column: [Int32](), lo: [Double](), hi: [Double]())
        u.withUnsafeBufferPointer { up in
          v.withUnsafeBufferPointer { vp in
            terms.withUnsafeBufferPointer { tp in
              guard let ub = up.baseAddress, let vb = vp.baseAddress, let tb = tp.baseAddress else { return }
              for i in range where i % rowStride == 0 {
                intervals(i, 0..<cols, lo, hi)
                let before = part.column.count
                if rank == 1 {
                  // The general loop's arithmetic for one term, with the row's terms hoisted.
                  let (ui, du, au) = (ub[i], tb[i], tb[rows + i])
                  let (dv, av) = (tb + 2 * rows, tb + 2 * rows + cols)
                  for j in 0..<cols {
                    let p = 0.0 + ui * vb[j]
                    let m = ActiveElements.Margins.widened(0.0 + (du * av[j] + au * dv[j]), lo: lo[j], hi: hi[j])
                    if margins.isActive(product: p, lo: lo[j], hi: hi[j], margin: m) {
                      part.column.append(Int32(j))
                      part.lo.append(lo[j])
                      part.hi.append(hi[j])
                    }
                  }
                } else {
                  for j in 0..<cols {
                    var p = 0.0
                    for t in 0..<rank { p += ub[i * rank + t] * vb[j * rank + t] }
                    let m = ActiveElements.Margins.margin(
                      tb, rows: rows, cols: cols, i: i, j: j, rank: rank, lo: lo[j], hi: hi[j])
                    if margins.isActive(product: p, lo: lo[j], hi: hi[j], margin: m) {
                      part.column.append(Int32(j))
                      part.lo.append(lo[j])
                      part.hi.append(hi[j])
                    }
                  }
                }
                part.counts.append(part.column.count - before)
                if part.column.count > limit { return }  // the total is over it too
              }
            }
          }
        }
        out[c] = part.column.count > limit ? nil : part
      }
    }
    let complete = parts.compactMap { $0 }
    guard complete.count == chunks, complete.reduce(0, { $0 + $1.column.count }) <= limit else { return nil }
    return complete
  }

  /// The elements of `active` that can still change side under the narrower `margins`.
  func narrowed(_ active: ActiveElements, margins: ActiveElements.Margins) -> ActiveElements {
    let (rank, u, v) = (self.rank, self.u, self.v)
    var part = (counts: [Int](), column: [Int32](), lo: [Double](), hi: [Double]())
    let terms = margins.terms(u: u, v: v, rank: rank)
    u.withUnsafeBufferPointer { up in
      v.withUnsafeBufferPointer { vp in
        terms.withUnsafeBufferPointer { tp in
          guard let ub = up.baseAddress, let vb = vp.baseAddress, let tb = tp.baseAddress else { return }
          for i in 0..<rows {
            let before = part.column.count
            for e in active.rowStart[i]..<active.rowStart[i + 1] {
              let j = Int(active.column[e])
              var p = 0.0
              for t in 0..<rank { p += ub[i * rank + t] * vb[j * rank + t] }
              let m = ActiveElements.Margins.margin(
                tb, rows: rows, cols: cols, i: i, j: j, rank: rank, lo: active.lo[e], hi: active.hi[e])
              if margins.isActive(product: p, lo: active.lo[e], hi: active.hi[e], margin: m) {
                part.column.append(Int32(j))
                part.lo.append(active.lo[e])
                part.hi.append(active.hi[e])
              }
            }
            part.counts.append(part.column.count - before)
          }
        }
      }
    }
    var parts = [part]
    part = ([], [], [], [])
    return ActiveElements(rows: rows, cols: cols, parts: &parts)
  }

  /// ``sweepRows(windows:)`` over the active elements only: the same factors and count.
  mutating func sweepRows(windows: [Double], active: ActiveElements) -> (windows: [Double], violations: Int) {
    let reciprocal = v.map { $0 == 0 ? 0 : 1 / $0 }
    let (rows, rank) = (self.rows, self.rank)
    let chunks = max(1, min(workers, rows / 64))
    var uValues = u
    let vValues = v
    let parts = Self.sweepInParallel(&uValues, chunks: chunks, empty: (moves: [[Double]](), violations: 0)) { c, u in
      var line = SweepLine(capacity: 64)
      var moves = [[Double]](repeating: [], count: rank)
      var violations = 0
      for i in (rows * c / chunks)..<(rows * (c + 1) / chunks) {
        let entries = active.rowStart[i]..<active.rowStart[i + 1]
        for t in 0..<rank {
          let x0 = u[i * rank + t]
          line.reset(center: x0, halfWidth: windows[t])
          for e in entries {
            let j = Int(active.column[e])
            let (lo, hi) = (active.lo[e], active.hi[e])
            guard reciprocal[j * rank + t] != 0 && lo <= hi else { continue }
            var rest = 0.0
            for s in 0..<rank where s != t { rest += u[i * rank + s] * vValues[j * rank + s] }
            line.add((lo - rest) * reciprocal[j * rank + t], (hi - rest) * reciprocal[j * rank + t])
          }
          let x = line.best()
          u[i * rank + t] = x
          moves[t].append(abs(x - x0))
        }
        for e in entries {
          let j = Int(active.column[e])
          var p = 0.0
          for t in 0..<rank { p += u[i * rank + t] * vValues[j * rank + t] }
          if p < active.lo[e] || p > active.hi[e] { violations += 1 }
        }
      }
      return (moves, violations)
    }
    u = uValues
    let moves = (0..<rank).map { t in parts.flatMap { $0.moves[t] } }
    return (zip(moves, windows).map { Self.nextWindow($0, previous: $1) }, parts.reduce(0) { $0 + $1.violations })
  }

  /// ``sweepColumns(windows:)`` over the active elements only: the same factors.
  mutating func sweepColumns(windows: [Double], active: ActiveElements) -> [Double] {
    let (cols, rank) = (self.cols, self.rank)
    let chunks = max(1, min(workers, cols / 64))
    let uValues = u
    var vValues = v
    let parts = Self.sweepInParallel(&vValues, chunks: chunks, empty: [[Double]]()) { c, v in
      var line = SweepLine(capacity: 64)
      var moves = [[Double]](repeating: [], count: rank)
      for j in (cols * c / chunks)..<(cols * (c + 1) / chunks) {
        let entries = active.columnStart[j]..<active.columnStart[j + 1]
        // Factor column by factor column, as the full sweep does (column j's update reads
        // only its own entries of v).
        for t in 0..<rank {
          let x0 = v[j * rank + t]
          line.reset(center: x0, halfWidth: windows[t])
          for k in entries {
            let e = Int(active.byColumn[k])
            let i = Int(active.row[e])
            let coefficient = uValues[i * rank + t]
            let (lo, hi) = (active.lo[e], active.hi[e])
            guard coefficient != 0 && lo <= hi else { continue }
            var rest = 0.0
            for s in 0..<rank where s != t { rest += uValues[i * rank + s] * v[j * rank + s] }
            line.add((lo - rest) / coefficient, (hi - rest) / coefficient)
          }
          let x = line.best()
          v[j * rank + t] = x
          moves[t].append(abs(x - x0))
        }
      }
      return moves
    }
    v = vValues
    let moves = (0..<rank).map { t in parts.flatMap { $0[t] } }
    return zip(moves, windows).map { Self.nextWindow($0, previous: $1) }
  }
}
