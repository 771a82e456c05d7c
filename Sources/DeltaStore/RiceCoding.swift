/// The Rice payload of a residual (kind 4 of ``ResidualCodec``), bit-packed LSB first:
/// byte 0 is the Rice parameter `k` (0...40), byte 1 is 1 when every value is ±1 (else 0); then
/// per nonzero element the gap to the previous one (`position − last − 1`) as `gap >> k` ones, a
/// zero and the low `k` bits; then per element a sign bit (1: negative); then, when byte 1 is 0,
/// the values of magnitude ≥ 2 as exceptions: their count `M + 1`, then per exception the gap
/// between value indices (`index − last − 1`) `+ 1`, then per exception `|value| − 1`, all in
/// Elias gamma (the bit length `L` of the number as `L − 1` zeros, then its `L` bits from the
/// top one down).
enum RiceCoding {
  /// Bits of the gaps with parameter `k`.
  private static func gapBits(_ positions: [Int], k: Int) -> Int {
    var bits = 0
    var last = -1
    for p in positions {
      bits += ((p - last - 1) >> k) + 1 + k
      last = p
    }
    return bits
  }

  /// The `k` that makes the gaps shortest.
  private static func bestK(_ positions: [Int]) -> Int {
    guard let lastPosition = positions.last else { return 0 }
    // Near-optimal k is about log2 of the mean gap; search around it.
    let mean = max(1, (lastPosition + 1) / positions.count)
    let guess = Int.bitWidth - mean.leadingZeroBitCount - 1
    var best = (k: 0, bits: Int.max)
    for k in max(0, guess - 2)...min(40, guess + 2) {
      let bits = gapBits(positions, k: k)
      if bits < best.bits { best = (k, bits) }
    }
    return best.k
  }

  /// Bits of `x ≥ 1` in Elias gamma.
  @inline(__always)
  private static func gammaBits(_ x: UInt64) -> Int { 2 * (UInt64.bitWidth - x.leadingZeroBitCount) - 1 }

  /// The exceptions' bits (0 when every value is ±1).
  private static func magnitudeBits(_ values: [Int64]) -> (unit: Bool, bits: Int) {
    var bits = 0
    var count: UInt64 = 0
    var last = -1
    for (index, v) in values.enumerated() where v.magnitude != 1 {
      bits += gammaBits(UInt64(index - last)) + gammaBits(v.magnitude - 1)
      last = index
      count += 1
    }
    return count == 0 ? (true, 0) : (false, bits + gammaBits(count + 1))
  }

  static func byteCount(positions: [Int], values: [Int64]) -> Int {
    let k = bestK(positions)
    let bits = gapBits(positions, k: k) + values.count + magnitudeBits(values).bits
    return 2 + (bits + 7) / 8
  }

  /// Payload sizes a valid blob can have: at least one bit per element's gap terminator and
  /// sign, at most `n` unary ones plus 41 gap bits, a sign and 127 gamma bits per element.
  static func payloadBounds(elementCount n: Int, nonzeroCount count: Int) -> ClosedRange<Int> {
    (2 + (2 * count + 7) / 8)...(2 + (n + 296 * count + 127 + 7) / 8)
  }

  /// Writes the payload into `out` (zeroed, `byteCount` bytes).
  static func encode(positions: [Int], values: [Int64], into out: UnsafeMutableBufferPointer<UInt8>) {
    let k = bestK(positions)
    let unit = magnitudeBits(values).unit
    out[0] = UInt8(k)
    out[1] = unit ? 1 : 0
    var bit = 16
    @inline(__always) func put(_ one: Bool) {
      if one { out[bit >> 3] |= 1 << UInt8(bit & 7) }
      bit += 1
    }
    var last = -1
    for p in positions {
      let gap = p - last - 1
      last = p
      for _ in 0..<(gap >> k) { put(true) }
      put(false)
      for b in 0..<k { put((gap >> b) & 1 == 1) }
    }
    for v in values { put(v < 0) }
    guard !unit else { return }
    func gamma(_ x: UInt64) {
      let length = UInt64.bitWidth - x.leadingZeroBitCount
      for _ in 0..<(length - 1) { put(false) }
      for b in stride(from: length - 1, through: 0, by: -1) { put((x >> UInt64(b)) & 1 == 1) }
    }
    let exceptions = values.indices.filter { values[$0].magnitude != 1 }
    gamma(UInt64(exceptions.count + 1))
    var lastIndex = -1
    for index in exceptions {
      gamma(UInt64(index - lastIndex))
      lastIndex = index
    }
    for index in exceptions { gamma(values[index].magnitude - 1) }
  }

  /// Reads `count` (position, value) pairs, checking every position against `elementCount` and
  /// that the payload ends where the last value does (padding bits zero).
  static func decode(
    _ payload: UnsafeBufferPointer<UInt8>, nonzeroCount count: Int, elementCount: Int,
    into pairs: inout (positions: [UInt32], values: [Int64])
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptResidual(reason: "rice payload: " + reason) }
    guard payload.count >= 2, payload[0] <= 40, payload[1] <= 1 else { throw corrupt("bad header") }
    let k = Int(payload[0])
    let unit = payload[1] == 1
    let totalBits = payload.count * 8
    var bit = 16
    func get() throws -> Bool {
      guard bit < totalBits else { throw corrupt("truncated") }
      defer { bit += 1 }
      return (payload[bit >> 3] >> UInt8(bit & 7)) & 1 == 1
    }
    var position = -1
    for _ in 0..<count {
      var quotient = 0
      while try get() {
        quotient += 1
        guard quotient <= elementCount else { throw corrupt("gap past element \(elementCount)") }
      }
      var low = 0
      for b in 0..<k where try get() { low |= 1 << b }
      let gap = quotient << k | low
      guard gap < elementCount, position + 1 + gap < elementCount else {
        throw corrupt("position past element \(elementCount)")
      }
      position += 1 + gap
      pairs.positions.append(UInt32(position))
    }
    var negative: [Bool] = []
    negative.reserveCapacity(count)
    for _ in 0..<count { negative.append(try get()) }
    var magnitudes = [UInt64](repeating: 1, count: count)
    if !unit {
      func gamma() throws -> UInt64 {
        var zeros = 0
        while !(try get()) {
          zeros += 1
          guard zeros <= 63 else { throw corrupt("number over 64 bits") }
        }
        var x: UInt64 = 1
        for _ in 0..<zeros { x = x << 1 | (try get() ? 1 : 0) }
        return x
      }
      let exceptions = try gamma() - 1
      guard exceptions >= 1, exceptions <= UInt64(count) else { throw corrupt("\(exceptions) exceptions") }
      var indices: [Int] = []
      var index = -1
      for _ in 0..<exceptions {
        let gap = try gamma()
        guard gap <= UInt64(count), index + Int(gap) < count else { throw corrupt("exception past value \(count)") }
        index += Int(gap)
        indices.append(index)
      }
      for i in indices {
        let (m, overflow) = (try gamma()).addingReportingOverflow(1)
        guard !overflow else { throw corrupt("magnitude over 64 bits") }
        magnitudes[i] = m
      }
    }
    for i in 0..<count {
      pairs.values.append(Int64(bitPattern: negative[i] ? 0 &- magnitudes[i] : magnitudes[i]))
    }
    guard (bit + 7) / 8 == payload.count else {
      throw corrupt("\(payload.count - (bit + 7) / 8) bytes after the values")
    }
    while bit < totalBits {
      guard !(try get()) else { throw corrupt("nonzero padding bits") }
    }
  }
}
