/// SplitMix64 (Steele, Lea, Flood 2014): a seeded generator whose streams, uniforms and
/// Gaussians are bit-identical on every platform (arithmetic only, no `log`/`cos` from a libm
/// that may differ). The rank finder draws its sketch `Ω` from it; the demo editor and the test
/// fixtures draw their models, keys and probes from the same code, so there is one copy.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  private var state: UInt64

  public init(seed: UInt64) { state = seed }

  /// A generator for one named stream (tensor index, layer, purpose) derived from a seed.
  public init(seed: UInt64, stream: UInt64, purpose: UInt64 = 0) {
    var mixer = SplitMix64(seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03) ^ (purpose &* 0x8CB9_2BA7_2F3D_8DD7))
    state = mixer.next()
  }

  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1) from the top 24 bits: the same Float on every platform.
  public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

  /// Approximately standard normal in Float: a centred, scaled sum of 4 uniforms (Irwin–Hall).
  public mutating func nextGaussian() -> Float {
    var sum: Float = 0
    for _ in 0..<4 { sum += nextUnitFloat() }
    return (sum - 2) * 1.7320508
  }

  /// Approximately standard normal in Double: Irwin–Hall over 4 uniforms of 53 bits each.
  package mutating func nextGaussianDouble() -> Double {
    var sum = 0.0
    for _ in 0..<4 { sum += Double(next() >> 11) * 0x1p-53 }
    return (sum - 2) * 1.7320508075688772
  }

  /// `count` Float Gaussians, widened to Double and scaled.
  public mutating func gaussians(_ count: Int, scale: Double = 1) -> [Double] {
    (0..<count).map { _ in Double(nextGaussian()) * scale }
  }

  /// `count` Float Gaussians, scaled.
  package mutating func gaussianArray(count: Int, scale: Float = 1) -> [Float] {
    (0..<count).map { _ in nextGaussian() * scale }
  }
}
