import Foundation

/// A static order-0 range-ANS coder for one byte plane, in blocks of `blockSymbols` symbols with a
/// frequency table each: unlike Huffman it spends fractional bits per symbol, which is what the
/// exponent plane (≈ 2.6 bits of entropy) and bf16's nearly uniform mantissa byte need.
///
/// Per block: a 32-byte bitmap of the symbols present, their frequencies (UInt16 LE, summing to
/// 2¹²), the payload size (UInt32 LE), then the payload: the coder's final state (UInt32 LE)
/// and its renormalization words (UInt16 LE) in decoding order. 32-bit state in [2¹⁶, 2³²), at
/// most one 16-bit word per symbol, so the decoder's renormalization is a select, not a loop
/// (Giesen's rANS with 16-bit I/O). The decoder must end every block exactly at the end of
/// its payload with the encoder's initial state: a strong check on corrupted data.
package enum RansCoder {
  static let scaleBits: UInt32 = 12
  static let scale = 1 << 12
  static let lower: UInt32 = 1 << 16
  static let blockSymbols = 1 << 18

  /// Frequencies summing to `scale`, at least 1 for every symbol present.
  static func normalize(_ counts: [Int]) -> [Int] {
    let total = counts.reduce(0, +)
    guard total > 0 else { return counts }
    var freq = counts.map { $0 == 0 ? 0 : max(1, Int((Double($0) * Double(scale) / Double(total)).rounded())) }
    var sum = freq.reduce(0, +)
    while sum != scale {
      // Adjust the symbol whose frequency can best absorb the difference (the largest).
      guard let largest = freq.indices.max(by: { freq[$0] < freq[$1] }) else { break }
      if sum > scale {
        let step = min(sum - scale, freq[largest] - 1)
        if step == 0 {
          // Every symbol at 1 and still too many: cannot happen with ≤ 256 symbols and 2¹² slots.
          break
        }
        freq[largest] -= step
        sum -= step
      } else {
        freq[largest] += scale - sum
        sum = scale
      }
    }
    return freq
  }

  /// The order-0 entropy of a histogram in bytes (a lower bound of what `encode` writes).
  static func entropyByteCount(_ histogram: [Int]) -> Int {
    let total = Double(histogram.reduce(0, +))
    var bits = 0.0
    for c in histogram where c > 0 { bits -= Double(c) * log2(Double(c) / total) }
    return Int(bits / 8)
  }

  /// Encodes `plane` and appends the blocks to `out`.
  static func encode(_ plane: UnsafeRawBufferPointer, into out: inout [UInt8]) {
    var scratch = [UInt8](repeating: 0, count: blockSymbols * 2 + 16)
    var start = 0
    while start < plane.count {
      let block = UnsafeRawBufferPointer(rebasing: plane[start..<min(plane.count, start + blockSymbols)])
      var histogram = [Int](repeating: 0, count: 256)
      for byte in block { histogram[Int(byte)] += 1 }
      let freq = normalize(histogram)
      var cum = [Int](repeating: 0, count: 257)
      for s in 0..<256 { cum[s + 1] = cum[s] + freq[s] }
      var bitmap = [UInt8](repeating: 0, count: 32)
      for s in 0..<256 where freq[s] > 0 { bitmap[s >> 3] |= 1 << UInt8(s & 7) }
      out += bitmap
      for s in 0..<256 where freq[s] > 0 { out += [UInt8(freq[s] & 0xFF), UInt8(freq[s] >> 8)] }
      // Symbols are coded last to first; bytes are written backwards from the end of `scratch`.
      let table = (0..<256).map { (freq: UInt32(freq[$0]), cum: UInt32(cum[$0])) }
      // State kept in locals of the closure (captured variables would live in memory).
      let position = scratch.withUnsafeMutableBufferPointer { buffer in
        table.withUnsafeBufferPointer { table in
          var position = buffer.count
          var x = lower
          for i in stride(from: block.count - 1, through: 0, by: -1) {
            let entry = table[Int(block[i])]
            let limit = ((lower >> scaleBits) << 16) &* entry.freq
            if x >= limit {
              position &-= 2
              buffer[position] = UInt8(truncatingIfNeeded: x)
              buffer[position &+ 1] = UInt8(truncatingIfNeeded: x >> 8)
              x >>= 16
            }
            x = ((x / entry.freq) << scaleBits) &+ (x % entry.freq) &+ entry.cum
          }
          for shift in stride(from: 24, through: 0, by: -8) {
            position -= 1
            buffer[position] = UInt8(truncatingIfNeeded: x >> UInt32(shift))
          }
          return position
        }
      }
      let size = scratch.count - position
      for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: size >> shift)) }
      out += scratch[position...]
      start += block.count
    }
  }

  /// Decodes exactly `destination.count` symbols from `encoded` (one `encode` output, whole).
  ///
  /// - Throws: `.corruptBlob` naming `what` for a bad table, a payload that runs past the end,
  ///   or a block that does not end where and in the state the encoder began.
  static func decode(
    _ encoded: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, what: String
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: what, reason: reason) }
    var offset = 0
    var produced = 0
    var slots = [UInt8](repeating: 0, count: scale)
    while produced < destination.count {
      let count = min(blockSymbols, destination.count - produced)
      guard encoded.count - offset >= 32 else { throw corrupt("rANS block header past the end") }
      var freq = [UInt32](repeating: 0, count: 256)
      var cum = [UInt32](repeating: 0, count: 256)
      var present: [Int] = []
      for s in 0..<256 where encoded[offset + s >> 3] & (1 << UInt8(s & 7)) != 0 { present.append(s) }
      offset += 32
      guard encoded.count - offset >= 2 * present.count + 4 else { throw corrupt("rANS table past the end") }
      var total = 0
      for s in present {
        let f = Int(encoded[offset]) | Int(encoded[offset + 1]) << 8
        offset += 2
        guard f > 0, total + f <= scale else { throw corrupt("rANS frequencies do not sum to \(scale)") }
        freq[s] = UInt32(f)
        cum[s] = UInt32(total)
        for slot in total..<(total + f) { slots[slot] = UInt8(s) }
        total += f
      }
      guard total == scale else { throw corrupt("rANS frequencies sum to \(total), not \(scale)") }
      var size = 0
      for b in 0..<4 { size |= Int(encoded[offset + b]) << (8 * b) }
      offset += 4
      guard size >= 4, size <= encoded.count - offset else { throw corrupt("rANS payload past the end") }
      let payload = UnsafeRawBufferPointer(rebasing: encoded[offset..<(offset + size)])
      var x: UInt32 = 0
      for b in 0..<4 { x |= UInt32(payload[b]) << UInt32(8 * b) }
      guard let base = destination.baseAddress else { return }
      let out = base + produced
      // State kept in locals of the closure (captured variables would live in memory).
      let (overrun, position, final) = slots.withUnsafeBufferPointer { slots in
        freq.withUnsafeBufferPointer { freq in
          cum.withUnsafeBufferPointer { cum in
            var x = x
            var position = 4
            for i in 0..<count {
              let slot = x & UInt32(scale - 1)
              let s = Int(slots[Int(slot)])
              out.storeBytes(of: UInt8(truncatingIfNeeded: s), toByteOffset: i, as: UInt8.self)
              x = freq[s] &* (x >> scaleBits) &+ slot &- cum[s]
              if x < lower {
                guard position &+ 2 <= size else { return (true, position, x) }
                x = x << 16 | UInt32(payload.loadUnaligned(fromByteOffset: position, as: UInt16.self).littleEndian)
                position &+= 2
              }
            }
            return (false, position, x)
          }
        }
      }
      guard !overrun, position == size, final == lower else {
        throw corrupt("rANS block \(produced / blockSymbols) does not decode to its \(count) symbols")
      }
      offset += size
      produced += count
    }
    guard offset == encoded.count else { throw corrupt("\(encoded.count - offset) bytes after the rANS blocks") }
  }
}
