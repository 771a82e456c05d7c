/// The canonical reconstruction rule of docs/FORMAT.md on a stored tensor, in place:
///
/// ```
/// x[i, j] = round_dtype(Double(x[i, j]) + Σ_r Double(u[i, r]) · Double(v[j, r]))
/// ```
/// the sum in increasing `r` (``CanonicalReconstruction``), no BLAS, then one rounding to the
/// stored dtype (round to nearest, ties to even). The whole rule lives in this folder; the
/// dtype's two conversions come from the caller as a ``CanonicalRule/Storage`` (Apply knows no
/// dtypes: EditVCS builds it from DeltaStore's `FloatConversion`).
package enum CanonicalRule {
  /// How the stored elements of one dtype become Float64, and Float64 becomes them again.
  package struct Storage: Sendable {
    /// `decode(raw, elements, into)`: elements `elements` of `raw`, exactly, into `into`
    /// (`into.count == elements.count`).
    package var decode: @Sendable (UnsafeRawBufferPointer, Range<Int>, UnsafeMutableBufferPointer<Double>) -> Void
    /// `encode(values, raw, elementOffset)`: each value rounded once (to nearest, ties to even)
    /// into `raw` from element `elementOffset` on.
    package var encode: @Sendable (UnsafeBufferPointer<Double>, UnsafeMutableRawBufferPointer, Int) -> Void
    /// Little-endian IEEE binary32, whose finite values `Float(_:)` rounds as `encode` does: the
    /// rank-one fast path (``addRankOneF32(_:rows:cols:u:v:storage:)``) applies.
    package var isBinary32: Bool

    package init(
      decode: @escaping @Sendable (UnsafeRawBufferPointer, Range<Int>, UnsafeMutableBufferPointer<Double>) -> Void,
      encode: @escaping @Sendable (UnsafeBufferPointer<Double>, UnsafeMutableRawBufferPointer, Int) -> Void,
      isBinary32: Bool
    ) {
      self.decode = decode
      self.encode = encode
      self.isBinary32 = isBinary32
    }
  }

  /// `raw = round(raw + U·Vᵀ)` in place; `raw` holds `rows × cols` elements of `storage`'s dtype,
  /// `u` is `rows × rank` and `v` is `cols × rank`, both row-major. `rank == 0` changes nothing.
  ///
  /// Works a row block at a time, so the Float64 copy stays at 2 MiB whatever the tensor's size.
  /// - Parameter allowFastPath: `false` skips the fused F32 rank-one kernel (tests check that
  ///   both give the same bits).
  package static func apply(
    to raw: UnsafeMutableRawBufferPointer, storage: Storage, rows: Int, cols: Int,
    u: UnsafeBufferPointer<Float>, v: UnsafeBufferPointer<Float>, rank: Int, allowFastPath: Bool = true
  ) {
    guard rank > 0, let uBase = u.baseAddress, let vBase = v.baseAddress else { return }
    if allowFastPath && storage.isBinary32 && rank == 1, let base = raw.baseAddress {
      addRankOneF32(base, rows: rows, cols: cols, u: uBase, v: vBase, storage: storage)
      return
    }
    let blockRows = max(1, DenseKernels.blockElementCount / max(cols, 1))
    let scratch = UnsafeMutablePointer<Double>.allocate(capacity: blockRows * cols)
    defer { scratch.deallocate() }
    var row = 0
    while row < rows {
      let count = min(blockRows, rows - row)
      let elements = (row * cols)..<((row + count) * cols)
      let block = UnsafeMutableBufferPointer(start: scratch, count: elements.count)
      storage.decode(UnsafeRawBufferPointer(raw), elements, block)
      CanonicalReconstruction.addLowRank(
        into: scratch, rowRange: 0..<count, columnCount: cols, u: uBase + row * rank, v: vBase, rank: rank)
      storage.encode(UnsafeBufferPointer(block), raw, elements.lowerBound)
      row += count
    }
  }

  /// The rule for the commonest case (F32, one rank-one edit) in a single pass, without the
  /// Float64 block: `x = round_f32(Double(x) + Double(u_i)·Double(v_j))`. The product of two
  /// Float32 values is exact in Float64, so this is bit for bit the general path: one product,
  /// one addition, one rounding (`Float(_:)` for finite results, `storage.encode` for a row that
  /// holds an Inf or NaN, for its NaN payload rule). `raw` holds `rows × cols` F32 elements.
  ///
  /// The hot loop of checkout: monomorphic, and the two closures of `storage` are called only for
  /// rows with a non-finite sum.
  package static func addRankOneF32(
    _ raw: UnsafeMutableRawPointer, rows: Int, cols: Int, u: UnsafePointer<Float>, v: UnsafePointer<Float>,
    storage: Storage
  ) {
    // A row's sums go to a Float64 buffer first, so both loops are branch-free and vectorize.
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: cols)
    defer { sums.deallocate() }
    for i in 0..<rows {
      let ui = Double(u[i])
      let row = (raw + i &* cols &* 4).assumingMemoryBound(to: UInt32.self)
      var nonFinite: UInt64 = 0
      for j in 0..<cols {
        let y = Double(Float(bitPattern: UInt32(littleEndian: row[j]))) + ui * Double(v[j])
        sums[j] = y
        // 1 exactly when the exponent field is all ones (Inf or NaN), without a compare.
        nonFinite |= (((y.bitPattern >> 52) & 0x7FF) &+ 1) >> 11
      }
      if nonFinite == 0 {
        for j in 0..<cols { row[j] = Float(sums[j]).bitPattern.littleEndian }
      } else {
        storage.encode(
          UnsafeBufferPointer(start: sums, count: cols), UnsafeMutableRawBufferPointer(start: row, count: cols * 4), 0)
      }
    }
  }
}
