import CKernels

/// The least-squares start of a refinement: before the sweep lines, each coordinate is moved to
/// minimize the squared distance of its elements to their intervals (`Σ d(p, [lo, hi])²`, zero
/// inside), a few Newton steps at a time. That is a linear pass per step with no sorting, and it
/// removes the rank finder's bias: the rounded difference is a staircase of `U·Vᵀ`, and its
/// least-squares factors are pulled towards the stairs by about a tenth of an ulp, where these
/// land within a small fraction of one on nearly every element, so the sweeps can start with
/// narrow windows.
extension IntervalRefiner {
  /// Newton steps per coordinate and half-pass.
  static let newtonSteps = 3

  /// Whether the Newton loops run on AVX2 (`CKernels`, the same values as the portable loops).
  static let wideLoops = mvc_newton_avx2_available() != 0

  /// Moves every `u[i, t]` (rows independent, V fixed); returns the moves (per factor column).
  mutating func fitRows() -> [[Double]] {
    let (rows, cols, rank, intervals) = (self.rows, self.cols, self.rank, self.intervals)
    let chunks = max(1, min(workers, rows / 64))
    var uValues = u
    // V's columns, each contiguous: the coefficients of u[i, t] along row i.
    let columns = (0..<rank).flatMap { t in (0..<cols).map { j in v[j * rank + t] } }
    let parts = Self.sweepInParallel(&uValues, chunks: chunks, empty: [[Double]]()) {
      c, u in
      let lo = UnsafeMutablePointer<Double>.allocate(capacity: cols)
      let hi = UnsafeMutablePointer<Double>.allocate(capacity: cols)
      let p = UnsafeMutablePointer<Double>.allocate(capacity: cols)
      defer {
        for b in [lo, hi, p] { b.deallocate() }
      }
      var moves = [[Double]](repeating: [], count: rank)
      columns.withUnsafeBufferPointer { vp in
        guard let v = vp.baseAddress else { return }
        for i in (rows * c / chunks)..<(rows * (c + 1) / chunks) {
          intervals(i, 0..<cols, lo, hi)
          p.initialize(repeating: 0, count: cols)
          for t in 0..<rank { Self.addMultiple(u[i * rank + t], of: v + t * cols, to: p, count: cols) }
          for t in 0..<rank {
            let x0 = u[i * rank + t]
            u[i * rank + t] = Self.newtonFit(x0, count: cols, lo: lo, hi: hi, products: p, coefficients: v + t * cols)
            moves[t].append(abs(u[i * rank + t] - x0))
          }
        }
      }
      return moves
    }
    u = uValues
    return (0..<rank).map { t in parts.flatMap { $0[t] } }
  }

  /// `x` moved by ``newtonSteps`` Newton steps on `Σ d(p_k, [lo_k, hi_k])²`, where
  /// `p_k` = `products[k]` moves by `coefficients[k]` per unit of `x`, then rounded to
  /// Float32; `products` is updated to the returned value.
  @inline(__always)
  static func newtonFit(
    _ x: Double, count: Int, lo: UnsafePointer<Double>, hi: UnsafePointer<Double>,
    products p: UnsafeMutablePointer<Double>, coefficients c: UnsafePointer<Double>
  ) -> Double {
    var x = x
    var step = 0.0
    for _ in 0..<newtonSteps {
      let (g, h) = newtonSums(moving: p, by: step, along: c, count: count, lo: lo, hi: hi)
      guard h > 0, g.isFinite else {
        step = 0
        break
      }
      step = -g / h
      x += step
    }
    let rounded = Double(Float(x))
    step += rounded - x
    if step != 0 { addMultiple(step, of: c, to: p, count: count) }
    return rounded
  }

  /// `y[k] += a·x[k]`, two lanes at a time (the same values as one at a time).
  @inline(__always)
  static func addMultiple(_ a: Double, of x: UnsafePointer<Double>, to y: UnsafeMutablePointer<Double>, count: Int) {
    let (xRaw, yRaw) = (UnsafeRawPointer(x), UnsafeMutableRawPointer(y))
    let factor = SIMD2<Double>(repeating: a)
    var k = 0
    while k + 2 <= count {
      let sum =
        yRaw.loadUnaligned(fromByteOffset: 8 * k, as: SIMD2<Double>.self) + factor
        * xRaw.loadUnaligned(fromByteOffset: 8 * k, as: SIMD2<Double>.self)
      yRaw.storeBytes(of: sum, toByteOffset: 8 * k, as: SIMD2<Double>.self)
      k += 2
    }
    if k < count { y[k] += a * x[k] }
  }

  /// Moves `p` by `step·c`, then sums `c·d` and `c²` over the elements outside their interval
  /// (`d` the signed distance to it): the gradient and curvature of `Σ d²`, halved. Four lanes
  /// at a time, in a fixed order (the same sums for the same inputs, on any thread).
  @inline(__always)
  static func newtonSums(
    moving p: UnsafeMutablePointer<Double>, by step: Double, along c: UnsafePointer<Double>, count: Int,
    lo: UnsafePointer<Double>, hi: UnsafePointer<Double>, wide: Bool = wideLoops
  ) -> (g: Double, h: Double) {
    typealias Lanes = SIMD4<Double>
    let (cRaw, pRaw, loRaw, hiRaw) = (
      UnsafeRawPointer(c), UnsafeMutableRawPointer(p), UnsafeRawPointer(lo), UnsafeRawPointer(hi)
    )
    let s = Lanes(repeating: step)
    var g = Lanes()
    var h = Lanes()
    var k = 0
    if wide {
      // The same lanes on AVX2 (CKernels/NewtonSums.c); the loop below then does nothing.
      withUnsafeMutablePointer(to: &g) { gp in
        withUnsafeMutablePointer(to: &h) { hp in
          gp.withMemoryRebound(to: Double.self, capacity: 4) { g4 in
            hp.withMemoryRebound(to: Double.self, capacity: 4) { h4 in
              k = mvc_newton_sums_avx2(p, step, c, count, lo, hi, g4, h4)
            }
          }
        }
      }
    }
    while k + 4 <= count {
      let offset = 8 * k
      let a = cRaw.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      let q = pRaw.loadUnaligned(fromByteOffset: offset, as: Lanes.self) + s * a
      pRaw.storeBytes(of: q, toByteOffset: offset, as: Lanes.self)
      let l = loRaw.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      let u = hiRaw.loadUnaligned(fromByteOffset: offset, as: Lanes.self)
      let d = (q - l).replacing(with: 0, where: q .>= l) + (q - u).replacing(with: 0, where: q .<= u)
      g += a * d
      h += (a * a).replacing(with: 0, where: d .== 0)
      k += 4
    }
    var gs = g.sum()
    var hs = h.sum()
    while k < count {
      let a = c[k]
      let q = p[k] + step * a
      p[k] = q
      let d = (q < lo[k] ? q - lo[k] : 0) + (q > hi[k] ? q - hi[k] : 0)
      gs += a * d
      hs += d == 0 ? 0 : a * a
      k += 1
    }
    return (gs, hs)
  }

  /// One row of a column Newton step: for each column `k`, the product moved by `moved[k]·a`, `d`
  /// its signed distance to `[lo[k], hi[k]]` (Float32 offsets from the products at the start),
  /// `g[k] += a·d` and `h[k] += a²` where `d ≠ 0`.
  @inline(__always)
  static func newtonColumnRow(
    _ a: Double, lo: UnsafePointer<Float>, hi: UnsafePointer<Float>, moved: UnsafePointer<Double>,
    g: UnsafeMutablePointer<Double>, h: UnsafeMutablePointer<Double>, width: Int, wide: Bool = wideLoops
  ) {
    // The first multiple of 4 columns on AVX2 (CKernels/NewtonSums.c), the same values.
    var k = wide ? mvc_newton_column_row_avx2(a, lo, hi, moved, g, h, width) : 0
    while k < width {
      let q = moved[k] * a
      let l = Double(lo[k])
      let m = Double(hi[k])
      let d = (q < l ? q - l : 0) + (q > m ? q - m : 0)
      g[k] += a * d
      h[k] += d == 0 ? 0 : a * a
      k += 1
    }
  }

  /// Moves every `v[j, t]` (columns independent, U fixed), a block of columns at a time. The
  /// block's intervals are kept row-major, as Float32 offsets from the products at the start
  /// (`lo − p`, `hi − p`: a fraction of an ulp of the dtype, far inside Float32's precision,
  /// which is all a start needs), so a block is wide (a few MB per thread) and its intervals
  /// are read a row at a time; each Newton step is a pass over its rows that moves all of its
  /// columns at once. Returns the moves (per factor column) and, when `counting`, the elements
  /// left outside their interval, from the block's offsets (no second pass over the tensor).
  mutating func fitColumns(counting: Bool = false) -> (moves: [[Double]], outside: Int?) {
    let (rows, cols, rank, intervals) = (self.rows, self.cols, self.rank, self.intervals)
    let chunks = max(1, min(workers, cols / 64))
    let block = max(1, min(cols / chunks, max(64, (1 << 20) / max(1, rows))))
    let uValues = u
    var vValues = v
    let parts = Self.sweepInParallel(&vValues, chunks: chunks, empty: (moves: [[Double]](), outside: 0)) { c, v in
      let range = (cols * c / chunks)..<(cols * (c + 1) / chunks)
      let rowLo = UnsafeMutablePointer<Double>.allocate(capacity: block)
      let rowHi = UnsafeMutablePointer<Double>.allocate(capacity: block)
      let lo = UnsafeMutablePointer<Float>.allocate(capacity: block * rows)
      let hi = UnsafeMutablePointer<Float>.allocate(capacity: block * rows)
      let x = UnsafeMutablePointer<Double>.allocate(capacity: block)
      let g = UnsafeMutablePointer<Double>.allocate(capacity: block)
      let h = UnsafeMutablePointer<Double>.allocate(capacity: block)
      let moved = UnsafeMutablePointer<Double>.allocate(capacity: block)
      defer {
        for b in [rowLo, rowHi, x, g, h, moved] { b.deallocate() }
        lo.deallocate()
        hi.deallocate()
      }
      var moves = [[Double]](repeating: [], count: rank)
      var outside = 0
      uValues.withUnsafeBufferPointer { up in
        guard let u = up.baseAddress else { return }
        var first = range.lowerBound
        while first < range.upperBound {
          let width = min(block, range.upperBound - first)
          for i in 0..<rows {
            intervals(i, first..<(first + width), rowLo, rowHi)
            let (blockLo, blockHi) = (lo + i * width, hi + i * width)
            if rank == 1 {
              // The general loop's sum for one term (`0 + u·v`), with V's entries contiguous.
              let (a, vs) = (u[i], UnsafePointer(v + first))
              for k in 0..<width {
                let p = 0.0 + a * vs[k]
                blockLo[k] = Float(rowLo[k] - p)
                blockHi[k] = Float(rowHi[k] - p)
              }
              continue
            }
            for k in 0..<width {
              var p = 0.0
              for t in 0..<rank { p += u[i * rank + t] * v[(first + k) * rank + t] }
              blockLo[k] = Float(rowLo[k] - p)
              blockHi[k] = Float(rowHi[k] - p)
            }
          }
          for t in 0..<rank {
            for k in 0..<width { x[k] = v[(first + k) * rank + t] }
            // How far each column's coordinate has moved: its products moved by that times u[i, t].
            moved.initialize(repeating: 0, count: width)
            for _ in 0..<Self.newtonSteps {
              g.initialize(repeating: 0, count: width)
              h.initialize(repeating: 0, count: width)
              for i in 0..<rows {
                Self.newtonColumnRow(
                  u[i * rank + t], lo: lo + i * width, hi: hi + i * width, moved: moved, g: g, h: h, width: width)
              }
              for k in 0..<width {
                let step = h[k] > 0 && g[k].isFinite ? -g[k] / h[k] : 0
                x[k] += step
                moved[k] += step
              }
            }
            for k in 0..<width {
              let rounded = Double(Float(x[k]))
              moved[k] += rounded - x[k]
              moves[t].append(abs(moved[k]))
              v[(first + k) * rank + t] = rounded
            }
            if t + 1 < rank {
              for i in 0..<rows {
                let a = u[i * rank + t]
                for k in 0..<width {
                  let shift = moved[k] * a
                  lo[i * width + k] = Float(Double(lo[i * width + k]) - shift)
                  hi[i * width + k] = Float(Double(hi[i * width + k]) - shift)
                }
              }
            } else if counting {
              // The offsets hold every earlier column's move; the last one's is `moved`.
              for i in 0..<rows {
                let a = u[i * rank + t]
                for k in 0..<width {
                  let q = moved[k] * a
                  if q < Double(lo[i * width + k]) || q > Double(hi[i * width + k]) { outside += 1 }
                }
              }
            }
          }
          first += width
        }
      }
      return (moves, outside)
    }
    v = vValues
    return ((0..<rank).map { t in parts.flatMap { $0.moves[t] } }, counting ? parts.reduce(0) { $0 + $1.outside } : nil)
  }
}
