import Apply
import ArgumentParser
import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compare every MLP down-projection's output on fixed probes with a base model.",
    discussion: """
      Exit status for `mvc bisect run`: 0 when the largest relative drift ‖Y − Y_base‖_F/‖Y_base‖_F \
      is ≤ --threshold (good), 1 when above (bad), 128 when the models cannot be compared (abort).
      """)

  @Argument(help: "The model to evaluate.") var model: String
  @Option(help: "The reference model.") var base: String
  @Option(help: "Seed of the probe inputs.") var probeSeed: UInt64 = 0
  @Option(help: "Largest acceptable relative drift.") var threshold = 0.05
  @Option(help: "Probe inputs per module.") var probes = 8
  @Flag(help: "Print every module's drift.") var verbose = false

  func run() throws {
    do {
      try evaluate()
    } catch let error as ExitCode {
      throw error
    } catch {
      let message = (error as? LocalizedError)?.errorDescription ?? "\(error)"
      FileHandle.standardError.write(Data("mvc-demo-editor eval: \(message)\n".utf8))
      throw ExitCode(128)
    }
  }

  func evaluate() throws {
    let file = try SafetensorsFile(path: model, followSymlink: true)
    let reference = try SafetensorsFile(path: base, followSymlink: true)
    var worst = (drift: 0.0, name: "")
    var count = 0
    for (index, info) in reference.tensors.enumerated()
    where info.name.hasSuffix("mlp.down_proj.weight") || info.name.hasSuffix("mlp.c_proj.weight") {
      guard let mine = file.tensor(named: info.name), mine.shape == info.shape,
        info.shape.count == 2
      else { throw EditorError("\(model): tensor '\(info.name)' missing or reshaped") }
      // Conv1D (c_proj) stores Wᵀ: inputs index rows; nn.Linear: inputs index columns.
      let transposed = info.name.hasSuffix("c_proj.weight")
      let (rows, cols) = (info.shape[0], info.shape[1])
      let dIn = transposed ? rows : cols
      var rng = SplitMix64(seed: probeSeed, stream: UInt64(index), purpose: 5)
      let x = rng.gaussians(probes * dIn)
      let y = forward(try ModelIO.floats(file, mine), rows, cols, transposed, x)
      let yBase = forward(try ModelIO.floats(reference, info), rows, cols, transposed, x)
      let drift =
        ModelIO.norm(zip(y, yBase).map { $0 - $1 })
        / max(ModelIO.norm(yBase), .leastNormalMagnitude)
      if verbose { print("\(info.name) drift \(fmt(drift))") }
      if drift >= worst.drift { worst = (drift, info.name) }
      count += 1
    }
    guard count > 0 else { throw EditorError("\(base): no mlp.down_proj or mlp.c_proj weights") }
    let good = worst.drift <= threshold
    print(
      "max drift \(fmt(worst.drift)) (\(worst.name)) over \(count) modules, threshold \(fmt(threshold)): "
        + (good ? "good" : "bad"))
    if !good { throw ExitCode(1) }
  }

  /// Y = X·Wᵀ (probes × d_out) for W stored d_out×d_in, or X·W for Wᵀ stored d_in×d_out.
  func forward(_ w: [Float], _ rows: Int, _ cols: Int, _ transposed: Bool, _ x: [Double])
    -> [Double]
  {
    let dIn = transposed ? rows : cols
    let dOut = transposed ? cols : rows
    var y = [Double](repeating: 0, count: probes * dOut)
    for p in 0..<probes {
      if transposed {
        for j in 0..<dIn {
          let xj = x[p * dIn + j]
          for i in 0..<dOut { y[p * dOut + i] += Double(w[j * dOut + i]) * xj }
        }
      } else {
        for i in 0..<dOut {
          var s = 0.0
          for j in 0..<dIn { s += Double(w[i * dIn + j]) * x[p * dIn + j] }
          y[p * dOut + i] = s
        }
      }
    }
    return y
  }
}
