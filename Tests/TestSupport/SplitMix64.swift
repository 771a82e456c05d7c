import Foundation

/// A seeded generator so every fixture is the same on every run (argument-parser's `Examples/roll`).
public struct SplitMix64: RandomNumberGenerator {
  private var state: UInt64
  public init(seed: UInt64) { state = seed }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1), from the top 24 bits, so the value is the same on every platform.
  public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

  /// Approximately standard normal (sum of 4 uniforms, centred and scaled): cheap and deterministic.
  public mutating func nextGaussian() -> Float {
    var sum: Float = 0
    for _ in 0..<4 { sum += nextUnitFloat() }
    return (sum - 2) * 1.7320508
  }

  public mutating func gaussianArray(count: Int, scale: Float = 1) -> [Float] {
    (0..<count).map { _ in nextGaussian() * scale }
  }
}
