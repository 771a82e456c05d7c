/// Applies `W += u·vᵀ` (rank `rank`, u and v from a seeded generator, scale 0.01) in Float32 to
/// tensor `index` of an in-memory fixture, as an external editor would.
public func applyLowRankEdit(_ tensors: inout [FixtureTensor], index: Int, rank: Int, seed: UInt64) {
  var rng = SplitMix64(seed: seed)
  let rows = tensors[index].shape[0]
  let cols = tensors[index].shape.count > 1 ? tensors[index].shape[1] : 1
  var w = tensors[index].floats
  let u = rng.gaussianArray(count: rows * rank, scale: 0.01)
  let v = rng.gaussianArray(count: cols * rank, scale: 0.01)
  for i in 0..<rows {
    for j in 0..<cols {
      var d: Float = 0
      for r in 0..<rank { d += u[i * rank + r] * v[j * rank + r] }
      w[i * cols + j] += d
    }
  }
  tensors[index] = FixtureTensor(name: tensors[index].name, shape: tensors[index].shape, floats: w)
}
