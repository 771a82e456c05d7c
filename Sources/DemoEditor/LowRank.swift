import Apply
import ArgumentParser
import DeltaStore
import Foundation

struct LowRank: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lowrank",
    abstract: "Add a random rank-R update U·Vᵀ with ‖U·Vᵀ‖_F = scale·‖W‖_F to one tensor.")

  @Argument(help: "The model to rewrite.") var model: String
  @Option(help: "The 2-D tensor to edit.") var tensor: String
  @Option(help: "The rank R.") var rank = 1
  @Option(help: "‖U·Vᵀ‖_F / ‖W‖_F.") var scale = 0.01
  @Option(help: "Seed of U and V.") var seed: UInt64 = 0
  @Flag(help: "Write the tensor's bytes into the file where they are (an editor that patches in place).")
  var inPlace = false

  func run() throws {
    let file = try SafetensorsFile(path: model, followSymlink: true)
    guard let info = file.tensor(named: tensor) else {
      throw EditorError("\(model): no tensor named '\(tensor)'")
    }
    guard info.shape.count == 2, rank > 0 else {
      throw EditorError("\(tensor): need a 2-D tensor and rank ≥ 1 (shape \(info.shape))")
    }
    let (rows, cols) = (info.shape[0], info.shape[1])
    var w = try ModelIO.floats(file, info)
    var rng = SplitMix64(seed: seed, stream: UInt64(rows &* 31 &+ cols), purpose: 4)
    var u = rng.gaussians(rows * rank)
    let v = rng.gaussians(cols * rank)
    // ‖U·Vᵀ‖_F² = Σ_ab (UᵀU)_ab (VᵀV)_ab
    func gram(_ x: [Double], _ n: Int) -> [Double] {
      var g = [Double](repeating: 0, count: rank * rank)
      for i in 0..<n {
        for a in 0..<rank {
          for b in 0..<rank { g[a * rank + b] += x[i * rank + a] * x[i * rank + b] }
        }
      }
      return g
    }
    let product = zip(gram(u, rows), gram(v, cols)).reduce(0) { $0 + $1.0 * $1.1 }.squareRoot()
    let wNorm = ModelIO.norm(w)
    let factor = scale * wNorm / product
    u = u.map { $0 * factor }
    ModelIO.addLowRank(to: &w, rows: rows, cols: cols, left: u, right: v, rank: rank)
    let bytes = ModelIO.encode(w, dtype: info.dtype)
    if inPlace {
      let writer = try InPlaceFileWriter(path: model)
      try bytes.withUnsafeBytes { try writer.write($0, at: file.fileOffset(of: info)) }
    } else {
      try ModelIO.rewrite(path: model, replacing: [tensor: bytes])
    }
    print("\(tensor) rank \(rank) ‖ΔW‖/‖W‖ \(fmt(scale))")
  }
}
