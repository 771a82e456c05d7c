import Foundation
import Synchronization

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
  /// Blocks coded at once, their states interleaved.
  static let lanes = 4

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

  /// The count of each byte value in `bytes`, in four interleaved tables (one table's
  /// increments of a repeated byte would wait on each other through memory).
  static func histogram(_ bytes: UnsafeRawBufferPointer) -> [Int] {
    var tables = [Int](repeating: 0, count: 4 * 256)
    tables.withUnsafeMutableBufferPointer { t in
      guard let base = bytes.baseAddress, let t = t.baseAddress else { return }
      let count = bytes.count
      var i = 0
      while i &+ 4 <= count {
        let word = base.loadUnaligned(fromByteOffset: i, as: UInt32.self)
        t[Int(truncatingIfNeeded: word & 0xFF)] &+= 1
        t[256 &+ Int(truncatingIfNeeded: word >> 8 & 0xFF)] &+= 1
        t[512 &+ Int(truncatingIfNeeded: word >> 16 & 0xFF)] &+= 1
        t[768 &+ Int(truncatingIfNeeded: word >> 24)] &+= 1
        i &+= 4
      }
      while i < count {
        t[Int(base.load(fromByteOffset: i, as: UInt8.self))] &+= 1
        i &+= 1
      }
    }
    return (0..<256).map { tables[$0] + tables[256 + $0] + tables[512 + $0] + tables[768 + $0] }
  }

  /// The order-0 entropy of a histogram in bytes (a lower bound of what `encode` writes).
  static func entropyByteCount(_ histogram: [Int]) -> Int {
    let total = Double(histogram.reduce(0, +))
    var bits = 0.0
    for c in histogram where c > 0 { bits -= Double(c) * log2(Double(c) / total) }
    return Int(bits / 8)
  }

  /// The histograms of `plane`'s blocks (`histogram` of each), which `encode` needs and whose
  /// sum is the plane's.
  static func blockHistograms(_ plane: UnsafeRawBufferPointer) -> [[Int]] {
    Swift.stride(from: 0, to: plane.count, by: blockSymbols).map {
      histogram(UnsafeRawBufferPointer(rebasing: plane[$0..<min(plane.count, $0 + blockSymbols)]))
    }
  }

  /// Encodes `plane` and appends the blocks to `out`.
  ///
  /// Blocks are independent, so `lanes` of them are coded in one loop (their states interleaved,
  /// which keeps the CPU's multipliers busy), and each division by a frequency is a multiply by
  /// its reciprocal (Lemire's exact 32-bit division): the bytes are the same as one block at a
  /// time with `/` and `%`.
  static func encode(_ plane: UnsafeRawBufferPointer, into out: inout [UInt8]) {
    encode(plane, blockHistograms: blockHistograms(plane), into: &out)
  }

  /// `encode` with the block histograms already counted.
  static func encode(_ plane: UnsafeRawBufferPointer, blockHistograms: [[Int]], into out: inout [UInt8]) {
    let blockCount = (plane.count + blockSymbols - 1) / blockSymbols
    let stride = blockSymbols * 2 + 16
    var scratch = [UInt8](unsafeUninitializedCapacity: lanes * stride) { _, count in count = lanes * stride }
    var symbols = [EncodeSymbol](repeating: EncodeSymbol(), count: lanes * 256)
    var group = 0
    while group < blockCount {
      let members = min(lanes, blockCount - group)
      var headers: [[UInt8]] = []
      var blocks: [UnsafeRawBufferPointer] = []
      for lane in 0..<members {
        let start = (group + lane) * blockSymbols
        let block = UnsafeRawBufferPointer(rebasing: plane[start..<min(plane.count, start + blockSymbols)])
        blocks.append(block)
        let freq = normalize(blockHistograms[group + lane])
        var header = [UInt8](repeating: 0, count: 32)
        var cum = 0
        for s in 0..<256 {
          symbols[lane * 256 + s] = EncodeSymbol(freq: freq[s], cum: cum)
          if freq[s] > 0 {
            header[s >> 3] |= 1 << UInt8(s & 7)
            cum += freq[s]
          }
        }
        for s in 0..<256 where freq[s] > 0 { header += [UInt8(freq[s] & 0xFF), UInt8(freq[s] >> 8)] }
        headers.append(header)
      }
      // A group of 3 blocks (the plane's last) is padded with a copy of its first block, coded
      // and dropped: four interleaved states take about as long as three. One or two blocks
      // are coded one after the other (four lanes are bound by instruction throughput, not by
      // one state's chain of dependent steps).
      while blocks.count >= lanes - 1 && blocks.count < lanes {
        for s in 0..<256 { symbols[blocks.count * 256 + s] = symbols[s] }
        blocks.append(blocks[0])
      }
      // Symbols are coded last to first; bytes are written backwards from the end of each
      // lane's part of `scratch`.
      let positions = scratch.withUnsafeMutableBytes { scratch in
        symbols.withUnsafeBufferPointer { symbols in
          encodeLanes(blocks, symbols: symbols, scratch: scratch, stride: stride)
        }
      }
      for lane in 0..<members {
        let end = (lane + 1) * stride
        let size = end - positions[lane]
        out += headers[lane]
        for shift in Swift.stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: size >> shift)) }
        out += scratch[positions[lane]..<end]
      }
      group += members
    }
  }

  /// The blocks interleaved by `lanes` (full lanes while every block has symbols left; a block
  /// shorter than the others, the plane's last, finishes alone). Returns each lane's first byte.
  private static func encodeLanes(
    _ blocks: [UnsafeRawBufferPointer], symbols: UnsafeBufferPointer<EncodeSymbol>,
    scratch: UnsafeMutableRawBufferPointer, stride: Int
  ) -> [Int] {
    guard let base = scratch.baseAddress else { return [] }
    var states = [UInt32](repeating: lower, count: blocks.count)
    var positions = (0..<blocks.count).map { ($0 + 1) * stride }
    let common = blocks.map(\.count).min() ?? 0
    // The symbols each block has beyond the common length are coded first (coding runs backwards).
    for (lane, block) in blocks.enumerated() where block.count > common {
      let table = UnsafeBufferPointer(rebasing: symbols[(lane * 256)..<((lane + 1) * 256)])
      var x = states[lane]
      var position = positions[lane]
      for i in Swift.stride(from: block.count - 1, through: common, by: -1) {
        put(table[Int(block[i])], &x, &position, base)
      }
      states[lane] = x
      positions[lane] = position
    }
    if blocks.count == lanes, let p0 = blocks[0].baseAddress, let p1 = blocks[1].baseAddress,
      let p2 = blocks[2].baseAddress, let p3 = blocks[3].baseAddress, let t = symbols.baseAddress
    {
      var (x0, x1, x2, x3) = (states[0], states[1], states[2], states[3])
      var (q0, q1, q2, q3) = (positions[0], positions[1], positions[2], positions[3])
      var i = common
      while i > 0 {
        i &-= 1
        put(t[Int(p0.load(fromByteOffset: i, as: UInt8.self))], &x0, &q0, base)
        put(t[256 &+ Int(p1.load(fromByteOffset: i, as: UInt8.self))], &x1, &q1, base)
        put(t[512 &+ Int(p2.load(fromByteOffset: i, as: UInt8.self))], &x2, &q2, base)
        put(t[768 &+ Int(p3.load(fromByteOffset: i, as: UInt8.self))], &x3, &q3, base)
      }
      (states[0], states[1], states[2], states[3]) = (x0, x1, x2, x3)
      (positions[0], positions[1], positions[2], positions[3]) = (q0, q1, q2, q3)
    } else {
      for (lane, block) in blocks.enumerated() {
        let table = UnsafeBufferPointer(rebasing: symbols[(lane * 256)..<((lane + 1) * 256)])
        var x = states[lane]
        var position = positions[lane]
        for i in Swift.stride(from: common - 1, through: 0, by: -1) { put(table[Int(block[i])], &x, &position, base) }
        states[lane] = x
        positions[lane] = position
      }
    }
    for lane in 0..<blocks.count {
      for shift in Swift.stride(from: 24, through: 0, by: -8) {
        positions[lane] -= 1
        base.storeBytes(
          of: UInt8(truncatingIfNeeded: states[lane] >> UInt32(shift)), toByteOffset: positions[lane], as: UInt8.self)
      }
    }
    return positions
  }

  /// A symbol's encoding constants: `x / freq` is the high word of `reciprocal · x` (exact for
  /// every 32-bit `x`, Lemire, Kaser & Kurz 2019), and `(x / freq) << 12 + x % freq + cum` is
  /// `x + bias + (x / freq) · complement`. A frequency of 1 uses reciprocal 2⁶⁴ − 1 (quotient
  /// `x − 1`, as `x ≥ 1`) and a bias raised by `scale − 1` (Giesen's rans_byte.h).
  struct EncodeSymbol {
    var limit: UInt32 = 0
    var bias: UInt32 = 0
    var complement: UInt32 = 0
    var reciprocal: UInt64 = 0

    init() {}

    init(freq: Int, cum: Int) {
      guard freq > 0 else { return }
      limit = ((lower >> scaleBits) << 16) &* UInt32(freq)
      complement = UInt32(scale - freq)
      if freq == 1 {
        reciprocal = UInt64.max
        bias = UInt32(cum + scale - 1)
      } else {
        reciprocal = UInt64.max / UInt64(freq) + 1
        bias = UInt32(cum)
      }
    }
  }

  @inline(__always)
  private static func put(
    _ symbol: EncodeSymbol, _ x: inout UInt32, _ position: inout Int, _ base: UnsafeMutableRawPointer
  ) {
    // Without a branch (a coin toss on the exponent plane): the low word is always stored below
    // `position` (free space: a lane has room for a word per symbol and 16 bytes more) and kept
    // or overwritten next time by whether `position` moves.
    let renormalize = x >= symbol.limit
    base.storeBytes(of: UInt16(truncatingIfNeeded: x).littleEndian, toByteOffset: position &- 2, as: UInt16.self)
    position &-= renormalize ? 2 : 0
    x = renormalize ? x &>> 16 : x
    let quotient = UInt32(truncatingIfNeeded: symbol.reciprocal.multipliedFullWidth(by: UInt64(x)).high)
    x = x &+ symbol.bias &+ quotient &* symbol.complement
  }

  /// Decodes exactly `destination.count` symbols from `encoded` (one `encode` output, whole).
  ///
  /// The blocks are decoded `lanes` at a time, their states interleaved in one loop, through a
  /// table of one word per slot (symbol, frequency − 1 and the slot's offset in its symbol's
  /// range): one load and one multiply-add per symbol.
  ///
  /// - Throws: `.corruptBlob` naming `what` for a bad table, a payload that runs past the end,
  ///   or a block that does not end where and in the state the encoder began.
  static func decode(
    _ encoded: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, what: String,
    workers: Int = 1
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: what, reason: reason) }
    guard let base = destination.baseAddress, destination.count > 0 else {
      guard encoded.isEmpty else { throw corrupt("\(encoded.count) bytes after the rANS blocks") }
      return
    }
    // The headers are read first, in order (each block's size says where the next begins), and
    // checked whole; then the groups of `lanes` blocks, independent of each other, are decoded
    // on `workers` threads, each group reading its tables again from the offsets found here.
    var offset = 0
    var check = [UInt32](repeating: 0, count: scale)
    var headers: [Int] = []
    var blocks: [(payload: Range<Int>, first: Int, count: Int)] = []
    let blockCount = (destination.count + blockSymbols - 1) / blockSymbols
    for block in 0..<blockCount {
      headers.append(offset)
      let start = block * blockSymbols
      let payload = try check.withUnsafeMutableBufferPointer {
        try readTable(encoded, at: &offset, into: $0, corrupt: corrupt)
      }
      blocks.append((payload, start, min(blockSymbols, destination.count - start)))
    }
    let groupCount = (blockCount + lanes - 1) / lanes
    nonisolated(unsafe) let output = base
    // The first block of a group that did not decode to its symbols; the lowest one is reported,
    // as decoding the groups one after the other would.
    let failed = Mutex<Int?>(nil)
    try ParallelParts.run(groupCount, workers: workers) { group in
      let first = group * lanes
      let members = min(lanes, blockCount - first)
      var tables = [UInt32](repeating: 0, count: lanes * scale)
      var groupBlocks = Array(blocks[first..<(first + members)])
      for lane in 0..<members {
        var at = headers[first + lane]
        _ = try tables.withUnsafeMutableBufferPointer { tables in
          try readTable(
            encoded, at: &at, into: UnsafeMutableBufferPointer(rebasing: tables[(lane * scale)..<((lane + 1) * scale)]),
            corrupt: corrupt)
        }
      }
      // A group of 3 blocks is padded with a copy of its first, decoded into `spare` and dropped
      // (as `encode` pads).
      let spare = UnsafeMutableRawBufferPointer.allocate(
        byteCount: members == lanes - 1 ? blockSymbols : 0, alignment: 64)
      defer { spare.deallocate() }
      var outputs = groupBlocks.map { output + $0.first }
      while groupBlocks.count >= lanes - 1 && groupBlocks.count < lanes, let spareBase = spare.baseAddress {
        let lane = groupBlocks.count
        for slot in 0..<scale { tables[lane * scale + slot] = tables[slot] }
        groupBlocks.append(groupBlocks[0])
        outputs.append(spareBase)
      }
      let results = tables.withUnsafeBufferPointer { tables in decodeLanes(groupBlocks, outputs, encoded, tables) }
      if let lane = results.prefix(members).firstIndex(of: false) {
        failed.withLock { $0 = min($0 ?? Int.max, first + lane) }
      }
    }
    if let block = failed.withLock({ $0 }) {
      throw corrupt("rANS block \(block) does not decode to its \(blocks[block].count) symbols")
    }
    guard offset == encoded.count else { throw corrupt("\(encoded.count - offset) bytes after the rANS blocks") }
  }

  /// Reads one block's header at `offset` (moved past the block) and fills its slot table;
  /// returns the payload's range in `encoded`.
  private static func readTable(
    _ encoded: UnsafeRawBufferPointer, at offset: inout Int, into slots: UnsafeMutableBufferPointer<UInt32>,
    corrupt: (String) -> DeltaStoreError
  ) throws -> Range<Int> {
    guard encoded.count - offset >= 32 else { throw corrupt("rANS block header past the end") }
    var present: [Int] = []
    for s in 0..<256 where encoded[offset + s >> 3] & (1 << UInt8(s & 7)) != 0 { present.append(s) }
    offset += 32
    guard encoded.count - offset >= 2 * present.count + 4 else { throw corrupt("rANS table past the end") }
    var total = 0
    for s in present {
      let f = Int(encoded[offset]) | Int(encoded[offset + 1]) << 8
      offset += 2
      guard f > 0, total + f <= scale else { throw corrupt("rANS frequencies do not sum to \(scale)") }
      for slot in total..<(total + f) { slots[slot] = UInt32(s) | UInt32(f - 1) << 8 | UInt32(slot - total) << 20 }
      total += f
    }
    guard total == scale else { throw corrupt("rANS frequencies sum to \(total), not \(scale)") }
    var size = 0
    for b in 0..<4 { size |= Int(encoded[offset + b]) << (8 * b) }
    offset += 4
    guard size >= 4, size <= encoded.count - offset else { throw corrupt("rANS payload past the end") }
    defer { offset += size }
    return offset..<(offset + size)
  }

  /// One decoding step: the symbol of `x`'s slot, then the state before it was coded.
  ///
  /// Without branches (the renormalization is a coin toss on the exponent plane): the next word
  /// is always loaded, from no further than the payload's last word, and taken or not by a
  /// select. `position` advances past `size` on a payload that runs out, which the caller's
  /// final `position == size` check refuses.
  @inline(__always)
  private static func take(
    _ tables: UnsafePointer<UInt32>, _ x: inout UInt32, _ position: inout Int, _ payload: UnsafeRawPointer,
    _ size: Int
  ) -> UInt8 {
    let entry = tables[Int(truncatingIfNeeded: x & UInt32(scale - 1))]
    let next = (entry >> 8 & 0xFFF &+ 1) &* (x >> scaleBits) &+ (entry >> 20)
    let word = UInt32(
      UInt16(littleEndian: payload.loadUnaligned(fromByteOffset: min(position, size &- 2), as: UInt16.self)))
    let renormalize = next < lower
    x = renormalize ? next << 16 | word : next
    position &+= renormalize ? 2 : 0
    return UInt8(truncatingIfNeeded: entry)
  }

  /// Decodes the blocks (at most `lanes`, tables at `lane · scale`); returns for each whether it
  /// ended exactly at the end of its payload in the encoder's initial state.
  private static func decodeLanes(
    _ blocks: [(payload: Range<Int>, first: Int, count: Int)], _ outputs: [UnsafeMutableRawPointer],
    _ encoded: UnsafeRawBufferPointer, _ tables: UnsafeBufferPointer<UInt32>
  ) -> [Bool] {
    guard let source = encoded.baseAddress, let table = tables.baseAddress else { return blocks.map { _ in false } }
    let n = blocks.count
    var states = blocks.map { block in
      (0..<4).reduce(UInt32(0)) { $0 | UInt32(encoded[block.payload.lowerBound + $1]) << UInt32(8 * $1) }
    }
    var positions = [Int](repeating: 4, count: n)
    let common = blocks.map(\.count).min() ?? 0
    if n == lanes {
      let (b0, b1, b2, b3) = (blocks[0], blocks[1], blocks[2], blocks[3])
      let (s0, s1, s2, s3) = (
        source + b0.payload.lowerBound, source + b1.payload.lowerBound, source + b2.payload.lowerBound,
        source + b3.payload.lowerBound
      )
      let (n0, n1, n2, n3) = (b0.payload.count, b1.payload.count, b2.payload.count, b3.payload.count)
      let (o0, o1, o2, o3) = (outputs[0], outputs[1], outputs[2], outputs[3])
      let (t1, t2, t3) = (table + scale, table + 2 * scale, table + 3 * scale)
      var (x0, x1, x2, x3) = (states[0], states[1], states[2], states[3])
      var (q0, q1, q2, q3) = (4, 4, 4, 4)
      for i in 0..<common {
        o0.storeBytes(of: take(table, &x0, &q0, s0, n0), toByteOffset: i, as: UInt8.self)
        o1.storeBytes(of: take(t1, &x1, &q1, s1, n1), toByteOffset: i, as: UInt8.self)
        o2.storeBytes(of: take(t2, &x2, &q2, s2, n2), toByteOffset: i, as: UInt8.self)
        o3.storeBytes(of: take(t3, &x3, &q3, s3, n3), toByteOffset: i, as: UInt8.self)
      }
      states = [x0, x1, x2, x3]
      positions = [q0, q1, q2, q3]
    }
    let done = n == lanes ? common : 0
    for (lane, block) in blocks.enumerated() where block.count > done {
      let payload = source + block.payload.lowerBound
      let size = block.payload.count
      let slots = table + lane * scale
      let o = outputs[lane]
      var (x, position) = (states[lane], positions[lane])
      for i in done..<block.count {
        o.storeBytes(of: take(slots, &x, &position, payload, size), toByteOffset: i, as: UInt8.self)
      }
      (states[lane], positions[lane]) = (x, position)
    }
    return (0..<n).map { positions[$0] == blocks[$0].payload.count && states[$0] == lower }
  }
}
