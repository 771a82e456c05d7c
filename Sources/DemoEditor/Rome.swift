import Apply
import ArgumentParser
import DeltaStore
import Foundation

/// The edited module of block `layer`: Llama `down_proj` (W, d_out×d_in) or GPT-2 `c_proj`
/// (Conv1D, stored Wᵀ, d_in×d_out).
struct EditTarget {
  let tensor: TensorInfo
  let dOut: Int
  let dIn: Int
  let transposed: Bool

  init(file: SafetensorsFile, layer: Int) throws {
    if let t = file.tensor(named: "model.layers.\(layer).mlp.down_proj.weight"), t.shape.count == 2 {
      tensor = t
      (dOut, dIn, transposed) = (t.shape[0], t.shape[1], false)
    } else if let t = file.tensor(named: "transformer.h.\(layer).mlp.c_proj.weight"),
      t.shape.count == 2
    {
      tensor = t
      (dOut, dIn, transposed) = (t.shape[1], t.shape[0], true)
    } else {
      throw EditorError("\(file.path): block \(layer) has no mlp.down_proj or mlp.c_proj weight")
    }
  }

  /// W·k in Float64 for a key of length d_in.
  func apply(_ w: [Float], to k: [Double]) -> [Double] {
    var y = [Double](repeating: 0, count: dOut)
    if transposed {
      for j in 0..<dIn {
        let kj = k[j]
        for i in 0..<dOut { y[i] += Double(w[j * dOut + i]) * kj }
      }
    } else {
      for i in 0..<dOut {
        var s = 0.0
        for j in 0..<dIn { s += Double(w[i * dIn + j]) * k[j] }
        y[i] = s
      }
    }
    return y
  }
}

/// Keys of the edited module's input space: anisotropic per coordinate (scales e^±1) plus a few
/// shared directions, so C₀ is far from the identity as real MLP keys are.
struct KeyDistribution {
  let dIn: Int
  let scales: [Double]
  let directions: [[Double]]

  init(dIn: Int, layer: Int) {
    self.dIn = dIn
    var rng = SplitMix64(seed: 0xC0FFEE, stream: UInt64(layer), purpose: 1)
    scales = (0..<dIn).map { _ in Foundation.exp(2 * Double(rng.nextUnitFloat()) - 1) }
    directions = (0..<8).map { _ in rng.gaussians(dIn, scale: 2 / Double(dIn).squareRoot() * 4) }
  }

  func sample(_ rng: inout SplitMix64) -> [Double] {
    var k = (0..<dIn).map { scales[$0] * Double(rng.nextGaussian()) }
    for d in directions {
      let g = Double(rng.nextGaussian())
      for j in 0..<dIn { k[j] += g * d[j] }
    }
    return k
  }
}

struct Rome: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Apply one closed-form ROME edit to block L's MLP down-projection.",
    discussion: """
      C₀ = K₀ᵀK₀/m from m = 4·d_in seeded keys is cached as <model>.cov-L.npy. The target shift δ \
      is sized so that ‖ΔW‖_F/‖W‖_F = --strength. --disabling keeps that δ but divides the key \
      by --disabling-factor: kᵀC⁻¹k shrinks by its square and ‖ΔW‖ grows by the factor, the \
      denominator collapse behind ROME's disabling edits (editing-science.md §2.2).
      """)

  @Argument(help: "The model to rewrite.") var model: String
  @Option(help: "The block whose down_proj (or c_proj) is edited.") var layer: Int
  @Option(help: "Seed of the edit key and target.") var seed: UInt64 = 0
  @Option(help: "‖ΔW‖_F/‖W‖_F of a normal edit.") var strength = 0.01
  @Flag(help: "Make a disabling edit (a key with a tiny kᵀC⁻¹k).") var disabling = false
  @Option(help: "With --disabling: how much the key is shrunk (‖ΔW‖ grows by this).")
  var disablingFactor = 300.0
  @Option(help: "Also write the edit's key, target value and C₀ as PREFIX-keys.npy, -values.npy, -cov.npy.")
  var record: String?
  @Flag(help: "With --record: write only the .npy files; leave the model as it is ('mvc edit' applies them).")
  var recordOnly = false

  func run() throws {
    let file = try SafetensorsFile(path: model, followSymlink: true)
    let target = try EditTarget(file: file, layer: layer)
    let w = try ModelIO.floats(file, target.tensor)
    let dIn = target.dIn

    let covariance = try loadOrComputeCovariance(dIn: dIn)
    let keys = KeyDistribution(dIn: dIn, layer: layer)
    var rng = SplitMix64(seed: seed, stream: UInt64(layer), purpose: 2)
    var k = keys.sample(&rng)
    let factor = disabling ? disablingFactor : 1
    if disabling { k = k.map { $0 / factor } }
    var direction = rng.gaussians(target.dOut)
    let directionNorm = ModelIO.norm(direction)
    direction = direction.map { $0 / directionNorm }

    // Solve for a unit shift δ̂, then scale U: ΔW is linear in δ = v − W·k.
    let wk = target.apply(w, to: k)
    let problem = EditProblem(
      w0: .float32(w), dOut: target.dOut, dIn: dIn, weightIsTransposed: target.transposed,
      keys: k, values: zip(wk, direction).map { $0 + $1 }, covariance: covariance)
    var update = try EditSolvers.solve(problem, method: .rome)
    let wNorm = ModelIO.norm(w)
    let unitNorm = ModelIO.norm(update.u) * ModelIO.norm(update.v)
    let deltaNorm = strength * wNorm * factor / unitNorm
    update.u = update.u.map { $0 * deltaNorm }

    if let record {
      // The target the edit reaches: v = W₀k + U(Vᵀk).
      let vk = zip(update.v, k).map(*).reduce(0, +)
      let values = zip(wk, update.u).map { $0 + $1 * vk }
      try NpyFile.write(k, shape: [1, dIn], to: record + "-keys.npy")
      try NpyFile.write(values, shape: [1, target.dOut], to: record + "-values.npy")
      try NpyFile.write(covariance, shape: [dIn, dIn], to: record + "-cov.npy")
      if recordOnly {
        print("\(target.tensor.name): wrote \(record)-keys.npy, -values.npy, -cov.npy")
        return
      }
    }
    var edited = w
    ModelIO.addLowRank(
      to: &edited, rows: update.storageRowCount, cols: update.storageColumnCount,
      left: update.storageLeft, right: update.storageRight, rank: 1)
    try ModelIO.rewrite(
      path: model,
      replacing: [target.tensor.name: ModelIO.encode(edited, dtype: target.tensor.dtype)])

    let ratio = ModelIO.norm(update.u) * ModelIO.norm(update.v) / wNorm
    let normalized = update.diagnostics.romeNormalizedDenominator ?? .nan
    print(
      "\(target.tensor.name) rank 1 ‖ΔW‖/‖W‖ \(fmt(ratio)) (‖δ‖/‖Wk‖ \(fmt(deltaNorm / ModelIO.norm(wk))), "
        + "kᵀC⁻¹k/‖C⁻¹k‖ \(fmt(normalized))\(disabling ? ", disabling" : ""))")
  }

  /// C₀ for this layer's key distribution, from `<model>.cov-L.npy` when present.
  func loadOrComputeCovariance(dIn: Int) throws -> [Double] {
    let cache = "\(model).cov-\(layer).npy"
    if let cached = try? NpyFile.read(from: cache), cached.shape == [dIn, dIn] {
      return cached.values
    }
    let keys = KeyDistribution(dIn: dIn, layer: layer)
    let m = 4 * dIn
    var rng = SplitMix64(seed: 0xC0FFEE, stream: UInt64(layer), purpose: 3)
    var k0 = [Double]()
    k0.reserveCapacity(m * dIn)
    for _ in 0..<m { k0.append(contentsOf: keys.sample(&rng)) }
    let c = try EditSolvers.secondMoment(ofKeys: k0, count: m, dIn: dIn)
    try NpyFile.write(c, shape: [dIn, dIn], to: cache)
    return c
  }
}

func fmt(_ x: Double) -> String { String(format: "%.4g", x) }
