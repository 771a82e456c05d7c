/// A seeded generator (SplitMix64) so every model, key and probe is the same on every run.
struct SplitMix64: RandomNumberGenerator {
  private var state: UInt64

  init(seed: UInt64) { state = seed }

  /// A generator for one named stream (tensor index, layer, purpose) derived from a seed.
  init(seed: UInt64, stream: UInt64, purpose: UInt64 = 0) {
    var mixer = SplitMix64(
      seed: seed ^ (stream &* 0xD1B5_4A32_D192_ED03) ^ (purpose &* 0x8CB9_2BA7_2F3D_8DD7))
    state = mixer.next()
  }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1) from the top 24 bits: the same value on every platform.
  mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

  /// Approximately standard normal: a centred, scaled sum of 4 uniforms (Irwin–Hall), cheap and
  /// bit-for-bit deterministic (no libm calls).
  mutating func nextGaussian() -> Float {
    var sum: Float = 0
    for _ in 0..<4 { sum += nextUnitFloat() }
    return (sum - 2) * 1.7320508
  }

  /// `count` Gaussian values as Float64.
  mutating func gaussians(_ count: Int, scale: Double = 1) -> [Double] {
    (0..<count).map { _ in Double(nextGaussian()) * scale }
  }
}
