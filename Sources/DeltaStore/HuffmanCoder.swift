/// A byte-alphabet canonical Huffman coder for one byte plane (a float tensor's exponent bytes).
///
/// Exponent bytes are close to independent draws from a narrow distribution (≈ 2.6 bits of
/// entropy per byte on real weights): an entropy coder gets within 1% of their order-0 entropy,
/// where zstd's fast levels, which look for matches first, lose 12% (ZipNN's observation).
///
/// Layout: 128 bytes of code lengths (two 4-bit lengths a byte, symbol 2k in the low nibble;
/// 0 = unused), then the bit stream, least significant bit first, each code written with its
/// bits reversed so that the decoder indexes a table with the next `maxCodeLength` bits, then
/// 8 zero bytes so the decoder can always load a whole word.
package enum HuffmanCoder {
  /// The longest code: a 4 KiB decoding table (2-byte entries) stays in L1 cache.
  static let maxCodeLength = 12
  static let headerByteCount = 128
  static let padding = 8

  /// Code lengths for `histogram` (256 counts), each ≤ `maxCodeLength`; 0 for absent symbols.
  /// A lone symbol gets length 1.
  static func codeLengths(_ histogram: [Int]) -> [UInt8] {
    var counts = histogram
    while true {
      let lengths = unlimitedLengths(counts)
      if lengths.allSatisfy({ $0 <= maxCodeLength }) { return lengths.map { UInt8($0) } }
      // Flatten the distribution until the deepest code fits (rare: needs counts spanning 2¹²).
      counts = counts.map { $0 == 0 ? 0 : max(1, $0 >> 1) }
    }
  }

  private static func unlimitedLengths(_ counts: [Int]) -> [Int] {
    var lengths = [Int](repeating: 0, count: 256)
    var nodes: [(count: Int, symbols: [Int])] = counts.enumerated().compactMap {
      $0.element > 0 ? ($0.element, [$0.offset]) : nil
    }
    if nodes.count == 1 { lengths[nodes[0].symbols[0]] = 1 }
    // At most 256 leaves: a sorted array is simpler than a heap and fast enough.
    while nodes.count > 1 {
      nodes.sort { $0.count != $1.count ? $0.count > $1.count : $0.symbols[0] > $1.symbols[0] }
      let a = nodes.removeLast()
      let b = nodes.removeLast()
      for s in a.symbols + b.symbols { lengths[s] += 1 }
      nodes.append((a.count + b.count, a.symbols + b.symbols))
    }
    return lengths
  }

  /// Canonical codes (bit-reversed, for LSB-first writing) of `lengths`.
  private static func reversedCodes(_ lengths: [UInt8]) -> [UInt32] {
    var codes = [UInt32](repeating: 0, count: 256)
    var code: UInt32 = 0
    for length in 1...maxCodeLength {
      for symbol in 0..<256 where Int(lengths[symbol]) == length {
        var reversed: UInt32 = 0
        for bit in 0..<length where code & (1 << UInt32(length - 1 - bit)) != 0 { reversed |= 1 << UInt32(bit) }
        codes[symbol] = reversed
        code += 1
      }
      code <<= 1
    }
    return codes
  }

  /// The byte size `encode` would produce for a plane with this histogram.
  static func encodedByteCount(histogram: [Int], lengths: [UInt8]) -> Int {
    var bits = 0
    for s in 0..<256 { bits += histogram[s] * Int(lengths[s]) }
    return headerByteCount + (bits + 7) / 8 + padding
  }

  /// Encodes `plane` with `lengths` (from `codeLengths` of its histogram `histogram`) and
  /// appends `encodedByteCount(histogram:lengths:)` bytes to `out`.
  static func encode(_ plane: UnsafeRawBufferPointer, histogram: [Int], lengths: [UInt8], into out: inout [UInt8]) {
    let start = out.count
    let size = encodedByteCount(histogram: histogram, lengths: lengths)
    out.append(contentsOf: repeatElement(0, count: size))
    let codes = reversedCodes(lengths)
    let table = (0..<256).map { UInt64(codes[$0]) | UInt64(lengths[$0]) << 32 }
    out.withUnsafeMutableBytes { buffer in
      guard let base = buffer.baseAddress else { return }
      for k in 0..<headerByteCount {
        base.storeBytes(of: lengths[2 * k] | lengths[2 * k + 1] << 4, toByteOffset: start + k, as: UInt8.self)
      }
      let stream = base + start + headerByteCount
      let streamBytes = size - headerByteCount
      var accumulator: UInt64 = 0
      var filled: UInt64 = 0
      var position = 0
      table.withUnsafeBufferPointer { table in
        for byte in plane {
          let entry = table[Int(byte)]
          accumulator |= (entry & 0xFFFF_FFFF) &<< filled
          filled &+= entry &>> 32
          if filled >= 32 {
            precondition(position &+ 4 <= streamBytes)
            stream.storeBytes(
              of: UInt32(truncatingIfNeeded: accumulator).littleEndian, toByteOffset: position, as: UInt32.self)
            position &+= 4
            accumulator &>>= 32
            filled &-= 32
          }
        }
      }
      while filled > 0 {
        stream.storeBytes(of: UInt8(truncatingIfNeeded: accumulator), toByteOffset: position, as: UInt8.self)
        position += 1
        accumulator &>>= 8
        filled = filled >= 8 ? filled - 8 : 0
      }
      precondition(position + padding <= streamBytes)
    }
  }

  /// Decodes exactly `destination.count` symbols from `encoded` (one `encode` output, whole).
  ///
  /// - Throws: `.corruptBlob(kind:reason:)` naming `what` for code lengths that do not form a
  ///   prefix code, a bit pattern no code starts, or a stream shorter than the symbols need.
  static func decode(
    _ encoded: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, what: String
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: what, reason: reason) }
    guard encoded.count >= headerByteCount + padding, let base = encoded.baseAddress else {
      throw corrupt("Huffman stream of \(encoded.count) bytes is shorter than its header")
    }
    var lengths = [UInt8](repeating: 0, count: 256)
    for k in 0..<headerByteCount {
      lengths[2 * k] = encoded[k] & 0x0F
      lengths[2 * k + 1] = encoded[k] >> 4
    }
    var kraft = 0
    for length in lengths where length > 0 {
      guard Int(length) <= maxCodeLength else { throw corrupt("code length \(length) above \(maxCodeLength)") }
      kraft += 1 << (maxCodeLength - Int(length))
    }
    guard kraft <= 1 << maxCodeLength else { throw corrupt("code lengths are not a prefix code") }
    // Entry: symbol in the low byte, code length above; 0 = no code starts with these bits.
    let codes = reversedCodes(lengths)
    var table = [UInt16](repeating: 0, count: 1 << maxCodeLength)
    for symbol in 0..<256 where lengths[symbol] > 0 {
      let length = Int(lengths[symbol])
      let entry = UInt16(symbol) | UInt16(length) << 8
      var index = Int(codes[symbol])
      while index < table.count {
        table[index] = entry
        index += 1 << length
      }
    }
    let stream = base + headerByteCount
    // Every load reads 8 bytes at the current byte: they exist while the byte is before `limit`.
    let limit = encoded.count - headerByteCount - padding
    let count = destination.count
    guard count > 0, let out = destination.baseAddress else { return }
    let mask = UInt64((1 << maxCodeLength) - 1)
    // State kept in locals of the closure (captured variables would live in memory).
    let (invalid, bit) = table.withUnsafeBufferPointer { table in
      var bit = 0
      var invalid = false
      var i = 0
      // One 8-byte load gives ≥ 56 bits after the in-byte shift: 4 codes of ≤ 12 bits.
      while i < count {
        let byte = bit &>> 3
        if byte > limit { return (true, bit) }
        var bits =
          UInt64(littleEndian: stream.loadUnaligned(fromByteOffset: byte, as: UInt64.self)) &>> UInt64(bit & 7)
        let group = min(4, count &- i)
        for _ in 0..<group {
          let entry = table[Int(truncatingIfNeeded: bits & mask)]
          let length = entry &>> 8
          invalid = invalid || length == 0
          out.storeBytes(of: UInt8(truncatingIfNeeded: entry), toByteOffset: i, as: UInt8.self)
          bits &>>= UInt64(length)
          bit &+= Int(length)
          i &+= 1
        }
        if invalid { return (true, bit) }
      }
      return (false, bit)
    }
    guard !invalid, (bit + 7) / 8 <= limit else {
      throw corrupt("Huffman stream ends before its \(count) symbols")
    }
  }
}
