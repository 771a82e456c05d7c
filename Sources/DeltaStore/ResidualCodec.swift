/// A compressed exactness residual, as produced by `ResidualCodec.encode`.
public struct EncodedResidual: Sendable, Equatable {
  /// The self-describing blob: a small header, then one zstd frame.
  public var bytes: [UInt8]
  /// How many elements differ.
  public var nonzeroCount: Int
}

/// Encodes the per-element difference between committed and reconstructed tensor bytes, so that
/// `apply` turns the reconstruction into the committed bytes exactly.
///
/// Each difference is `ordered(committed) − ordered(reconstructed)` modulo 2^w (see
/// `OrderedBits`): ±1 for a one-ulp rounding disagreement, anything for other patterns. The
/// smallest of three payloads is kept, then compressed with zstd:
/// - two-bit: 4 elements a byte (0, +1, −1), when every difference is within ±1;
/// - sparse: LEB128 gaps between nonzero positions, then their zigzag LEB128 values;
/// - dense: zigzag-free two's-complement values in the narrowest of 1, 2, 4 or 8 bytes.
///
/// Blob layout: format (1), kind, dense width, element width, then LEB128 element count,
/// nonzero count and payload byte count, then the zstd frame of the payload.
public enum ResidualCodec {
  private static let formatVersion: UInt8 = 1

  private enum Kind: UInt8 {
    case twoBit = 1
    case sparse = 2
    case dense = 3
  }

  /// Encodes `committed − reconstructed`.
  ///
  /// - Parameters:
  ///   - committed: The exact bytes to reproduce.
  ///   - reconstructed: The deterministic reconstruction checkout will compute.
  ///   - dtype: The element type; any type of 8, 16, 32 or 64 bits.
  ///   - compressor: The zstd context to use; a fresh one when `nil`.
  /// - Returns: `nil` when the buffers are identical.
  /// - Throws: `.byteCountMismatch`, `.unsupportedDType`, or zstd errors.
  public static func encode(
    committed: UnsafeRawBufferPointer, reconstructed: UnsafeRawBufferPointer, dtype: DType,
    compressor: ZstdCompressor? = nil
  ) throws -> EncodedResidual? {
    guard OrderedBits.supports(dtype), let width = dtype.byteCount else {
      throw DeltaStoreError.unsupportedDType(dtype: dtype, operation: "the residual codec")
    }
    guard committed.count == reconstructed.count else {
      throw DeltaStoreError.byteCountMismatch(
        what: "reconstructed tensor", expected: committed.count, actual: reconstructed.count)
    }
    guard committed.count % width == 0 else {
      throw DeltaStoreError.byteCountMismatch(
        what: "tensor", expected: committed.count / width * width, actual: committed.count)
    }
    let n = committed.count / width
    // Only the nonzero differences are kept (a few percent of the elements for an editor's
    // rounding), so encoding costs memory in proportion to the residual, not to the tensor.
    var positions: [Int] = []
    var values: [Int64] = []
    var nonzero = 0
    var maxMagnitude: UInt64 = 0
    var sparseByteCount = 0
    var last = -1
    for i in 0..<n {
      let c = OrderedBits.ordered(load(committed, i, width), dtype: dtype)
      let r = OrderedBits.ordered(load(reconstructed, i, width), dtype: dtype)
      let d = signExtend(UInt64(bitPattern: c &- r), bits: width * 8)
      guard d != 0 else { continue }
      positions.append(i)
      values.append(d)
      nonzero += 1
      maxMagnitude = max(maxMagnitude, d.magnitude)
      sparseByteCount += lebByteCount(UInt64(i - last - 1)) + lebByteCount(zigzag(d))
      last = i
    }
    guard nonzero > 0 else { return nil }
    let compressor = try compressor ?? ZstdCompressor()

    var candidates: [(kind: Kind, denseWidth: Int, rawByteCount: Int)] = []
    if maxMagnitude <= 1 { candidates.append((.twoBit, 0, (n + 3) / 4)) }
    candidates.append((.sparse, 0, sparseByteCount))
    let denseWidth =
      [1, 2, 4, 8].first { maxMagnitude <= (UInt64(1) << UInt64($0 * 8 - 1)) - 1 } ?? 8
    let fitWidth = min(denseWidth, width)
    let smallestRaw = candidates.map(\.rawByteCount).min() ?? Int.max
    // Dense rarely wins once sparse is this small; skip compressing it when it is 2× larger.
    if n * fitWidth <= 2 * smallestRaw { candidates.append((.dense, fitWidth, n * fitWidth)) }

    var best: [UInt8]?
    for candidate in candidates {
      let payload = makePayload(
        candidate.kind, positions: positions, values: values, elementCount: n,
        denseWidth: candidate.denseWidth, rawByteCount: candidate.rawByteCount)
      precondition(payload.count == candidate.rawByteCount)
      var blob: [UInt8] = [
        formatVersion, candidate.kind.rawValue, UInt8(candidate.denseWidth), UInt8(width),
      ]
      appendLEB(UInt64(n), to: &blob)
      appendLEB(UInt64(nonzero), to: &blob)
      appendLEB(UInt64(payload.count), to: &blob)
      blob += try compressor.compress(payload)
      if best == nil || blob.count < (best?.count ?? 0) { best = blob }
    }
    guard let best else { preconditionFailure("no residual candidate") }
    return EncodedResidual(bytes: best, nonzeroCount: nonzero)
  }

  /// Adds the residual `encoded` to `reconstructed`, turning it into the committed bytes.
  ///
  /// Everything is validated before `reconstructed` is touched: format, dtype width, element
  /// count, payload size (checked against the zstd frame before allocating), positions and
  /// lengths. Memory used is bounded by `elementCount`, never by sizes read from the blob.
  /// - Throws: `.corruptResidual`, `.unsupportedDType`, `.byteCountMismatch`, or zstd errors.
  public static func apply(
    _ encoded: [UInt8], to reconstructed: UnsafeMutableRawBufferPointer, dtype: DType,
    elementCount: Int
  ) throws {
    guard OrderedBits.supports(dtype), let width = dtype.byteCount else {
      throw DeltaStoreError.unsupportedDType(dtype: dtype, operation: "the residual codec")
    }
    let (expectedBytes, overflow) = elementCount.multipliedReportingOverflow(by: width)
    guard elementCount >= 0, !overflow, reconstructed.count == expectedBytes else {
      throw DeltaStoreError.byteCountMismatch(
        what: "reconstructed tensor", expected: overflow ? Int.max : expectedBytes,
        actual: reconstructed.count)
    }
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptResidual(reason: reason) }
    guard encoded.count >= 4 else { throw corrupt("blob is \(encoded.count) bytes") }
    guard encoded[0] == formatVersion else { throw corrupt("unknown format \(encoded[0])") }
    guard let kind = Kind(rawValue: encoded[1]) else {
      throw corrupt("unknown encoding \(encoded[1])")
    }
    let denseWidth = Int(encoded[2])
    guard Int(encoded[3]) == width else {
      throw corrupt("element width \(encoded[3]), expected \(width) for \(dtype.rawValue)")
    }
    var cursor = 4
    let n = try readLEB(encoded, &cursor)
    let nonzero = try readLEB(encoded, &cursor)
    let payloadByteCount = try readLEB(encoded, &cursor)
    guard n == UInt64(elementCount) else {
      throw corrupt("\(n) elements, expected \(elementCount)")
    }
    guard nonzero >= 1, nonzero <= n else { throw corrupt("\(nonzero) nonzero of \(n) elements") }
    let count = Int(nonzero)
    let expectedPayload: ClosedRange<Int>
    switch kind {
    case .twoBit:
      guard denseWidth == 0 else { throw corrupt("two-bit blob with width \(denseWidth)") }
      expectedPayload = ((elementCount + 3) / 4)...((elementCount + 3) / 4)
    case .sparse:
      guard denseWidth == 0 else { throw corrupt("sparse blob with width \(denseWidth)") }
      expectedPayload = (2 * count)...(20 * count)
    case .dense:
      guard [1, 2, 4, 8].contains(denseWidth), denseWidth <= width else {
        throw corrupt("dense width \(denseWidth)")
      }
      expectedPayload = (elementCount * denseWidth)...(elementCount * denseWidth)
    }
    guard payloadByteCount <= UInt64(expectedPayload.upperBound),
      expectedPayload.contains(Int(payloadByteCount))
    else { throw corrupt("payload of \(payloadByteCount) bytes") }
    let payload = try encoded.withUnsafeBytes {
      try Zstd.decompress(
        UnsafeRawBufferPointer(rebasing: $0[cursor...]), expectedByteCount: Int(payloadByteCount))
    }
    // Decode to (position, difference) pairs first so a corrupt blob changes nothing.
    var positions: [Int] = []
    var values: [Int64] = []
    positions.reserveCapacity(count)
    values.reserveCapacity(count)
    switch kind {
    case .twoBit:
      for i in 0..<elementCount {
        let code = (payload[i >> 2] >> UInt8((i & 3) * 2)) & 3
        switch code {
        case 0: continue
        case 1: values.append(1)
        case 2: values.append(-1)
        default: throw corrupt("two-bit code 3 at element \(i)")
        }
        positions.append(i)
      }
      let tail = elementCount & 3
      if tail != 0, let lastByte = payload.last, lastByte >> UInt8(tail * 2) != 0 {
        throw corrupt("nonzero padding bits")
      }
    case .sparse:
      var p = 0
      var position = -1
      for _ in 0..<count {
        let gap = try readLEB(payload, &p)
        guard gap < UInt64(elementCount), position + 1 + Int(gap) < elementCount else {
          throw corrupt("position past element \(elementCount)")
        }
        position += 1 + Int(gap)
        positions.append(position)
      }
      for _ in 0..<count {
        let z = try readLEB(payload, &p)
        values.append(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1))))
      }
      guard p == payload.count else { throw corrupt("\(payload.count - p) bytes after the values") }
    case .dense:
      for i in 0..<elementCount {
        let d = signExtend(loadPayload(payload, i, denseWidth), bits: denseWidth * 8)
        if d != 0 {
          positions.append(i)
          values.append(d)
        }
        guard positions.count <= count else { break }
      }
    }
    guard positions.count == count else {
      throw corrupt("\(positions.count) nonzero differences, header says \(count)")
    }
    for (position, d) in zip(positions, values) {
      let r = OrderedBits.ordered(
        load(UnsafeRawBufferPointer(reconstructed), position, width), dtype: dtype)
      store(OrderedBits.bits(ordered: r &+ d, dtype: dtype), reconstructed, position, width)
    }
  }

  // MARK: - Payloads

  private static func makePayload(
    _ kind: Kind, positions: [Int], values: [Int64], elementCount: Int, denseWidth: Int, rawByteCount: Int
  ) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(rawByteCount)
    switch kind {
    case .twoBit:
      out = [UInt8](repeating: 0, count: rawByteCount)
      for (i, d) in zip(positions, values) {
        out[i >> 2] |= (d == 1 ? 1 : 2) << UInt8((i & 3) * 2)
      }
    case .sparse:
      var last = -1
      for i in positions {
        appendLEB(UInt64(i - last - 1), to: &out)
        last = i
      }
      for v in values { appendLEB(zigzag(v), to: &out) }
    case .dense:
      out = [UInt8](repeating: 0, count: elementCount * denseWidth)
      for (i, v) in zip(positions, values) {
        let u = UInt64(bitPattern: v)
        for b in 0..<denseWidth { out[i * denseWidth + b] = UInt8(truncatingIfNeeded: u >> UInt64(8 * b)) }
      }
    }
    return out
  }

  // MARK: - Helpers

  @inline(__always)
  private static func zigzag(_ v: Int64) -> UInt64 {
    UInt64(bitPattern: (v << 1) ^ (v >> 63))
  }

  @inline(__always)
  private static func signExtend(_ u: UInt64, bits: Int) -> Int64 {
    let shift = Int64(64 - bits)
    return Int64(bitPattern: u << UInt64(shift)) >> shift
  }

  private static func lebByteCount(_ v: UInt64) -> Int {
    var v = v
    var n = 1
    while v >= 0x80 {
      v >>= 7
      n += 1
    }
    return n
  }

  private static func appendLEB(_ v: UInt64, to out: inout [UInt8]) {
    var v = v
    while v >= 0x80 {
      out.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    out.append(UInt8(v))
  }

  /// Reads an unsigned LEB128 of at most 10 bytes that fits in 64 bits.
  private static func readLEB(_ bytes: [UInt8], _ cursor: inout Int) throws -> UInt64 {
    var result: UInt64 = 0
    for i in 0..<10 {
      guard cursor < bytes.count else {
        throw DeltaStoreError.corruptResidual(reason: "truncated varint")
      }
      let b = bytes[cursor]
      cursor += 1
      if i == 9 && b > 1 {
        throw DeltaStoreError.corruptResidual(reason: "varint overflows 64 bits")
      }
      result |= UInt64(b & 0x7F) << UInt64(7 * i)
      if b & 0x80 == 0 { return result }
    }
    throw DeltaStoreError.corruptResidual(reason: "varint longer than 10 bytes")
  }

  @inline(__always)
  private static func load(_ raw: UnsafeRawBufferPointer, _ i: Int, _ width: Int) -> UInt64 {
    switch width {
    case 1: return UInt64(raw[i])
    case 2:
      return UInt64(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
    case 4:
      return UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
    default: return UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
    }
  }

  @inline(__always)
  private static func store(
    _ v: UInt64, _ raw: UnsafeMutableRawBufferPointer, _ i: Int, _ width: Int
  ) {
    switch width {
    case 1: raw[i] = UInt8(truncatingIfNeeded: v)
    case 2:
      raw.storeBytes(
        of: UInt16(truncatingIfNeeded: v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
    case 4:
      raw.storeBytes(
        of: UInt32(truncatingIfNeeded: v).littleEndian, toByteOffset: 4 * i, as: UInt32.self)
    default: raw.storeBytes(of: v.littleEndian, toByteOffset: 8 * i, as: UInt64.self)
    }
  }

  private static func loadPayload(_ payload: [UInt8], _ i: Int, _ width: Int) -> UInt64 {
    var u: UInt64 = 0
    for b in 0..<width { u |= UInt64(payload[i * width + b]) << UInt64(8 * b) }
    return u
  }
}
