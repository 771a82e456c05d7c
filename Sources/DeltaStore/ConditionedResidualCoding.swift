import Foundation

/// The conditioned payload of a residual (kind 5 of ``ResidualCodec``): each element's chance of
/// being one ulp off depends on how close its exact sum lies to a rounding midpoint, which the
/// decoder knows as well as the encoder (a context byte per element, computed from the parent's
/// bytes and the stored factors: `CanonicalRule.roundingContexts` in Apply). Bits 0–6 of a
/// context are its bucket, bit 7 the direction a flip takes (1: one ulp down, else up).
///
/// Layout: byte `B` (the bucket count, 1…127), then per bucket its flip probability `p`·2¹⁶ as
/// UInt16 LE (0: the bucket is not coded), then LEB128 `E` and LEB128 `R`, then `R` bytes of a
/// ``RiceCoding`` payload holding `E` *exceptions* (position, difference), then a binary range
/// coder stream (LZMA's, 16-bit probabilities): for every element of a coded bucket, in element
/// order, 1 when its difference is exactly the flip its context predicts. Every other nonzero
/// difference (in a bucket that is not coded, or not that flip) is an exception; an element is
/// never both. The probabilities are the encoder's counts (a static model), so decoding needs no
/// division and no adaptation state.
enum ConditionedResidualCoding {
  /// Probabilities are in units of 2⁻¹⁶.
  private static let probabilityBits: UInt32 = 16
  private static let topValue: UInt32 = 1 << 24

  // MARK: - Encoding

  /// The payload for nonzero `(positions, values)` of `contexts.count` elements.
  static func encode(
    positions: [Int], values: [Int64], contexts: UnsafeBufferPointer<UInt8>, bucketCount: Int
  ) -> [UInt8] {
    precondition((1...127).contains(bucketCount))
    let n = contexts.count
    // Element counts and predicted flips per bucket.
    // 128 entries: any context byte indexes them (buckets past `bucketCount` stay empty).
    var elements = [Int](repeating: 0, count: 128)
    var flips = [Int](repeating: 0, count: 128)
    for c in contexts { elements[Int(c & 0x7F)] += 1 }
    for (p, v) in zip(positions, values) where v == predicted(contexts[p]) { flips[Int(contexts[p] & 0x7F)] += 1 }
    // A bucket is coded when its bits cost less than listing its flips as Rice exceptions. What an
    // exception costs depends on how many there are and where: start from the cost of scattered
    // ones, then re-decide once with the measured cost, and keep the smaller payload.
    let totalFlips = max(1, flips.reduce(0, +))
    var exceptionBits = log2(Double(max(n, 2)) / Double(totalFlips)) + 3
    var best: [UInt8]?
    for _ in 0..<2 {
      let probability = probabilities(elements: elements, flips: flips, bucketCount: bucketCount, exceptionBits)
      let (payload, exceptions, riceBytes) = payload(
        positions: positions, values: values, contexts: contexts, bucketCount: bucketCount, probability: probability)
      if payload.count < best?.count ?? Int.max { best = payload }
      guard exceptions > 0 else { break }
      exceptionBits = Double(8 * riceBytes) / Double(exceptions)
    }
    return best ?? []
  }

  /// Each bucket's flip probability in units of 2⁻¹⁶, 0 for a bucket left to the exceptions.
  /// Bucket 0 (far from any midpoint: most elements) is never coded, so the range coder only
  /// visits the elements near one; its rare flips are exceptions.
  private static func probabilities(elements: [Int], flips: [Int], bucketCount: Int, _ exceptionBits: Double)
    -> [UInt32]
  {
    var probability = [UInt32](repeating: 0, count: 128)
    for b in 1..<bucketCount where flips[b] > 0 {
      let p = Double(flips[b]) / Double(elements[b])
      let quantized = min(65535, max(1, (p * 65536).rounded()))
      let q = quantized / 65536
      let codedBits = -Double(flips[b]) * log2(q) - Double(elements[b] - flips[b]) * log2(1 - q)
      if codedBits < Double(flips[b]) * exceptionBits { probability[b] = UInt32(quantized) }
    }
    return probability
  }

  /// The payload with these bucket probabilities, its exception count and Rice section bytes.
  private static func payload(
    positions: [Int], values: [Int64], contexts: UnsafeBufferPointer<UInt8>, bucketCount: Int,
    probability: [UInt32]
  ) -> (bytes: [UInt8], exceptions: Int, riceBytes: Int) {
    let n = contexts.count
    // Exceptions: every nonzero difference the range coder does not carry.
    var exceptionPositions: [Int] = []
    var exceptionValues: [Int64] = []
    var flagged = [Bool](repeating: false, count: positions.count)
    for (k, (p, v)) in zip(positions, values).enumerated() {
      if probability[Int(contexts[p] & 0x7F)] != 0 && v == predicted(contexts[p]) {
        flagged[k] = true
      } else {
        exceptionPositions.append(p)
        exceptionValues.append(v)
      }
    }
    let riceBytes = RiceCoding.byteCount(positions: exceptionPositions, values: exceptionValues)
    var rice = [UInt8](repeating: 0, count: riceBytes)
    rice.withUnsafeMutableBufferPointer {
      RiceCoding.encode(positions: exceptionPositions, values: exceptionValues, into: $0)
    }
    var out: [UInt8] = [UInt8(bucketCount)]
    for p in probability[0..<bucketCount] { out += [UInt8(truncatingIfNeeded: p), UInt8(truncatingIfNeeded: p >> 8)] }
    ResidualCodec.appendLEB(UInt64(exceptionPositions.count), to: &out)
    ResidualCodec.appendLEB(UInt64(rice.count), to: &out)
    out += rice
    var encoder = RangeEncoder()
    encoder.bytes.reserveCapacity(n / 64 + 16)
    var next = 0  // the next nonzero difference
    for i in 0..<n {
      let p = probability[Int(contexts[i] & 0x7F)]
      guard p != 0 else { continue }
      while next < positions.count && positions[next] < i { next += 1 }
      encoder.encode(next < positions.count && positions[next] == i && flagged[next], probabilityOfOne: p)
    }
    encoder.flush()
    return (out + encoder.bytes, exceptionPositions.count, riceBytes)
  }

  /// The difference a flip of an element with context `c` makes: −1 or +1 ordered ulp.
  @inline(__always)
  private static func predicted(_ c: UInt8) -> Int64 { c & 0x80 != 0 ? -1 : 1 }

  /// LZMA's range encoder with 16-bit probabilities; `low` keeps the carry in bit 32.
  private struct RangeEncoder {
    var bytes: [UInt8] = []
    var low: UInt64 = 0
    var range: UInt32 = 0xFFFF_FFFF
    var cache: UInt8 = 0
    var cacheSize = 1

    @inline(__always)
    mutating func encode(_ bit: Bool, probabilityOfOne p: UInt32) {
      let bound = (range >> probabilityBits) &* (65536 - p)
      if bit {
        low &+= UInt64(bound)
        range &-= bound
      } else {
        range = bound
      }
      while range < topValue {
        range <<= 8
        shiftLow()
      }
    }

    mutating func shiftLow() {
      if low < 0xFF00_0000 || low >= 1 << 32 {
        let carry = UInt8(truncatingIfNeeded: low >> 32)
        var temp = cache
        repeat {
          bytes.append(temp &+ carry)
          temp = 0xFF
          cacheSize -= 1
        } while cacheSize != 0
        cache = UInt8(truncatingIfNeeded: low >> 24)
      }
      cacheSize += 1
      low = (low & 0x00FF_FFFF) << 8
    }

    mutating func flush() {
      for _ in 0..<5 { shiftLow() }
    }
  }

  // MARK: - Decoding

  /// The smallest and largest payload a blob of `n` elements and `count` nonzero differences can
  /// have: the fixed fields, a Rice section of up to `count` exceptions, and at most 16 range-coder
  /// bits per element (no probability is below 2⁻¹⁶) plus its 5 flush bytes.
  static func payloadBounds(elementCount n: Int, nonzeroCount count: Int) -> ClosedRange<Int> {
    (1 + 2 + RiceCoding.payloadBounds(elementCount: n, nonzeroCount: 0).lowerBound + 5)...(1 + 2 * 127 + 20
      + RiceCoding.payloadBounds(elementCount: n, nonzeroCount: count).upperBound + 2 * n + 8)
  }

  /// Reads the `count` (position, difference) pairs of a payload, given the elements' contexts
  /// (`contexts.count` is the element count). Checks the bucket table, the exception section
  /// against `count`, that no element is both flagged and an exception, and that the range
  /// coder's stream ends exactly at the payload's end.
  static func decode(
    _ payload: UnsafeBufferPointer<UInt8>, nonzeroCount count: Int, contexts: UnsafeBufferPointer<UInt8>,
    bucketCount: Int, into pairs: inout (positions: [UInt32], values: [Int64])
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError {
      .corruptResidual(reason: "conditioned payload: " + reason)
    }
    let n = contexts.count
    guard payload.count >= 1 + 2 * bucketCount else { throw corrupt("truncated bucket table") }
    guard Int(payload[0]) == bucketCount else {
      throw corrupt("\(payload[0]) buckets, this build computes \(bucketCount)")
    }
    // 128 entries, so any context byte indexes it; buckets past the table are never coded.
    let probability = (0..<128).map {
      $0 < bucketCount ? UInt32(payload[1 + 2 * $0]) | UInt32(payload[2 + 2 * $0]) << 8 : 0
    }
    var cursor = 1 + 2 * bucketCount
    let exceptionCount = try ResidualCodec.readLEB(payload, &cursor)
    let riceCount = try ResidualCodec.readLEB(payload, &cursor)
    guard exceptionCount <= UInt64(count) else { throw corrupt("\(exceptionCount) exceptions of \(count)") }
    guard riceCount <= UInt64(payload.count - cursor) else { throw corrupt("exception section past the end") }
    let riceEnd = cursor + Int(riceCount)
    var exceptions = (positions: [UInt32](), values: [Int64]())
    exceptions.positions.reserveCapacity(Int(exceptionCount))
    exceptions.values.reserveCapacity(Int(exceptionCount))
    try RiceCoding.decode(
      UnsafeBufferPointer(rebasing: payload[cursor..<riceEnd]), nonzeroCount: Int(exceptionCount), elementCount: n,
      into: &exceptions)

    var decoder = try RangeDecoder(UnsafeBufferPointer(rebasing: payload[riceEnd...]), corrupt)
    var nextException = 0
    for i in 0..<n {
      let c = contexts[i]
      let p = probability[Int(c & 0x7F)]
      let isException = nextException < exceptions.positions.count && exceptions.positions[nextException] == i
      if p != 0, try decoder.decode(probabilityOfOne: p) {
        guard !isException else { throw corrupt("element \(i) both flagged and an exception") }
        guard pairs.positions.count < count else { throw corrupt("more than \(count) nonzero differences") }
        pairs.positions.append(UInt32(i))
        pairs.values.append(predicted(c))
      } else if isException {
        guard pairs.positions.count < count else { throw corrupt("more than \(count) nonzero differences") }
        pairs.positions.append(UInt32(i))
        pairs.values.append(exceptions.values[nextException])
        nextException += 1
      }
    }
    guard decoder.isAtEnd else { throw corrupt("\(decoder.remaining) bytes after the flips") }
  }

  /// LZMA's range decoder, reading from a buffer it never runs past.
  private struct RangeDecoder {
    let bytes: UnsafeBufferPointer<UInt8>
    var position = 0
    var range: UInt32 = 0xFFFF_FFFF
    var code: UInt32 = 0
    let corrupt: (String) -> DeltaStoreError

    init(_ bytes: UnsafeBufferPointer<UInt8>, _ corrupt: @escaping (String) -> DeltaStoreError) throws {
      self.bytes = bytes
      self.corrupt = corrupt
      guard bytes.count >= 5, bytes[0] == 0 else { throw corrupt("bad range coder start") }
      position = 1
      for _ in 0..<4 { code = code << 8 | UInt32(try next()) }
    }

    var isAtEnd: Bool { position == bytes.count }
    var remaining: Int { bytes.count - position }

    @inline(__always)
    mutating func next() throws -> UInt8 {
      guard position < bytes.count else { throw corrupt("truncated range coder stream") }
      defer { position += 1 }
      return bytes[position]
    }

    @inline(__always)
    mutating func decode(probabilityOfOne p: UInt32) throws -> Bool {
      let bound = (range >> probabilityBits) &* (65536 - p)
      let bit: Bool
      if code < bound {
        range = bound
        bit = false
      } else {
        code &-= bound
        range &-= bound
        bit = true
      }
      while range < topValue {
        range <<= 8
        code = code << 8 | UInt32(try next())
      }
      return bit
    }
  }
}
