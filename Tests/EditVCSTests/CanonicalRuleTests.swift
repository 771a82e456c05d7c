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
      .greatestFiniteMagnitude, 0, -0.0, Float(bitPattern: 0x0001_16C2),
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

  /// The element-major kernel for runs of factor-only rank-one states gives exactly the bits of
  /// applying them one by one through the general path: special values in the tensor, an
  /// overflow to infinity midway, odd row and column counts (a partial tile, a lone row), and a
  /// run whose factors hold an infinity (element by element throughout).
  @Test(arguments: [
    (UInt64(1), 37, 301, 2), (2, 64, 64, 37), (3, 1, 9, 5), (4, 20, 16, 128), (5, 9, 7, 3), (6, 11, 24, 17),
  ])
  func rankOneRunEqualsStatesAppliedOneByOne(seed: UInt64, rows: Int, cols: Int, count: Int) throws {
    var rng = SplitMix64(seed: seed)
    var values = rng.gaussianArray(count: rows * cols, scale: 0.05)
    let specials: [Float] = [
      .infinity, -.infinity, .nan, Float(bitPattern: 0x7FA0_0001), .leastNonzeroMagnitude, -.leastNormalMagnitude,
      .greatestFiniteMagnitude, 0, -0.0, Float(bitPattern: 0x0001_16C2),
    ]
    for (i, special) in specials.enumerated() where values.count > 40 { values[i * 97 % values.count] = special }
    var us = (0..<count).map { _ in rng.gaussianArray(count: rows, scale: 0.3) }
    let vs = (0..<count).map { _ in rng.gaussianArray(count: cols, scale: 0.3) }
    if count > 2 { us[count / 2][rows / 2] = 1e30 }  // overflow to infinity midway
    let start = values.withUnsafeBytes { Array($0) }
    /// The states applied one at a time through the general path (the reference).
    func oneAtATime(_ us: [[Float]]) -> [UInt8] {
      var bytes = start
      for (u, v) in zip(us, vs) {
        bytes.withUnsafeMutableBytes { raw in
          u.withUnsafeBufferPointer { u in
            v.withUnsafeBufferPointer { v in
              CanonicalRule.apply(
                to: raw, storage: .init(.f32), rows: rows, cols: cols, u: u, v: v, rank: 1, allowFastPath: false)
            }
          }
        }
      }
      return bytes
    }
    let oneByOne = oneAtATime(us)
    func run(_ us: [[Float]], wide: Bool = true) -> [UInt8] {
      var bytes = start
      let u = us.flatMap { $0 }
      let v = vs.flatMap { $0 }
      bytes.withUnsafeMutableBytes { raw in
        u.withUnsafeBufferPointer { u in
          v.withUnsafeBufferPointer { v in
            CanonicalRule.addRankOneRunF32(
              raw.baseAddress!, rows: rows, cols: cols, count: count, u: u.baseAddress!, v: v.baseAddress!,
              storage: .init(.f32), allowWideTiles: wide)
          }
        }
      }
      return bytes
    }
    #expect(run(us) == oneByOne)
    #expect(run(us, wide: false) == oneByOne, "the portable tiles")
    #expect(oneByOne != start)
    // A factor holding an infinity: the whole run goes element by element, with the same bits.
    var withInfinity = us
    withInfinity[0][0] = .infinity
    let expected = oneAtATime(withInfinity)
    #expect(run(withInfinity) == expected)
    #expect(run(withInfinity, wide: false) == expected)
  }
}
