import Foundation
import TestSupport
import Testing

// `mvc score --signals`, the drift flag of `log --stat` and `bisect run --max-norm-growth`
// against the same quantities computed here from the committed weights (Float64, σ₁ by a long
// plain power iteration).

private let down0 = "model.layers.0.mlp.down_proj.weight"
private let up1 = "model.layers.1.mlp.up_proj.weight"

/// ‖W_t‖/‖W_0‖, ‖W_t − W_0‖_F, σ₁(W_t − W_0) of row-major matrices.
private func expectedSignals(_ w: [Float], _ w0: [Float], rows: Int, cols: Int) -> (
  growth: Double, distance: Double, spectral: Double
) {
  let d = zip(w, w0).map { Double($0) - Double($1) }
  let norm = { (x: [Double]) in x.reduce(0) { $0 + $1 * $1 }.squareRoot() }
  var x = [Double](repeating: 1, count: cols)
  var sigma = 0.0
  for _ in 0..<2000 {
    var y = [Double](repeating: 0, count: rows)
    for i in 0..<rows { for j in 0..<cols { y[i] += d[i * cols + j] * x[j] } }
    var z = [Double](repeating: 0, count: cols)
    for i in 0..<rows { for j in 0..<cols { z[j] += d[i * cols + j] * y[i] } }
    let zn = norm(z)
    if zn == 0 { break }
    sigma = norm(y) / norm(x)
    x = z.map { $0 / zn }
  }
  return (norm(w.map(Double.init)) / norm(w0.map(Double.init)), norm(d), sigma)
}

@Suite("collapse signals: score --signals, log --stat, bisect --max-norm-growth", .serialized)
struct SignalTests {
  @Test func signalsMatchTheWeights() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 21)
      try s.writeModel(blocks: 2, hidden: 24, intermediate: 40, seed: 9)
      try s.initialize()
      var states: [[Float]] = [try #require(try floatTensors(s.model)[down0]).values]
      // Six independent rank-1 edits (‖ΔW‖ grows like √t), one edit of another tensor, then six
      // that repeat one direction (‖ΔW‖ grows like t): the drift ratio must rise in the second half.
      for i in 0..<13 {
        if i == 6 {
          try s.edit(rank: 2, tensor: up1)
          try s.commit("other tensor")
          continue
        }
        var same = SplitMix64(seed: 99)
        if i < 6 {
          try LowRankEditor.edit(s.model, tensor: down0, rank: 1, rng: &s.rng, scale: 0.02)
        } else {
          try LowRankEditor.edit(s.model, tensor: down0, rank: 1, rng: &same, scale: 0.02)
        }
        try s.commit("edit \(i)")
        states.append(try #require(try floatTensors(s.model)[down0]).values)
      }
      let ids = Array(try s.commitIDs().reversed())  // root first
      let editIDs = ids.enumerated().filter { $0.offset != 7 }.map(\.element)  // commits that changed down0

      let result = runMVC(["score", "--signals", "--json"], in: dir)
      expectSuccess(result, "score --signals --json")
      let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
      let signals = try #require(json["signals"] as? [String: Any])
      #expect((signals["commits"] as? [String]) == ids)
      let points = try #require(signals["points"] as? [[String: Any]])
      let mine = points.filter { $0["tensor"] as? String == down0 }
      #expect(mine.count == 12)
      #expect(points.filter { $0["tensor"] as? String == up1 }.count == 1)
      var early: [Double] = []
      var expectedFlag: String?
      for (t, point) in mine.enumerated() {
        let e = expectedSignals(states[t + 1], states[0], rows: 24, cols: 40)
        #expect(point["commit"] as? String == editIDs[t + 1])
        #expect(point["edit_count"] as? Int == t + 1)
        let growth = try #require(point["norm_growth"] as? Double)
        let distance = try #require(point["distance"] as? Double)
        let spectral = try #require(point["spectral_norm"] as? Double)
        let energy = try #require(point["top_energy"] as? Double)
        #expect(abs(growth - e.growth) <= 1e-12 * e.growth, "growth at \(t): \(growth) vs \(e.growth)")
        #expect(abs(distance - e.distance) <= 1e-10 * e.distance, "distance at \(t)")
        #expect(abs(spectral - e.spectral) <= 1e-8 * e.spectral, "σ₁ at \(t): \(spectral) vs \(e.spectral)")
        let expectedEnergy = e.spectral * e.spectral / (e.distance * e.distance)
        #expect(abs(energy - expectedEnergy) <= 1e-7, "σ₁²/‖ΔW‖² at \(t)")
        let drift = e.distance / Double(t + 1).squareRoot()
        if t < 5 {
          early.append(drift)
          #expect(point["drift_ratio"] is NSNull)
        } else {
          let ratio = drift / early.sorted()[2]
          #expect(abs((point["drift_ratio"] as? Double ?? 0) - ratio) <= 1e-9 * ratio)
          if expectedFlag == nil && ratio > 1.5 { expectedFlag = editIDs[t + 1] }
        }
      }
      let flagged = mine.filter { $0["flagged"] as? Bool == true }.compactMap { $0["commit"] as? String }
      let flag = try #require(expectedFlag, "the piled-up edits should raise the drift ratio above 1.5")
      #expect(flagged == [flag])

      // log --stat --signals shows the flag under that commit only.
      let log = runMVC(["log", "--stat", "--signals"], in: dir)
      expectSuccess(log, "log --stat")
      let blocks = log.stdout.components(separatedBy: "\ncommit ")
      let withDrift = blocks.filter { $0.contains("! drift: '\(down0)'") }
      #expect(withDrift.count == 1 && withDrift.first?.contains(flag) == true, "\(log.stdout)")

      // bisect run --max-norm-growth: a threshold between the growth before and after commit 10.
      let growths = try mine.map { try #require($0["norm_growth"] as? Double) }
      // positions in `mine`: commit editIDs[k] ↔ mine[k - 1]
      let k = 10
      let before = growths[..<(k - 1)].max() ?? 1
      let after = growths[(k - 1)...].min() ?? 1
      try #require(after > before, "growth is not separable at edit \(k): \(growths)")
      let threshold = (before + after) / 2
      expectSuccess(runMVC(["bisect", "start", "HEAD", ids[0]], in: dir), "bisect start")
      let run = runMVC(["bisect", "run", "--max-norm-growth", String(threshold)], in: dir)
      expectSuccess(run, "bisect run --max-norm-growth")
      #expect(run.stdout.contains("\(editIDs[k]) is the first bad commit"), "\(run.stdout)")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")
    }
  }
}
