// Weight-only scores for `mvc score` (docs/editing-science.md §4.5 items 4–5): edit retention from
// stored (k, v) pairs and preservation drift on preservation keys. Weights are borrowed Float32
// row-major buffers (as mapped from safetensors); keys and values are Float64 rows. Products are
// accumulated in Float64, the weights widened one block of rows at a time.

extension EditSolvers {
  /// K·Wᵀ in Float64: row i is W·k_i, for keys given as n×d_in rows.
  ///
  /// - Parameters:
  ///   - keys: n×d_in rows.
  ///   - weights: W row-major, d_out×d_in, or d_in×d_out when `weightIsTransposed`.
  ///   - dOut: d_out.
  ///   - dIn: d_in.
  ///   - weightIsTransposed: whether `weights` stores Wᵀ (GPT-2 `Conv1D`).
  /// - Returns: n×d_out rows. Wraps `cblas_dgemm`.
  /// - Throws: ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  package static func project(
    keys: [Double], through weights: UnsafeBufferPointer<Float>, dOut: Int, dIn: Int,
    weightIsTransposed: Bool
  ) throws -> [Double] {
    let n = try checkScoreInputs(
      weights: [("weights", weights)], dOut: dOut, dIn: dIn, transposed: weightIsTransposed,
      keys: keys, keysName: "keys")
    return DenseKernels.project(
      keys: keys, count: n, weights: .float32(weights), dOut: dOut, dIn: dIn,
      transposed: weightIsTransposed)
  }

  /// Retention of each edit from precomputed products: 1 − ‖W_REV·k_i − v_i‖ / ‖v_i − W₀·k_i‖.
  ///
  /// 1 means the revision still maps k_i to v_i exactly; 0 means it is back at W₀'s output (or
  /// as far from v_i as W₀ was); negative means further. An edit whose target equals W₀'s output
  /// (a zero denominator) gets `.nan`.
  /// - Parameters:
  ///   - revisedOutputs: W_REV·k_i as n×d_out rows.
  ///   - originalOutputs: W₀·k_i as n×d_out rows.
  ///   - values: the targets v_i as n×d_out rows.
  ///   - dOut: d_out.
  /// - Returns: n retention values.
  /// - Throws: ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  package static func retention(
    revisedOutputs: [Double], originalOutputs: [Double], values: [Double], dOut: Int
  ) throws -> [Double] {
    try requireDimension("d_out", dOut)
    guard !values.isEmpty, values.count % dOut == 0 else {
      throw ApplyError.shapeMismatch(
        input: "values", expected: "[n, \(dOut)] with n ≥ 1", actual: "\(values.count) elements")
    }
    let n = values.count / dOut
    for (name, array) in [
      ("revised outputs", revisedOutputs), ("original outputs", originalOutputs),
    ]
    where array.count != values.count {
      throw ApplyError.shapeMismatch(
        input: name, expected: "[\(n), \(dOut)]", actual: "\(array.count) elements")
    }
    try DenseKernels.requireFinite(values, input: "values", rowLength: dOut)
    try DenseKernels.requireFinite(revisedOutputs, input: "revised outputs", rowLength: dOut)
    try DenseKernels.requireFinite(originalOutputs, input: "original outputs", rowLength: dOut)
    return (0..<n).map { i in
      var missSquared = 0.0
      var askedSquared = 0.0
      for j in (i * dOut)..<((i + 1) * dOut) {
        let miss = revisedOutputs[j] - values[j]
        let asked = values[j] - originalOutputs[j]
        missSquared += miss * miss
        askedSquared += asked * asked
      }
      return askedSquared > 0 ? 1 - (missSquared / askedSquared).squareRoot() : .nan
    }
  }

  /// Retention of each edit, 1 − ‖W_REV·k_i − v_i‖ / ‖v_i − W₀·k_i‖, from the two weight matrices.
  ///
  /// Exact for single-layer ROME/EMMET edits (the key of layer l does not depend on layer l's
  /// down-projection); approximate for multi-layer MEMIT.
  /// - Parameters:
  ///   - revised: W_REV, same layout as `original`.
  ///   - original: W₀, row-major d_out×d_in (d_in×d_out when `weightIsTransposed`).
  ///   - dOut: d_out.
  ///   - dIn: d_in.
  ///   - weightIsTransposed: whether both buffers store Wᵀ.
  ///   - keys: k_i as n×d_in rows.
  ///   - values: v_i as n×d_out rows.
  /// - Returns: n retention values (see ``retention(revisedOutputs:originalOutputs:values:dOut:)``).
  /// - Throws: ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  package static func retention(
    revised: UnsafeBufferPointer<Float>, original: UnsafeBufferPointer<Float>,
    dOut: Int, dIn: Int, weightIsTransposed: Bool, keys: [Double], values: [Double]
  ) throws -> [Double] {
    let n = try checkScoreInputs(
      weights: [("revised weights", revised), ("original weights", original)], dOut: dOut,
      dIn: dIn, transposed: weightIsTransposed, keys: keys, keysName: "keys")
    guard values.count == n * dOut else {
      throw ApplyError.shapeMismatch(
        input: "values", expected: "[\(n), \(dOut)]", actual: "\(values.count) elements")
    }
    let revisedOutputs = DenseKernels.project(
      keys: keys, count: n, weights: .float32(revised), dOut: dOut, dIn: dIn,
      transposed: weightIsTransposed)
    let originalOutputs = DenseKernels.project(
      keys: keys, count: n, weights: .float32(original), dOut: dOut, dIn: dIn,
      transposed: weightIsTransposed)
    return try retention(
      revisedOutputs: revisedOutputs, originalOutputs: originalOutputs, values: values,
      dOut: dOut)
  }

  /// Preservation error ‖(W_REV − W₀)K₀‖_F / ‖W₀K₀‖_F on preservation keys K₀.
  ///
  /// W_REV − W₀ is formed per block of rows in Float64 (exact for Float32 inputs), so a tiny
  /// drift is not lost to cancellation between two large products. Returns 0 when W₀K₀ = 0 and
  /// the drift is 0, `.infinity` when only W₀K₀ is 0.
  /// - Parameters:
  ///   - revised: W_REV, same layout as `original`.
  ///   - original: W₀, row-major d_out×d_in (d_in×d_out when `weightIsTransposed`).
  ///   - dOut: d_out.
  ///   - dIn: d_in.
  ///   - weightIsTransposed: whether both buffers store Wᵀ.
  ///   - keys: K₀ as m×d_in rows.
  /// - Returns: the relative drift. Wraps `cblas_dgemm`.
  /// - Throws: ``ApplyError/shapeMismatch(input:expected:actual:)``,
  ///   ``ApplyError/invalidDimension(name:value:)``,
  ///   ``ApplyError/nonFiniteInput(input:index:rowLength:)``.
  package static func preservationError(
    revised: UnsafeBufferPointer<Float>, original: UnsafeBufferPointer<Float>,
    dOut: Int, dIn: Int, weightIsTransposed: Bool, keys: [Double]
  ) throws -> Double {
    let m = try checkScoreInputs(
      weights: [("revised weights", revised), ("original weights", original)], dOut: dOut,
      dIn: dIn, transposed: weightIsTransposed, keys: keys, keysName: "preservation keys")
    let storageRows = weightIsTransposed ? dIn : dOut
    let storageColumns = weightIsTransposed ? dOut : dIn
    var drift = [Double](repeating: 0, count: m * dOut)
    var baseline = [Double](repeating: 0, count: m * dOut)
    let rowsPerBlock = max(
      1, min(storageRows, DenseKernels.blockElementCount / max(storageColumns, 1)))
    var difference = [Double](repeating: 0, count: rowsPerBlock * storageColumns)
    DenseKernels.forEachWidenedBlock(
      original, storageRows: storageRows, storageColumns: storageColumns
    ) { first, rowCount, block in
      let offset = first * storageColumns
      for index in 0..<(rowCount * storageColumns) {
        difference[index] = Double(revised[offset + index]) - block[index]
      }
      DenseKernels.accumulateBlock(
        keys: keys, n: m, dOut: dOut, dIn: dIn, transposed: weightIsTransposed, firstRow: first,
        rowCount: rowCount, block: block, into: &baseline, scale: 1)
      difference.withUnsafeBufferPointer { d in
        guard let base = d.baseAddress else { return }
        DenseKernels.accumulateBlock(
          keys: keys, n: m, dOut: dOut, dIn: dIn, transposed: weightIsTransposed,
          firstRow: first, rowCount: rowCount, block: base, into: &drift, scale: 1)
      }
    }
    let driftNorm = DenseKernels.frobeniusNorm(drift)
    let baselineNorm = DenseKernels.frobeniusNorm(baseline)
    if baselineNorm == 0 { return driftNorm == 0 ? 0 : .infinity }
    return driftNorm / baselineNorm
  }

  /// Checks dimensions, weight element counts, key shape and finiteness; returns the key count.
  static func checkScoreInputs(
    weights: [(String, UnsafeBufferPointer<Float>)], dOut: Int, dIn: Int, transposed: Bool,
    keys: [Double], keysName: String
  ) throws -> Int {
    try requireDimension("d_out", dOut)
    try requireDimension("d_in", dIn)
    let (count, overflow) = dOut.multipliedReportingOverflow(by: dIn)
    guard !overflow else { throw ApplyError.invalidDimension(name: "d_out×d_in", value: .max) }
    let shape = transposed ? "[\(dIn), \(dOut)]" : "[\(dOut), \(dIn)]"
    for (name, buffer) in weights {
      guard buffer.count == count else {
        throw ApplyError.shapeMismatch(
          input: name, expected: shape, actual: "\(buffer.count) elements")
      }
      try DenseKernels.requireFinite(buffer, input: name, rowLength: transposed ? dOut : dIn)
    }
    guard !keys.isEmpty, keys.count % dIn == 0 else {
      throw ApplyError.shapeMismatch(
        input: keysName, expected: "[n, \(dIn)] with n ≥ 1", actual: "\(keys.count) elements")
    }
    try requireDimension("n", keys.count / dIn)
    try DenseKernels.requireFinite(keys, input: keysName, rowLength: dIn)
    return keys.count / dIn
  }
}
