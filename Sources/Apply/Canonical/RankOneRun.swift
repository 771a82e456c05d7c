import CKernels

/// A run of F32 rank-one states applied together, each with its own rounding (the canonical rule
/// once per state, as a replay one state at a time does), at a fraction of the memory traffic.
extension CanonicalRule {
  /// Columns of one tile: eight Float64 lanes per row, two rows at a time, so the sixteen
  /// independent chains of one tile hide the latency of the add and the two conversions.
  static let runTileColumns = 8

  /// Whether the AVX2 tile (`mvc_rank_one_run_tile4_avx2`, Sources/CKernels: four rows × eight
  /// columns, four Float64 lanes per instruction, the same bytes) runs on this CPU.
  package static let wideTilesAvailable = mvc_rank_one_run_avx2_available() != 0

  /// `raw = round(… round(round(raw + u₀v₀ᵀ) + u₁v₁ᵀ) … + u_{K−1}v_{K−1}ᵀ)` for `count` rank-one
  /// states, oldest first: bit for bit `addRankOneF32` applied `count` times. `u` holds the
  /// states' u vectors one after another (`count × rows`), `v` their v vectors (`count × cols`).
  ///
  /// The loop is element-major: a tile of 2 rows × 8 columns stays in registers through all K
  /// states (one multiply, one add and the Float32 rounding and widening per element and state),
  /// so a long run of factor-only states (`commit-factors`, `--delta`) costs a few operations per
  /// element and state instead of a pass over the tensor each. The factors are widened to Float64
  /// beforehand (`rows × K` and `cols × K` values, tile-major for the columns).
  ///
  /// Inf and NaN are absorbing along a chain (a product of finite Float32 factors is finite, and
  /// any sum with a non-finite value stays non-finite), so a tile whose final values are all
  /// finite never met one; a tile that ends with a non-finite value, or whose factors are not
  /// finite, is recomputed element by element with `storage.encode` for each non-finite sum, as
  /// `addRankOneF32` does.
  /// - Parameter allowWideTiles: `false` keeps to the portable Swift tiles (tests check that both
  ///   give the same bits).
  package static func addRankOneRunF32(
    _ raw: UnsafeMutableRawPointer, rows: Int, cols: Int, count k: Int, u us: UnsafePointer<Float>,
    v vs: UnsafePointer<Float>, storage: Storage, allowWideTiles: Bool = true
  ) {
    guard k > 0, rows > 0, cols > 0 else { return }
    let w = runTileColumns
    let tiles = (cols + w - 1) / w
    // u as rows × K, v as tiles × K × 8 (zero past the last column): the inner loop's loads
    // are contiguous.
    let ud = UnsafeMutablePointer<Double>.allocate(capacity: rows * k)
    defer { ud.deallocate() }
    let vd = UnsafeMutablePointer<Double>.allocate(capacity: tiles * k * w)
    defer { vd.deallocate() }
    vd.initialize(repeating: 0, count: tiles * k * w)
    var finiteFactors = true
    for s in 0..<k {
      let u = us + (s &* rows)
      for i in 0..<rows {
        let x = Double(u[i])
        ud[i &* k &+ s] = x
        finiteFactors = finiteFactors && x.isFinite
      }
      let v = vs + (s &* cols)
      for j in 0..<cols {
        let x = Double(v[j])
        let slot: Int = ((j / w) &* k &+ s) &* w &+ j % w
        vd[slot] = x
        finiteFactors = finiteFactors && x.isFinite
      }
    }
    let x = raw.assumingMemoryBound(to: UInt32.self)

    /// One element through every state, exactly as `addRankOneF32` treats it.
    func chain(_ i: Int, _ j: Int) {
      var value = Float(bitPattern: UInt32(littleEndian: x[i &* cols &+ j]))
      let offset: Int = (j / w) &* k &* w &+ j % w
      let vj = vd + offset
      for s in 0..<k {
        let y = Double(value) + ud[(i &* k) &+ s] * vj[s &* w]
        if y.isFinite {
          value = Float(y)
        } else {
          var sum = y
          var out: UInt32 = 0
          withUnsafeMutableBytes(of: &out) { bytes in
            withUnsafePointer(to: &sum) { storage.encode(UnsafeBufferPointer(start: $0, count: 1), bytes, 0) }
          }
          value = Float(bitPattern: UInt32(littleEndian: out))
        }
      }
      x[i &* cols &+ j] = value.bitPattern.littleEndian
    }

    @inline(__always)
    func load(_ p: UnsafeMutablePointer<UInt32>) -> SIMD8<Double> {
      SIMD8<Double>(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self))
    }
    @inline(__always)
    func finite(_ a: SIMD8<Double>) -> Bool {
      // a − a is +0 in a finite lane and NaN in an Inf or NaN lane; the sum is 0 only when every
      // lane is finite (one vector subtract and a reduction, no per-lane branch).
      (a - a).sum() == 0
    }
    @inline(__always)
    func store(_ a: SIMD8<Double>, _ p: UnsafeMutablePointer<UInt32>) {
      UnsafeMutableRawPointer(p).storeBytes(of: SIMD8<Float>(a), as: SIMD8<Float>.self)
    }

    // The tiles load and store Float32 lanes in the host's order: little-endian hosts only.
    let littleEndian = 1.littleEndian == 1
    let fullTiles = finiteFactors && littleEndian ? cols / w : 0
    for t in 0..<fullTiles {
      let vt = UnsafeRawPointer(vd + (t &* k &* w))
      let j0 = t &* w
      var i = 0
      if allowWideTiles && wideTilesAvailable {
        while i &+ 3 < rows {
          let mask = mvc_rank_one_run_tile4_avx2(
            UnsafeMutablePointer<Float>(OpaquePointer(x + (i &* cols &+ j0))), cols, ud + (i &* k), k,
            vd + (t &* k &* w))
          if mask != 0 {
            for r in 0..<4 where mask & (1 << r) != 0 {
              for c in 0..<w { chain(i &+ r, j0 &+ c) }
            }
          }
          i &+= 4
        }
      }
      while i &+ 1 < rows {
        let pa = x + (i &* cols &+ j0)
        let pb = pa + cols
        var a = load(pa)
        var b = load(pb)
        let ua = ud + (i &* k)
        let ub = ua + k
        for s in 0..<k {
          let v = vt.loadUnaligned(fromByteOffset: s &* w &* 8, as: SIMD8<Double>.self)
          a = SIMD8<Double>(SIMD8<Float>(a + ua[s] * v))
          b = SIMD8<Double>(SIMD8<Float>(b + ub[s] * v))
        }
        if finite(a) { store(a, pa) } else { for c in 0..<w { chain(i, j0 &+ c) } }
        if finite(b) { store(b, pb) } else { for c in 0..<w { chain(i &+ 1, j0 &+ c) } }
        i &+= 2
      }
      if i < rows {
        let pa = x + (i &* cols &+ j0)
        var a = load(pa)
        let ua = ud + (i &* k)
        for s in 0..<k {
          let v = vt.loadUnaligned(fromByteOffset: s &* w &* 8, as: SIMD8<Double>.self)
          a = SIMD8<Double>(SIMD8<Float>(a + ua[s] * v))
        }
        if finite(a) { store(a, pa) } else { for c in 0..<w { chain(i, j0 &+ c) } }
      }
    }
    // The columns past the last whole tile (all of them when a factor is not finite).
    for i in 0..<rows {
      for j in (fullTiles &* w)..<cols { chain(i, j) }
    }
  }
}
