import DeltaStore
import TestSupport
import Testing

/// A copy of `ResidualCodec.encode` as it was before the fast paths (commit 9315434), the
/// reference its output bytes must equal.
private enum ReferenceResidualCodec {
  private static let formatVersion: UInt8 = 1

  private enum Kind: UInt8 {
    case twoBit = 1
    case sparse = 2
    case dense = 3
  }

  static func encode(
    committed: UnsafeRawBufferPointer, reconstructed: UnsafeRawBufferPointer, dtype: DType,
    compressor: ZstdCompressor? = nil
  ) throws -> [UInt8]? {
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
    return best
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

}

/// An editor's rank-one update: `reconstructed` rounds `W + u·vᵀ` once from Float64,
/// `committed` computes it in Float32 first, so a few percent of the elements differ by an ulp.
private func rankOneEdit(
  rows: Int, cols: Int, seed: UInt64, round: (Double) -> UInt64, width: Int
) -> (committed: [UInt8], reconstructed: [UInt8]) {
  var rng = SplitMix64(seed: seed)
  let w = (0..<(rows * cols)).map { _ in rng.nextGaussian() * 0.02 }
  let u = (0..<rows).map { _ in rng.nextGaussian() * 0.033 }
  let v = (0..<cols).map { _ in rng.nextGaussian() * 0.033 }
  var committed = [UInt8](repeating: 0, count: rows * cols * width)
  var reconstructed = committed
  for r in 0..<rows {
    for c in 0..<cols {
      let i = r * cols + c
      let exact = round(Double(w[i]) + Double(u[r]) * Double(v[c]))
      let single = round(Double(w[i] + u[r] * v[c]))
      for b in 0..<width {
        reconstructed[i * width + b] = UInt8(truncatingIfNeeded: exact >> UInt64(8 * b))
        committed[i * width + b] = UInt8(truncatingIfNeeded: single >> UInt64(8 * b))
      }
    }
  }
  return (committed, reconstructed)
}

private func expectSameEncoding(
  committed: [UInt8], reconstructed: [UInt8], dtype: DType, _ comment: Comment,
  sourceLocation: SourceLocation = #_sourceLocation
) throws {
  let compressor = try ZstdCompressor()
  let (fast, reference) = try committed.withUnsafeBytes { c in
    try reconstructed.withUnsafeBytes { r in
      (
        try ResidualCodec.encode(committed: c, reconstructed: r, dtype: dtype, compressor: compressor),
        try ReferenceResidualCodec.encode(
          committed: c, reconstructed: r, dtype: dtype, compressor: compressor)
      )
    }
  }
  #expect(fast?.bytes == reference, comment, sourceLocation: sourceLocation)
  guard let fast else { return }
  let width = dtype.byteCount ?? 1
  var out = reconstructed
  try out.withUnsafeMutableBytes {
    try ResidualCodec.apply(
      fast.bytes, to: $0, dtype: dtype, elementCount: reconstructed.count / width)
  }
  #expect(out == committed, comment, sourceLocation: sourceLocation)
  // Decoded and applied a block of elements at a time (how checkout replays a chain), block
  // edges anywhere: the same bytes.
  let elementCount = reconstructed.count / width
  let decoded = try ResidualCodec.decode(fast.bytes, dtype: dtype, elementCount: elementCount)
  #expect(decoded.count == fast.nonzeroCount, comment, sourceLocation: sourceLocation)
  var pieces = reconstructed
  pieces.withUnsafeMutableBytes { raw in
    var cursor = 0
    var start = 0
    let block = max(1, elementCount / 7 + 1)
    while start < elementCount {
      let entries = decoded.entries(in: start..<min(elementCount, start + block), from: cursor)
      guard let base = raw.baseAddress else { break }
      decoded.add(to: base, entries: entries)
      cursor = entries.upperBound
      start += block
    }
    #expect(cursor == decoded.count, comment, sourceLocation: sourceLocation)
  }
  #expect(pieces == committed, comment, sourceLocation: sourceLocation)
  let differing = (0..<(committed.count / width)).filter {
    committed[$0 * width..<($0 + 1) * width] != reconstructed[$0 * width..<($0 + 1) * width]
  }.count
  #expect(fast.nonzeroCount == differing, comment, sourceLocation: sourceLocation)
}

@Suite struct ResidualReferenceTests {
  @Test func rankOneF32EditMatchesReferenceBytes() throws {
    let (committed, reconstructed) = rankOneEdit(
      rows: 1024, cols: 4096, seed: 41, round: { UInt64(Float($0).bitPattern) }, width: 4)
    try expectSameEncoding(
      committed: committed, reconstructed: reconstructed, dtype: .f32, "1024×4096 F32")
  }

  @Test(arguments: [DType.f16, .bf16])
  func rankOneHalfEditMatchesReferenceBytes(dtype: DType) throws {
    let round: (Double) -> UInt64 =
      dtype == .f16
      ? { UInt64(FloatConversion.f16Bits($0)) } : { UInt64(FloatConversion.bf16Bits($0)) }
    let (committed, reconstructed) = rankOneEdit(
      rows: 256, cols: 1024, seed: 43, round: round, width: 2)
    try expectSameEncoding(
      committed: committed, reconstructed: reconstructed, dtype: dtype, "\(dtype) rank one")
  }

  /// Every dtype and every payload kind: ±1 (two-bit), a few large moves (sparse), most
  /// elements moved (dense), a single change, and bit patterns that cross sign and NaN.
  @Test(arguments: [DType.f32, .f16, .bf16, .f64, .i32, .u8, .i8, .u16, .i64, .u64, .f8E4M3])
  func everyPayloadKindMatchesReferenceBytes(dtype: DType) throws {
    var rng = SplitMix64(seed: 1000 &+ UInt64(dtype.bitCount))
    let width = dtype.byteCount ?? 1
    for n in [1, 3, 4097] {
      let reconstructed = (0..<(n * width)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
      try expectSameEncoding(
        committed: reconstructed, reconstructed: reconstructed, dtype: dtype, "identical")
      for scenario in ["one", "±1", "±k", "huge", "dense", "patterns"] {
        var committed = reconstructed
        switch scenario {
        case "one": bump(&committed, n / 2, by: 1, dtype: dtype)
        case "patterns":
          for i in 0..<n where rng.next() % 3 == 0 {
            for b in 0..<width { committed[i * width + b] = UInt8(truncatingIfNeeded: rng.next()) }
          }
        default:
          let every: UInt64 = scenario == "dense" ? 1 : 20
          for i in 0..<n where rng.next() % every == 0 {
            let delta: Int64
            switch scenario {
            case "±1": delta = rng.next() & 1 == 0 ? 1 : -1
            case "±k", "dense": delta = Int64(rng.next() % 200) - 100
            default: delta = Int64(bitPattern: rng.next()) >> 3
            }
            bump(&committed, i, by: delta, dtype: dtype)
          }
        }
        try expectSameEncoding(
          committed: committed, reconstructed: reconstructed, dtype: dtype, "\(dtype) \(scenario) n=\(n)")
      }
    }
  }
}
