import Apply
import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

/// Factors recovered from a full model edited in half precision, refined against the rounding
/// intervals (Apply/RoundingRefinement.swift), and the Rice-coded residual that makes them exact.
@Suite struct RoundingRefinementTests {
  /// A rank-one edit the way an editor makes it: `fl32(W + fl32(u_i·v_j))`, rounded once to `dtype`.
  struct Edit {
    var rows: Int
    var cols: Int
    var dtype: DType
    var old: [UInt8]
    var new: [UInt8]
    var u: [Float]
    var v: [Float]

    /// - Parameter base: the weights to edit (`dtype` bytes); random N(0, 0.02²) when nil.
    init(rows: Int, cols: Int, dtype: DType, relativeNorm: Double, seed: UInt64, base: [UInt8]? = nil) {
      var rng = SplitMix64(seed: seed)
      let n = rows * cols
      let width = dtype.byteCount ?? 4
      var w = [Double](repeating: 0, count: n)
      for k in 0..<n { w[k] = Double(rng.nextGaussian() * 0.02) }
      var old = [UInt8](repeating: 0, count: n * width)
      w.withUnsafeBufferPointer { p in old.withUnsafeMutableBytes { FloatConversion.encode(p, dtype: dtype, into: $0) }
      }
      if let base { old = base }
      var wf = [Float](repeating: 0, count: n)
      old.withUnsafeBytes { raw in
        wf.withUnsafeMutableBufferPointer { FloatConversion.decode(raw, dtype: dtype, elements: 0..<n, into: $0) }
      }
      var u = (0..<rows).map { _ in rng.nextGaussian() }
      var v = (0..<cols).map { _ in rng.nextGaussian() }
      let wNorm = wf.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      let uNorm = u.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      let vNorm = v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
      let s = Float((relativeNorm * wNorm / (uNorm * vNorm)).squareRoot())
      u = u.map { $0 * s }
      v = v.map { $0 * s }
      var edited = [Double](repeating: 0, count: n)
      for i in 0..<rows {
        for j in 0..<cols {
          let product: Float = u[i] * v[j]
          let sum: Float = wf[i * cols + j] + product
          edited[i * cols + j] = Double(sum)
        }
      }
      var new = [UInt8](repeating: 0, count: n * width)
      edited.withUnsafeBufferPointer { p in
        new.withUnsafeMutableBytes { FloatConversion.encode(p, dtype: dtype, into: $0) }
      }
      (self.rows, self.cols, self.dtype, self.old, self.new, self.u, self.v) = (rows, cols, dtype, old, new, u, v)
    }

    /// The canonical rule on `old` with these factors.
    func reconstructed(u: [Float], v: [Float], rank: Int) -> [UInt8] {
      var bytes = old
      bytes.withUnsafeMutableBytes { raw in
        u.withUnsafeBufferPointer { up in
          v.withUnsafeBufferPointer { vp in
            CanonicalRule.apply(to: raw, storage: .init(dtype), rows: rows, cols: cols, u: up, v: vp, rank: rank)
          }
        }
      }
      return bytes
    }

    func mismatches(_ bytes: [UInt8]) -> Int {
      let width = dtype.byteCount ?? 4
      return (0..<(rows * cols)).filter { k in
        bytes[(k * width)..<(k * width + width)] != new[(k * width)..<(k * width + width)]
      }
      .count
    }

    /// The rank finder's factors of `new − old`, as `mvc commit` finds them.
    func recovered() throws -> LowRankFactors {
      let n = rows * cols
      var delta = [Float](repeating: 0, count: n)
      var a = [Double](repeating: 0, count: n)
      var b = [Double](repeating: 0, count: n)
      new.withUnsafeBytes { raw in
        a.withUnsafeMutableBufferPointer { FloatConversion.decode(raw, dtype: dtype, elements: 0..<n, into: $0) }
      }
      old.withUnsafeBytes { raw in
        b.withUnsafeMutableBufferPointer { FloatConversion.decode(raw, dtype: dtype, elements: 0..<n, into: $0) }
      }
      for k in 0..<n { delta[k] = Float(a[k] - b[k]) }
      // The rounding noise of the dtype: ulp / √12 at the typical magnitude.
      let ulp = Double(Float(0.02).ulp) * (dtype == .bf16 ? 65536 : dtype == .f16 ? 8192 : 1)
      let found = try delta.withUnsafeBufferPointer { p -> LowRankFactors? in
        guard let base = p.baseAddress else { return nil }
        return try Factorization.lowRank(
          of: base, rows: rows, cols: cols, noiseRMS: ulp / 12.0.squareRoot(), maxRank: 8)
      }
      return try #require(found)
    }

    func refined(_ factors: LowRankFactors, maxSweeps: Int = 6, workers: Int = 1, activeSet: Bool = true) -> (
      LowRankFactors, RefinementReport
    ) {
      new.withUnsafeBytes { newRaw in
        old.withUnsafeBytes { oldRaw in
          Factorization.refineAgainstRounding(
            factors, rows: rows, cols: cols, maxSweeps: maxSweeps, workers: workers, activeSet: activeSet
          ) {
            row, columns, lo, hi in
            FloatConversion.roundingIntervals(
              new: newRaw, old: oldRaw, dtype: dtype,
              elements: (row * cols + columns.lowerBound)..<(row * cols + columns.upperBound), lo: lo, hi: hi)
          }
        }
      }
    }
  }

  @Test(arguments: [DType.bf16, .f16, .f32])
  func refinedFactorsLeaveFewMismatchesAndTheResidualIsExact(dtype: DType) throws {
    let edit = Edit(rows: 160, cols: 640, dtype: dtype, relativeNorm: 0.01, seed: 41)
    let n = edit.rows * edit.cols
    // The floor: the canonical rule on the editor's own factors.
    let floor = edit.mismatches(edit.reconstructed(u: edit.u, v: edit.v, rank: 1))
    let found = try edit.recovered()
    let before = edit.mismatches(edit.reconstructed(u: found.u, v: found.v, rank: found.rank))
    let (refined, report) = edit.refined(found)
    #expect(refined.rank == 1)
    let reconstructed = edit.reconstructed(u: refined.u, v: refined.v, rank: refined.rank)
    let after = edit.mismatches(reconstructed)
    print("\(dtype): mismatches floor \(floor), rank finder \(before), refined \(after); sweeps \(report.violations)")
    #expect(after < before / 3)
    if dtype == .f32 {
      // One rounding against the editor's two: the floor is a percent or so; refined factors stay near it.
      #expect(after <= floor + floor / 2)
    } else {
      #expect(after <= n / 200)
    }
    // Exactness: the residual (Rice allowed) turns the rule's result into the committed bytes.
    let encoded = try #require(
      try edit.new.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: dtype, allowRice: true)
        }
      })
    #expect(encoded.nonzeroCount == after)
    var out = reconstructed
    try out.withUnsafeMutableBytes { try ResidualCodec.apply(encoded.bytes, to: $0, dtype: dtype, elementCount: n) }
    #expect(out == edit.new)
  }

  /// The least-squares start alone (`maxSweeps: 0`, what `mvc commit` runs without
  /// `--compact`): most of the rank finder's mismatches gone, the sweeps' few more on top, the
  /// same factors on any number of workers; a rank-two start is counted (in the last pass's
  /// column half) so that the cheaper candidate is kept, and the count is close to the
  /// mismatches of the factors returned (it decides whether the higher rank is refined at all).
  @Test(arguments: [DType.bf16, .f16, .f32])
  func leastSquaresStartAloneRemovesMostMismatches(dtype: DType) throws {
    let edit = Edit(rows: 160, cols: 640, dtype: dtype, relativeNorm: 0.01, seed: 41)
    let found = try edit.recovered()
    func mismatches(_ f: LowRankFactors) -> Int { edit.mismatches(edit.reconstructed(u: f.u, v: f.v, rank: f.rank)) }
    let before = mismatches(found)
    let (start, report) = edit.refined(found, maxSweeps: 0)
    let (swept, _) = edit.refined(found)
    print("\(dtype): mismatches rank finder \(before), start alone \(mismatches(start)), swept \(mismatches(swept))")
    #expect(start.rank == 1 && report.violations.isEmpty)
    #expect(mismatches(start) < before / 3)
    #expect(mismatches(swept) <= mismatches(start))
    let (twoWorkers, _) = edit.refined(found, maxSweeps: 0, workers: 2)
    #expect(twoWorkers.u.map(\.bitPattern) == start.u.map(\.bitPattern))
    #expect(twoWorkers.v.map(\.bitPattern) == start.v.map(\.bitPattern))

    // A spurious second component: both candidates counted, the cheaper kept.
    var wider = found
    wider.rank = 2
    wider.u = (0..<edit.rows).flatMap { [found.u[$0], found.u[$0] * 1e-3] }
    wider.v = (0..<edit.cols).flatMap { [found.v[$0], Float(($0 % 7) - 3) * 1e-2] }
    wider.singularValues = found.singularValues + [found.singularValues[0] * 1e-3]
    let (kept, keptReport) = edit.refined(wider, maxSweeps: 0, workers: 2)
    let count = try #require(keptReport.violations.first)
    #expect(keptReport.violations.count == 1 && kept.rank == 1)
    #expect(abs(count - mismatches(kept)) <= mismatches(kept) / 20 + 2)
  }

  /// `mvc commit` measures the difference in one pass without keeping it, and the rank finder
  /// reads its rows a block at a time from the two tensors' bytes: the measures of the pass that
  /// keeps the Float32 difference, its norm, and the very factors of that difference held whole.
  @Test(arguments: [DType.bf16, .f16, .f32])
  func differenceRowsGiveTheFactorsOfTheWholeDifference(dtype: DType) throws {
    let edit = Edit(rows: 96, cols: 320, dtype: dtype, relativeNorm: 0.01, seed: 23)
    let n = edit.rows * edit.cols
    var delta = [Float](repeating: 0, count: n)
    try edit.new.withUnsafeBytes { new in
      try edit.old.withUnsafeBytes { old in
        let kept = try delta.withUnsafeMutableBufferPointer {
          try TensorMath.difference(new: new, old: old, dtype: dtype, count: n, into: $0.baseAddress)
        }
        let measured = try TensorMath.difference(new: new, old: old, dtype: dtype, count: n, into: nil)
        #expect(measured == kept)
        let wholeFactors = try delta.withUnsafeBufferPointer { p -> LowRankFactors? in
          let base = try #require(p.baseAddress)
          #expect(measured.deltaFrobenius == DenseNorms.frobenius(base, count: n))
          return try Factorization.lowRank(
            of: base, rows: edit.rows, cols: edit.cols, noiseRMS: measured.noiseRMS, maxRank: 8)
        }
        let rowFactors = try TensorMath.withDifferenceRows(new: new, old: old, dtype: dtype, cols: edit.cols) {
          try Factorization.lowRank(
            rows: edit.rows, cols: edit.cols, frobenius: measured.deltaFrobenius, noiseRMS: measured.noiseRMS,
            maxRank: 8, deltaRows: $0)
        }
        #expect(try #require(wholeFactors).rank >= 1)
        #expect(rowFactors == wholeFactors)
      }
    }
  }

  /// The difference rows decode every 16-bit pattern as FloatConversion does (fp16 through its
  /// own branch-free widening): each pattern against 0 and against 1 gives the Float32 difference
  /// of the decoded values, widened, and 0 where either is not finite.
  @Test(arguments: [DType.bf16, .f16])
  func differenceRowsDecodeEveryPattern(dtype: DType) {
    let n = Int(UInt16.max) + 1
    let new = (0..<n).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }
    let one: UInt16 = dtype == .bf16 ? 0x3F80 : 0x3C00
    for parent: UInt16 in [0, one] {
      let old = (0..<n).flatMap { _ in [UInt8(parent & 0xFF), UInt8(parent >> 8)] }
      var rows = [Double](repeating: -1, count: n)
      var expected = [Double](repeating: 0, count: n)
      new.withUnsafeBytes { newRaw in
        old.withUnsafeBytes { oldRaw in
          TensorMath.withDifferenceRows(new: newRaw, old: oldRaw, dtype: dtype, cols: n) { fill in
            rows.withUnsafeMutableBufferPointer { if let base = $0.baseAddress { fill(0, 1, base) } }
          }
          var (xs, ys) = ([Double](repeating: 0, count: n), [Double](repeating: 0, count: n))
          xs.withUnsafeMutableBufferPointer { FloatConversion.decode(newRaw, dtype: dtype, elements: 0..<n, into: $0) }
          ys.withUnsafeMutableBufferPointer { FloatConversion.decode(oldRaw, dtype: dtype, elements: 0..<n, into: $0) }
          for k in 0..<n {
            let (x, y) = (xs[k], ys[k])
            let d = Float(x - y)
            expected[k] = x.isFinite && y.isFinite && d.isFinite ? Double(d) : 0
          }
        }
      }
      #expect(rows.map(\.bitPattern) == expected.map(\.bitPattern), "\(dtype) against \(parent)")
    }
  }

  /// Later sweeps visit only the elements near an interval edge (the active set): on a bf16
  /// rank-one edit they visit a small part of the tensor, and the factors and violation counts
  /// are those of sweeps over every element, bit for bit, on one thread and on two; the residual
  /// stays below 1 element in 1,000.
  @Test func activeSetSweepsGiveTheFactorsOfFullSweeps() throws {
    let edit = Edit(rows: 384, cols: 1536, dtype: .bf16, relativeNorm: 0.01, seed: 19)
    let n = edit.rows * edit.cols
    let found = try edit.recovered()
    let (full, fullReport) = edit.refined(found, activeSet: false)
    #expect(fullReport.visited.allSatisfy { $0 == n })
    for workers in [1, 2] {
      let (active, activeReport) = edit.refined(found, workers: workers)
      // The set was built, and its sweeps visited fewer than a tenth of the elements.
      let last = try #require(activeReport.visited.last)
      #expect(last < n / 10)
      #expect(active.u.map(\.bitPattern) == full.u.map(\.bitPattern))
      #expect(active.v.map(\.bitPattern) == full.v.map(\.bitPattern))
      #expect(activeReport.violations == fullReport.violations)
    }
    let after = edit.mismatches(edit.reconstructed(u: full.u, v: full.v, rank: full.rank))
    print(
      "active set: visited \(edit.refined(found).1.visited), violations \(fullReport.violations), residual \(after)")
    #expect(after < n / 1000)
  }

  /// The half-sweeps split rows and columns between threads: the factors and the violation
  /// counts are those of one thread, bit for bit, on 2 or 3 threads (an odd number
  /// of rows and columns, so the ranges differ in size), for a rank-one and a rank-two start.
  @Test(arguments: [DType.bf16, .f32])
  func refinementOnSeveralThreadsGivesTheFactorsOfOne(dtype: DType) throws {
    let edit = Edit(rows: 131, cols: 397, dtype: dtype, relativeNorm: 0.01, seed: 77)
    let found = try edit.recovered()
    var candidates = [found]
    if found.rank == 1 {
      // A rank-two start too (the rank finder's usual answer for bf16): the r − 1 comparison.
      var wider = found
      wider.rank = 2
      wider.u = (0..<edit.rows).flatMap { [found.u[$0], found.u[$0] * 1e-3] }
      wider.v = (0..<edit.cols).flatMap { [found.v[$0], Float(($0 % 7) - 3) * 1e-2] }
      wider.singularValues = found.singularValues + [found.singularValues[0] * 1e-3]
      candidates.append(wider)
    }
    for start in candidates {
      let (one, oneReport) = edit.refined(start, workers: 1)
      for workers in [2, 3] {
        let (many, manyReport) = edit.refined(start, workers: workers)
        #expect(many.rank == one.rank)
        #expect(many.u.map(\.bitPattern) == one.u.map(\.bitPattern))
        #expect(many.v.map(\.bitPattern) == one.v.map(\.bitPattern))
        #expect(manyReport == oneReport)
      }
      #expect(edit.mismatches(edit.reconstructed(u: one.u, v: one.v, rank: one.rank)) <= oneReport.violations[0])
    }
  }

  /// `mvc commit` of a bf16 model edited in float32: rank 1, a residual of a few elements,
  /// Rice-coded, so the commit records format 2 (the base stays 1); checkout is exact both ways,
  /// and so it is for the same edit committed with `--compact` (a residual no larger).
  @Test func fullModelCommitOfABF16EditIsSmallExactAndFormatTwo() throws {
    try withTemporaryDirectory { dir in
      let edit = Edit(rows: 128, cols: 512, dtype: .bf16, relativeNorm: 0.01, seed: 5)
      let model = dir.appendingPathComponent("model.safetensors")
      let name = "layers.0.mlp.down_proj.weight"
      try writeSafetensors([FixtureTensor(name: name, dtype: "BF16", shape: [128, 512], bytes: edit.old)], to: model)
      let before = Array(try Data(contentsOf: model))
      let (repository, base) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      try writeSafetensors([FixtureTensor(name: name, dtype: "BF16", shape: [128, 512], bytes: edit.new)], to: model)
      let after = Array(try Data(contentsOf: model))
      let result = try repository.commit(CommitOptions(message: "bf16 edit"))
      let change = try #require(result.record.changes.first)
      #expect(change.storage == "low_rank" && change.rank == 1)
      #expect((change.residualNonzeroCount ?? 0) <= 128 * 512 / 100)
      // --compact: the sweeps after the least-squares start, no larger a residual.
      try repository.reset(to: base, mode: .soft, revision: "base")
      let compact = try repository.commit(CommitOptions(message: "bf16 edit, compact", compact: true))
      let compactChange = try #require(compact.record.changes.first)
      #expect(compactChange.rank == 1 && (compactChange.residualNonzeroCount ?? 0) <= 128 * 512 / 200)
      #expect((compactChange.residualNonzeroCount ?? 0) <= (change.residualNonzeroCount ?? 0))
      #expect(Array(try Data(contentsOf: model)) == after)
      try repository.checkout(base, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == before)
      try repository.checkout(compact.commit, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == after)
      let contents = try repository.contents(of: result.commit)
      let tree = try #require(contents.tensorTrees[name])
      let state = try repository.storedState(tree, tensor: name).state
      // The base's full states use chunk encoding 2 (format 2) and the edit's commit keeps them,
      // so both commits are format 2 whichever encoding the residual took; a Rice residual is
      // recorded on the state itself.
      #expect(state.residualFormat == nil || state.residualFormat == 2)
      #expect(contents.formatVersion == 2)
      #expect(try repository.contents(of: base).formatVersion == 2)
      try repository.checkout(base, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == before)
      try repository.checkout(result.commit, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == after)
    }
  }
}

/// The conditioned residual (kind 5): F32 edits made the editor's way, committed with recovered
/// and refined factors, their residual coded against each element's rounding context.
@Suite struct ConditionedResidualTests {
  typealias Edit = RoundingRefinementTests.Edit

  /// The residual of `edit` with the factors `mvc commit` finds, encoded with and without the
  /// rounding contexts, and the reconstruction it applies to.
  static func encoded(_ edit: Edit) throws -> (
    conditioned: EncodedResidual, rice: EncodedResidual, reconstructed: [UInt8], contexts: [UInt8]
  ) {
    let (factors, _) = edit.refined(try edit.recovered())
    let reconstructed = edit.reconstructed(u: factors.u, v: factors.v, rank: factors.rank)
    let contexts = RoundingContexts.compute(
      parent: edit.old, rows: edit.rows, cols: edit.cols, u: factors.u, v: factors.v, rank: factors.rank, workers: 2)
    let (conditioned, rice) = try edit.new.withUnsafeBytes { c in
      try reconstructed.withUnsafeBytes { r in
        (
          try RoundingContexts.with(contexts) {
            try #require(
              try ResidualCodec.encode(committed: c, reconstructed: r, dtype: .f32, allowRice: true, contexts: $0))
          },
          try #require(try ResidualCodec.encode(committed: c, reconstructed: r, dtype: .f32, allowRice: true))
        )
      }
    }
    return (conditioned, rice, reconstructed, contexts)
  }

  static func applied(_ residual: [UInt8], to reconstructed: [UInt8], contexts: [UInt8]) throws -> [UInt8] {
    var out = reconstructed
    try out.withUnsafeMutableBytes { raw in
      try RoundingContexts.with(contexts) {
        try ResidualCodec.apply(residual, to: raw, dtype: .f32, elementCount: contexts.count, contexts: $0)
      }
    }
    return out
  }

  /// Exact at several shapes and relative norms; at 0.01 and 0.1 the conditioned kind is chosen
  /// and is at most 80% of the Rice residual's bytes (these tensors are small: the bucket table
  /// and the few flips per bucket weigh more than on a real layer).
  @Test(arguments: [(160, 640, 0.01, 4 as UInt64), (128, 512, 0.1, 5), (64, 200, 0.001, 6)])
  func roundTripsExactlyAndBeatsRice(rows: Int, cols: Int, relativeNorm: Double, seed: UInt64) throws {
    let edit = Edit(rows: rows, cols: cols, dtype: .f32, relativeNorm: relativeNorm, seed: seed)
    let (conditioned, rice, reconstructed, contexts) = try Self.encoded(edit)
    let n = rows * cols
    print(
      "\(rows)×\(cols) rel \(relativeNorm): \(conditioned.nonzeroCount) off, conditioned \(conditioned.bytes.count) B "
        + "(\(Double(conditioned.bytes.count * 8) / Double(n)) bit/elt), rice \(rice.bytes.count) B")
    #expect(conditioned.nonzeroCount == rice.nonzeroCount)
    #expect(try Self.applied(conditioned.bytes, to: reconstructed, contexts: contexts) == edit.new)
    if relativeNorm >= 0.01 {
      #expect(conditioned.isConditioned)
      #expect(conditioned.bytes.count * 5 <= rice.bytes.count * 4)
    }
    #expect(conditioned.bytes.count <= rice.bytes.count)
  }

  /// Rank 2 (the contexts sum the products as the rule does, through `addLowRank`): the
  /// editor's factors plus a small second component, exact after the round trip.
  @Test func rankTwoRoundTripsExactly() throws {
    let edit = Edit(rows: 96, cols: 320, dtype: .f32, relativeNorm: 0.01, seed: 8)
    var rng = SplitMix64(seed: 9)
    var u = [Float](repeating: 0, count: edit.rows * 2)
    var v = [Float](repeating: 0, count: edit.cols * 2)
    // Second products ~1e-12: below the weights' ulp, above the first products' (the sum is exercised).
    for i in 0..<edit.rows { (u[2 * i], u[2 * i + 1]) = (edit.u[i], rng.nextGaussian() * 1e-6) }
    for j in 0..<edit.cols { (v[2 * j], v[2 * j + 1]) = (edit.v[j], rng.nextGaussian() * 1e-6) }
    let reconstructed = edit.reconstructed(u: u, v: v, rank: 2)
    let contexts = RoundingContexts.compute(
      parent: edit.old, rows: edit.rows, cols: edit.cols, u: u, v: v, rank: 2, workers: 2)
    let encoded = try edit.new.withUnsafeBytes { c in
      try reconstructed.withUnsafeBytes { r in
        try RoundingContexts.with(contexts) {
          try #require(
            try ResidualCodec.encode(committed: c, reconstructed: r, dtype: .f32, allowRice: true, contexts: $0))
        }
      }
    }
    let conditioned = encoded.isConditioned
    #expect(conditioned, "\(encoded.nonzeroCount) differences")
    #expect(try Self.applied(encoded.bytes, to: reconstructed, contexts: contexts) == edit.new)
  }

  /// A corrupt or truncated conditioned blob throws a `DeltaStoreError` and leaves the buffer as
  /// it was; decoding without the contexts, or with another tensor's, is refused.
  @Test func corruptConditionedResidualsThrowAndLeaveBufferUnchanged() throws {
    let edit = Edit(rows: 160, cols: 640, dtype: .f32, relativeNorm: 0.01, seed: 4)
    let (encoded, _, reconstructed, contexts) = try Self.encoded(edit)
    #expect(encoded.isConditioned)
    #expect(throws: DeltaStoreError.self) {
      var out = reconstructed
      try out.withUnsafeMutableBytes {
        try ResidualCodec.apply(encoded.bytes, to: $0, dtype: .f32, elementCount: contexts.count)
      }
    }
    #expect(throws: DeltaStoreError.self) {
      var out = reconstructed
      try out.withUnsafeMutableBytes {
        try ResidualCodec.apply(
          encoded.bytes, to: UnsafeMutableRawBufferPointer(rebasing: $0[0..<(contexts.count * 2)]), dtype: .bf16,
          elementCount: contexts.count, contexts: nil)
      }
    }
    var rng = SplitMix64(seed: 77)
    var failures = 0
    for trial in 0..<1500 {
      var blob = encoded.bytes
      let i = Int(rng.next() % UInt64(blob.count))
      switch trial % 3 {
      case 0: blob[i] ^= UInt8(1 << (rng.next() % 8))
      case 1: blob.removeSubrange(i...)
      default: blob[i] = UInt8(truncatingIfNeeded: rng.next())
      }
      do {
        let out = try Self.applied(blob, to: reconstructed, contexts: contexts)
        // A change the codec cannot see (a flipped flag in the range coder) gives other bytes:
        // the state's hash check refuses those at checkout.
        #expect(out.count == reconstructed.count)
      } catch {
        #expect(error is DeltaStoreError)
        failures += 1
      }
    }
    #expect(failures > 1000)
  }

  /// `mvc commit` of an F32 model edited in float32: rank 1, a conditioned residual, so the
  /// commit records format 3 and the state `residual_format: 3`; two edits in a row (each
  /// decoded against its parent) check out exactly, and so does the base.
  @Test func fullModelCommitsOfF32EditsAreConditionedExactAndFormatThree() throws {
    try withTemporaryDirectory { dir in
      let first = Edit(rows: 128, cols: 384, dtype: .f32, relativeNorm: 0.01, seed: 21)
      let second = Edit(rows: 128, cols: 384, dtype: .f32, relativeNorm: 0.01, seed: 22, base: first.new)
      let model = dir.appendingPathComponent("model.safetensors")
      let name = "layers.0.mlp.down_proj.weight"
      func write(_ bytes: [UInt8]) throws {
        try writeSafetensors([FixtureTensor(name: name, dtype: "F32", shape: [128, 384], bytes: bytes)], to: model)
      }
      try write(first.old)
      var files = [Array(try Data(contentsOf: model))]
      let (repository, base) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      var commits: [ObjectID] = []
      for edit in [first, second] {
        try write(edit.new)
        files.append(Array(try Data(contentsOf: model)))
        let result = try repository.commit(CommitOptions(message: "f32 edit"))
        let change = try #require(result.record.changes.first)
        #expect(change.storage == "low_rank" && change.rank == 1)
        let contents = try repository.contents(of: result.commit)
        let state = try repository.storedState(try #require(contents.tensorTrees[name]), tensor: name).state
        #expect(state.residualFormat == 3)
        #expect(contents.formatVersion == 3)
        commits.append(result.commit)
      }
      try repository.checkout(base, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == files[0])
      try repository.checkout(commits[1], branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == files[2])
      try repository.checkout(commits[0], branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == files[1])
    }
  }
}
