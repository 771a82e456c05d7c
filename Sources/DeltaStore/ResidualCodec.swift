/// A compressed exactness residual, as produced by `ResidualCodec.encode`.
public struct EncodedResidual: Sendable, Equatable {
  /// The self-describing blob: a small header, then one zstd frame.
  public var bytes: [UInt8]
  /// How many elements differ.
  package var nonzeroCount: Int
  /// The blob's payload is Rice-coded (``ResidualCodec/riceKindVersion``): a reader older than
  /// that kind refuses it, so the commit holding it records a higher format.
  package var isRiceCoded: Bool {
    bytes.count > 1 && bytes[1] == ResidualCodec.riceKindRawValue
  }
  /// The blob's payload is conditioned on the parent and the factors
  /// (``ResidualCodec/conditionedKindRawValue``): decoding it needs their ``ResidualContexts``.
  package var isConditioned: Bool { ResidualCodec.needsContexts(bytes) }
}

/// What a conditioned residual (kind 5) is decoded against: one context byte per element, which
/// encoder and decoder compute alike from the parent's bytes and the stored factors
/// (`CanonicalRule.roundingContexts` in Apply; see ``ConditionedResidualCoding``).
package struct ResidualContexts {
  /// One byte per element: bucket in bits 0–6, flip direction in bit 7 (1: down).
  package var codes: UnsafeBufferPointer<UInt8>
  /// How many buckets the context function has (1…127); recorded in the blob and checked.
  package var bucketCount: Int

  package init(codes: UnsafeBufferPointer<UInt8>, bucketCount: Int) {
    self.codes = codes
    self.bucketCount = bucketCount
  }
}

/// Encodes the per-element difference between committed and reconstructed tensor bytes, so that
/// `apply` turns the reconstruction into the committed bytes exactly.
///
/// Each difference is `ordered(committed) − ordered(reconstructed)` modulo 2^w (see
/// `OrderedBits`): ±1 for a one-ulp rounding disagreement, anything for other patterns. The
/// smallest of three payloads is kept, then compressed with zstd:
/// - two-bit: 4 elements a byte (0, +1, −1), when every difference is within ±1;
/// - sparse: LEB128 gaps between nonzero positions, then their zigzag LEB128 values;
/// - dense: zigzag-free two's-complement values in the narrowest of 1, 2, 4 or 8 bytes;
/// - rice (repository format 2): the sparse gaps Rice-coded with the best parameter `k`, then a
///   sign bit per value (and, unless every value is ±1, its magnitude − 1 in Elias gamma), packed
///   into bits: within a few percent of the entropy of a residual of scattered ±1, where the
///   zstd of the LEB128 gaps costs about a third more;
/// - conditioned (repository format 3, F32 only): a range-coded flag per element near a rounding
///   midpoint, with per-bucket probabilities, and the rest as Rice exceptions
///   (``ConditionedResidualCoding``); decoding needs the parent's bytes and the factors.
///
/// Blob layout: format (1), kind, dense width, element width, then LEB128 element count,
/// nonzero count and payload byte count, then the zstd frame of the payload.
public enum ResidualCodec {
  private static let formatVersion: UInt8 = 1

  private enum Kind: UInt8 {
    case twoBit = 1
    case sparse = 2
    case dense = 3
    case rice = 4
    case conditioned = 5
  }
  package static let riceKindRawValue: UInt8 = 4
  package static let conditionedKindRawValue: UInt8 = 5

  /// Whether the blob is conditioned (kind 5), so `decode` needs the elements' contexts.
  package static func needsContexts(_ blob: [UInt8]) -> Bool {
    blob.count > 1 && blob[1] == conditionedKindRawValue
  }

  /// Encodes `committed − reconstructed`.
  ///
  /// - Parameters:
  ///   - committed: The exact bytes to reproduce.
  ///   - reconstructed: The deterministic reconstruction checkout will compute.
  ///   - dtype: The element type; any type of 8, 16, 32 or 64 bits.
  ///   - compressor: The zstd context to use; a fresh one when `nil`.
  ///   - allowRice: whether the Rice kind (format 2) may be chosen.
  ///   - contexts: for an F32 tensor, its elements' rounding contexts: the conditioned kind
  ///     (format 3) is tried too, and kept when it is the smallest.
  /// - Returns: `nil` when the buffers are identical.
  /// - Throws: `.byteCountMismatch`, `.unsupportedDType`, or zstd errors.
  public static func encode(
    committed: UnsafeRawBufferPointer, reconstructed: UnsafeRawBufferPointer, dtype: DType,
    compressor: ZstdCompressor? = nil, allowRice: Bool = false
  ) throws -> EncodedResidual? {
    try encode(
      committed: committed, reconstructed: reconstructed, dtype: dtype, compressor: compressor, allowRice: allowRice,
      contexts: nil)
  }

  package static func encode(
    committed: UnsafeRawBufferPointer, reconstructed: UnsafeRawBufferPointer, dtype: DType,
    compressor: ZstdCompressor? = nil, allowRice: Bool = false, contexts: ResidualContexts?
  ) throws -> EncodedResidual? {
    guard let encoding = OrderedBits.encoding(of: dtype), let width = dtype.byteCount else {
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
    let differences = Differences(committed, reconstructed, width: width, encoding: encoding)
    let (positions, values) = (differences.positions, differences.values)
    let nonzero = positions.count
    let maxMagnitude = differences.maxMagnitude
    guard nonzero > 0 else { return nil }
    let compressor = try compressor ?? ZstdCompressor()

    var candidates: [(kind: Kind, denseWidth: Int, rawByteCount: Int)] = []
    if maxMagnitude <= 1 { candidates.append((.twoBit, 0, (n + 3) / 4)) }
    candidates.append((.sparse, 0, differences.sparseByteCount))
    let denseWidth =
      [1, 2, 4, 8].first { maxMagnitude <= (UInt64(1) << UInt64($0 * 8 - 1)) - 1 } ?? 8
    let fitWidth = min(denseWidth, width)
    let smallestRaw = candidates.map(\.rawByteCount).min() ?? Int.max
    // Dense rarely wins once sparse is this small; skip compressing it when it is 2× larger.
    if n * fitWidth <= 2 * smallestRaw { candidates.append((.dense, fitWidth, n * fitWidth)) }
    if allowRice { candidates.append((.rice, 0, RiceCoding.byteCount(positions: positions, values: values))) }
    if let contexts, dtype == .f32 {
      precondition(contexts.codes.count == n, "one context per element")
      candidates.append((.conditioned, 0, 0))
    }

    var best: [UInt8]?
    for candidate in candidates {
      let payload: [UInt8]
      if candidate.kind == .conditioned, let contexts {
        payload = ConditionedResidualCoding.encode(
          positions: positions, values: values, contexts: contexts.codes, bucketCount: contexts.bucketCount)
      } else {
        payload = makePayload(
          candidate.kind, positions: positions, values: values, elementCount: n,
          denseWidth: candidate.denseWidth, rawByteCount: candidate.rawByteCount)
        precondition(payload.count == candidate.rawByteCount)
      }
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
    try apply(encoded, to: reconstructed, dtype: dtype, elementCount: elementCount, contexts: nil)
  }

  /// `apply` for any kind: `contexts` are the elements' rounding contexts a conditioned blob
  /// (kind 5) needs; other kinds ignore them.
  package static func apply(
    _ encoded: [UInt8], to reconstructed: UnsafeMutableRawBufferPointer, dtype: DType,
    elementCount: Int, contexts: ResidualContexts?
  ) throws {
    guard let width = dtype.byteCount else {
      throw DeltaStoreError.unsupportedDType(dtype: dtype, operation: "the residual codec")
    }
    let (expectedBytes, overflow) = elementCount.multipliedReportingOverflow(by: width)
    guard elementCount >= 0, !overflow, reconstructed.count == expectedBytes else {
      throw DeltaStoreError.byteCountMismatch(
        what: "reconstructed tensor", expected: overflow ? Int.max : expectedBytes,
        actual: reconstructed.count)
    }
    let decoded = try decode(encoded, dtype: dtype, elementCount: elementCount, contexts: contexts)
    guard let base = reconstructed.baseAddress else { return }
    decoded.add(to: base, entries: 0..<decoded.count)
  }

  /// Decodes a residual to its (position, difference) pairs, validated as `apply` does, so a
  /// caller can apply it a range of elements at a time (`DecodedResidual.add`).
  /// `contexts` are needed by a conditioned blob (kind 5) alone: one per element.
  package static func decode(
    _ encoded: [UInt8], dtype: DType, elementCount: Int, contexts: ResidualContexts? = nil
  ) throws -> DecodedResidual {
    guard let encoding = OrderedBits.encoding(of: dtype), let width = dtype.byteCount else {
      throw DeltaStoreError.unsupportedDType(dtype: dtype, operation: "the residual codec")
    }
    let header = try Header(encoded, width: width, dtype: dtype, elementCount: elementCount)
    let payload = try encoded.withUnsafeBytes {
      try Zstd.decompress(
        UnsafeRawBufferPointer(rebasing: $0[header.payloadOffset...]), expectedByteCount: header.payloadByteCount)
    }
    // Decode to (position, difference) pairs first so a corrupt blob changes nothing.
    var pairs = (positions: [UInt32](), values: [Int64]())
    pairs.positions.reserveCapacity(header.nonzeroCount)
    pairs.values.reserveCapacity(header.nonzeroCount)
    try payload.withUnsafeBufferPointer { payload in
      switch header.kind {
      case .twoBit: try decodeTwoBit(payload, elementCount: elementCount, into: &pairs)
      case .sparse:
        try decodeSparse(payload, nonzeroCount: header.nonzeroCount, elementCount: elementCount, into: &pairs)
      case .dense:
        decodeDense(
          payload, width: header.denseWidth, nonzeroCount: header.nonzeroCount, elementCount: elementCount,
          into: &pairs)
      case .rice:
        try RiceCoding.decode(payload, nonzeroCount: header.nonzeroCount, elementCount: elementCount, into: &pairs)
      case .conditioned:
        guard let contexts, contexts.codes.count == elementCount else {
          throw DeltaStoreError.corruptResidual(
            reason: "a conditioned residual is decoded against its parent's rounding contexts, none given")
        }
        try ConditionedResidualCoding.decode(
          payload, nonzeroCount: header.nonzeroCount, contexts: contexts.codes, bucketCount: contexts.bucketCount,
          into: &pairs)
      }
    }
    guard pairs.positions.count == header.nonzeroCount else {
      throw DeltaStoreError.corruptResidual(
        reason: "\(pairs.positions.count) nonzero differences, header says \(header.nonzeroCount)")
    }
    return DecodedResidual(positions: pairs.positions, values: pairs.values, width: width, encoding: encoding)
  }

  /// A residual blob's header, checked against the tensor it belongs to before anything is
  /// decompressed: version, encoding, element width and count, and a payload size that fits.
  private struct Header {
    var kind: Kind
    var denseWidth: Int
    var nonzeroCount: Int
    var payloadByteCount: Int
    var payloadOffset: Int

    init(_ encoded: [UInt8], width: Int, dtype: DType, elementCount: Int) throws {
      guard elementCount >= 0, elementCount <= Int(UInt32.max) else {
        throw DeltaStoreError.corruptResidual(reason: "\(elementCount) elements: more than positions hold")
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
      let (n, nonzero, payloadByteCount) = try encoded.withUnsafeBufferPointer {
        (try readLEB($0, &cursor), try readLEB($0, &cursor), try readLEB($0, &cursor))
      }
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
      case .rice:
        guard denseWidth == 0 else { throw corrupt("rice blob with width \(denseWidth)") }
        expectedPayload = RiceCoding.payloadBounds(elementCount: elementCount, nonzeroCount: count)
      case .conditioned:
        guard denseWidth == 0 else { throw corrupt("conditioned blob with width \(denseWidth)") }
        guard dtype == .f32 else { throw corrupt("conditioned blob for \(dtype.rawValue), only F32 has one") }
        expectedPayload = ConditionedResidualCoding.payloadBounds(elementCount: elementCount, nonzeroCount: count)
      }
      guard payloadByteCount <= UInt64(expectedPayload.upperBound),
        expectedPayload.contains(Int(payloadByteCount))
      else { throw corrupt("payload of \(payloadByteCount) bytes") }
      self.kind = kind
      self.denseWidth = denseWidth
      self.nonzeroCount = count
      self.payloadByteCount = Int(payloadByteCount)
      self.payloadOffset = cursor
    }
  }

  /// Two bits per element (0 same, 1 one up, 2 one down).
  private static func decodeTwoBit(
    _ payload: UnsafeBufferPointer<UInt8>, elementCount: Int, into pairs: inout (positions: [UInt32], values: [Int64])
  ) throws {
    // Most bytes are zero (four unchanged elements); skip them whole.
    for j in 0..<payload.count where payload[j] != 0 {
      var codes = payload[j]
      for i in (j * 4)..<min(j * 4 + 4, elementCount) {
        switch codes & 3 {
        case 0: break
        case 1:
          pairs.positions.append(UInt32(i))
          pairs.values.append(1)
        case 2:
          pairs.positions.append(UInt32(i))
          pairs.values.append(-1)
        default: throw DeltaStoreError.corruptResidual(reason: "two-bit code 3 at element \(i)")
        }
        codes >>= 2
      }
    }
    let tail = elementCount & 3
    if tail != 0, let lastByte = payload.last, lastByte >> UInt8(tail * 2) != 0 {
      throw DeltaStoreError.corruptResidual(reason: "nonzero padding bits")
    }
  }

  /// Gap-coded positions, then zigzag differences, all LEB128.
  private static func decodeSparse(
    _ payload: UnsafeBufferPointer<UInt8>, nonzeroCount count: Int, elementCount: Int,
    into pairs: inout (positions: [UInt32], values: [Int64])
  ) throws {
    var p = 0
    var position = -1
    for _ in 0..<count {
      let gap = try readLEB(payload, &p)
      guard gap < UInt64(elementCount), position + 1 + Int(gap) < elementCount else {
        throw DeltaStoreError.corruptResidual(reason: "position past element \(elementCount)")
      }
      position += 1 + Int(gap)
      pairs.positions.append(UInt32(position))
    }
    for _ in 0..<count {
      let z = try readLEB(payload, &p)
      pairs.values.append(Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1))))
    }
    guard p == payload.count else {
      throw DeltaStoreError.corruptResidual(reason: "\(payload.count - p) bytes after the values")
    }
  }

  /// One signed `width`-byte difference per element; stops past `count` nonzero ones (the
  /// caller then reports the mismatch).
  private static func decodeDense(
    _ payload: UnsafeBufferPointer<UInt8>, width denseWidth: Int, nonzeroCount count: Int, elementCount: Int,
    into pairs: inout (positions: [UInt32], values: [Int64])
  ) {
    for i in 0..<elementCount {
      var u: UInt64 = 0
      for b in 0..<denseWidth { u |= UInt64(payload[i * denseWidth + b]) << UInt64(8 * b) }
      let d = signExtend(u, bits: denseWidth * 8)
      if d != 0 {
        pairs.positions.append(UInt32(i))
        pairs.values.append(d)
      }
      guard pairs.positions.count <= count else { break }
    }
  }

  /// Moves each element at `positions` by its difference in `values`, in ordered-integer space.
  fileprivate static func add<Word: FixedWidthInteger & UnsignedInteger>(
    _ positions: ArraySlice<UInt32>, _ values: ArraySlice<Int64>, to raw: UnsafeMutableRawPointer, as _: Word.Type,
    _ encoding: OrderedBits.Encoding
  ) {
    let size = MemoryLayout<Word>.size
    for (position, d) in zip(positions, values) {
      let offset = Int(position) * size
      let bits = Word(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Word.self))
      // Adding modulo 2^w is the same as adding to the sign-extended ordered integer and
      // reducing afterwards.
      let moved = OrderedBits.map(
        OrderedBits.map(bits, encoding) &+ Word(truncatingIfNeeded: d), encoding)
      raw.storeBytes(of: moved.littleEndian, toByteOffset: offset, as: Word.self)
    }
  }

  // MARK: - Differences

  /// The nonzero differences `ordered(committed) − ordered(reconstructed)` of a tensor, in
  /// element order, with what choosing a payload needs.
  private struct Differences {
    var positions: [Int] = []
    var values: [Int64] = []
    var maxMagnitude: UInt64 = 0
    /// The size of the sparse payload: LEB128 gaps, then zigzag LEB128 values.
    var sparseByteCount = 0

    init(
      _ committed: UnsafeRawBufferPointer, _ reconstructed: UnsafeRawBufferPointer, width: Int,
      encoding: OrderedBits.Encoding
    ) {
      guard let c = committed.baseAddress, let r = reconstructed.baseAddress else { return }
      let n = committed.count / width
      switch width {
      case 1: scan(c, r, n, as: UInt8.self, encoding)
      case 2: scan(c, r, n, as: UInt16.self, encoding)
      case 4: scan(c, r, n, as: UInt32.self, encoding)
      default: scan(c, r, n, as: UInt64.self, encoding)
      }
      var last = -1
      for (i, d) in zip(positions, values) {
        maxMagnitude = max(maxMagnitude, d.magnitude)
        sparseByteCount += lebByteCount(UInt64(i - last - 1)) + lebByteCount(zigzag(d))
        last = i
      }
    }

    /// Fills `positions` and `values` in two passes: a vectorized count of the differing
    /// elements, then a fill of arrays of exactly that size (no appends in the loop).
    private mutating func scan<Word: FixedWidthInteger & UnsignedInteger>(
      _ committed: UnsafeRawPointer, _ reconstructed: UnsafeRawPointer, _ n: Int,
      as _: Word.Type, _ encoding: OrderedBits.Encoding
    ) {
      let size = MemoryLayout<Word>.size
      @inline(__always) func words(_ i: Int) -> (Word, Word) {
        (
          committed.loadUnaligned(fromByteOffset: i &* size, as: Word.self),
          reconstructed.loadUnaligned(fromByteOffset: i &* size, as: Word.self)
        )
      }
      // Counted as bytes of a bool so that LLVM keeps the loop branch-free and vectorizes it.
      var count = 0
      for i in 0..<n {
        let (c, r) = words(i)
        count &+= Int(unsafeBitCast(c != r, to: UInt8.self))
      }
      var values: [Int64] = []
      positions = [Int](unsafeUninitializedCapacity: count) { positions, filled in
        values = [Int64](unsafeUninitializedCapacity: count) { values, valueCount in
          for i in 0..<n {
            let (c, r) = words(i)
            // Equal patterns are equal ordered integers (the map is a bijection).
            guard c != r else { continue }
            let difference =
              OrderedBits.map(Word(littleEndian: c), encoding)
              &- OrderedBits.map(Word(littleEndian: r), encoding)
            positions.initializeElement(at: filled, to: i)
            values.initializeElement(
              at: filled,
              to: signExtend(UInt64(truncatingIfNeeded: difference), bits: Word.bitWidth))
            filled += 1
          }
          // The buffers are not ours: another thread writing them would break the count.
          precondition(filled == count, "tensor changed while its residual was encoded")
          valueCount = filled
        }
      }
      self.values = values
    }
  }

  // MARK: - Payloads

  /// The raw payload of `kind`: exactly `rawByteCount` bytes, written through one buffer.
  private static func makePayload(
    _ kind: Kind, positions: [Int], values: [Int64], elementCount: Int, denseWidth: Int,
    rawByteCount: Int
  ) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: rawByteCount) { out, initialized in
      switch kind {
      case .twoBit:
        out.initialize(repeating: 0)
        for (i, d) in zip(positions, values) {
          out[i >> 2] |= (d == 1 ? 1 : 2) << UInt8((i & 3) * 2)
        }
        initialized = rawByteCount
      case .sparse:
        var cursor = 0
        var last = -1
        for i in positions {
          writeLEB(UInt64(i - last - 1), to: out, at: &cursor)
          last = i
        }
        for v in values { writeLEB(zigzag(v), to: out, at: &cursor) }
        initialized = cursor
      case .conditioned:
        preconditionFailure("the conditioned payload is built by ConditionedResidualCoding")
      case .rice:
        out.initialize(repeating: 0)
        RiceCoding.encode(positions: positions, values: values, into: out)
        initialized = rawByteCount
      case .dense:
        out.initialize(repeating: 0)
        for (i, v) in zip(positions, values) {
          let u = UInt64(bitPattern: v)
          for b in 0..<denseWidth {
            out[i * denseWidth + b] = UInt8(truncatingIfNeeded: u >> UInt64(8 * b))
          }
        }
        initialized = rawByteCount
      }
    }
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

  /// The LEB128 length of `v`: one byte per 7 significant bits, at least one.
  @inline(__always)
  private static func lebByteCount(_ v: UInt64) -> Int {
    (64 - (v | 1).leadingZeroBitCount + 6) / 7
  }

  static func appendLEB(_ v: UInt64, to out: inout [UInt8]) {
    var v = v
    while v >= 0x80 {
      out.append(UInt8(truncatingIfNeeded: v) | 0x80)
      v >>= 7
    }
    out.append(UInt8(v))
  }

  /// Writes `v` as LEB128 at `cursor`; the caller sized `out` with `lebByteCount`.
  @inline(__always)
  private static func writeLEB(
    _ v: UInt64, to out: UnsafeMutableBufferPointer<UInt8>, at cursor: inout Int
  ) {
    var v = v
    while v >= 0x80 {
      out.initializeElement(at: cursor, to: UInt8(truncatingIfNeeded: v) | 0x80)
      cursor += 1
      v >>= 7
    }
    out.initializeElement(at: cursor, to: UInt8(v))
    cursor += 1
  }

  /// Reads an unsigned LEB128 of at most 10 bytes that fits in 64 bits.
  static func readLEB(_ bytes: UnsafeBufferPointer<UInt8>, _ cursor: inout Int) throws
    -> UInt64
  {
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
}

/// A residual's nonzero differences in element order, ready to be applied in pieces: the
/// checkout of a long chain applies several states a row block at a time while it is in cache.
package struct DecodedResidual: Sendable {
  /// Element indices, ascending.
  package let positions: [UInt32]
  let values: [Int64]
  let width: Int
  let encoding: OrderedBits.Encoding

  package var count: Int { positions.count }

  /// The entries whose elements lie in `elements`, from `start` on (a cursor a caller advances
  /// block by block).
  package func entries(in elements: Range<Int>, from start: Int) -> Range<Int> {
    var end = start
    while end < positions.count && Int(positions[end]) < elements.upperBound { end += 1 }
    return start..<end
  }

  /// Moves the elements of `entries` by their differences; `raw` is the whole tensor's first byte.
  package func add(to raw: UnsafeMutableRawPointer, entries: Range<Int>) {
    let p = positions[entries]
    let v = values[entries]
    switch width {
    case 1: ResidualCodec.add(p, v, to: raw, as: UInt8.self, encoding)
    case 2: ResidualCodec.add(p, v, to: raw, as: UInt16.self, encoding)
    case 4: ResidualCodec.add(p, v, to: raw, as: UInt32.self, encoding)
    default: ResidualCodec.add(p, v, to: raw, as: UInt64.self, encoding)
    }
  }
}
