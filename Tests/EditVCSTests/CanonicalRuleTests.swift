import Apply
import DeltaStore
import EditVCS
import Foundation
import TestSupport
import Testing

/// The fused F32 rank-one kernel must give exactly the general path's bits, special values
/// included: repositories written with one are read with the other.
@Suite struct CanonicalRuleTests {
  @Test(arguments: [UInt64(1), 2, 3])
  func fusedRankOneEqualsTheGeneralPath(seed: UInt64) throws {
    var rng = SplitMix64(seed: seed)
    let rows = 37
    let cols = 301
    var values = rng.gaussianArray(count: rows * cols, scale: 0.05)
    let specials: [Float] = [
      .infinity, -.infinity, .nan, Float(bitPattern: 0x7FA0_0001), .leastNonzeroMagnitude, -.leastNormalMagnitude,
      .greatestFiniteMagnitude, 0, -0.0, 1e-40,
    ]
    for (i, special) in specials.enumerated() { values[i * 97 % values.count] = special }
    var u = rng.gaussianArray(count: rows, scale: 1)
    let v = rng.gaussianArray(count: cols, scale: 1)
    u[3] = 1e30  // overflow to infinity in some elements
    var fused = values.withUnsafeBytes { Array($0) }
    var general = fused
    func apply(_ bytes: inout [UInt8], allowFastPath: Bool) {
      bytes.withUnsafeMutableBytes { raw in
        u.withUnsafeBufferPointer { u in
          v.withUnsafeBufferPointer { v in
            CanonicalRule.apply(
              to: raw, storage: .init(.f32), rows: rows, cols: cols, u: u, v: v, rank: 1, allowFastPath: allowFastPath)
          }
        }
      }
    }
    apply(&fused, allowFastPath: true)
    apply(&general, allowFastPath: false)
    #expect(fused == general)
    #expect(fused != values.withUnsafeBytes { Array($0) })
  }
}
