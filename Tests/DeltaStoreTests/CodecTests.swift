import DeltaStore
import Foundation
import TestSupport
import Testing

/// Raw little-endian bytes of random patterns of `dtype`'s width.
func randomBytes(_ count: Int, _ rng: inout SplitMix64) -> [UInt8] {
  (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

/// Adds `delta` ulps (ordered-integer steps) to element `i` of `raw`.
func bump(_ raw: inout [UInt8], _ i: Int, by delta: Int64, dtype: DType) {
  let w = dtype.byteCount ?? 1
  var bits: UInt64 = 0
  for b in 0..<w { bits |= UInt64(raw[i * w + b]) << UInt64(8 * b) }
  let moved = OrderedBits.bits(
    ordered: OrderedBits.ordered(bits, dtype: dtype) &+ delta, dtype: dtype)
  for b in 0..<w { raw[i * w + b] = UInt8(truncatingIfNeeded: moved >> UInt64(8 * b)) }
}

private func applied(_ encoded: EncodedResidual, to reconstructed: [UInt8], dtype: DType) throws
  -> [UInt8]
{
  var out = reconstructed
  try out.withUnsafeMutableBytes {
    try ResidualCodec.apply(
      encoded.bytes, to: $0, dtype: dtype,
      elementCount: reconstructed.count / (dtype.byteCount ?? 1))
  }
  return out
}

@Suite struct OrderedBitsTests {
  @Test func adjacentFloatsDifferByOneAndMapIsBijective() {
    #expect(OrderedBits.f32(Float(0).bitPattern) == 0)
    #expect(OrderedBits.f32(Float(-0.0).bitPattern) == -1)
    #expect(OrderedBits.f32(Float(1).nextUp.bitPattern) - OrderedBits.f32(Float(1).bitPattern) == 1)
    #expect(
      OrderedBits.f32(Float(-1).bitPattern) - OrderedBits.f32(Float(-1).nextUp.bitPattern) == -1)
    var previous = Int16.min
    var sorted: [(Int16, UInt16)] = (0...UInt16.max).map { (OrderedBits.f16($0), $0) }
    sorted.sort { $0.0 < $1.0 }
    for (k, (o, p)) in sorted.enumerated() {
      #expect(OrderedBits.f16Bits(ordered: o) == p)
      #expect(OrderedBits.ordered(UInt64(p), dtype: .f16) == Int64(o))
      #expect(OrderedBits.bits(ordered: Int64(o), dtype: .f16) == UInt64(p))
      if k > 0 { #expect(o == previous + 1) }
      previous = o
      // Numeric order is kept for non-NaN values.
      if k > 0, case let a = Float(Float16(bitPattern: sorted[k - 1].1)),
        case let b = Float(Float16(bitPattern: p)),
        !a.isNaN, !b.isNaN
      {
        #expect(a <= b)
      }
    }
    #expect(OrderedBits.ordered(0, dtype: .u8) < OrderedBits.ordered(255, dtype: .u8))
    #expect(OrderedBits.ordered(0xFF, dtype: .i8) == -1)
  }
}

@Suite struct ResidualCodecTests {
  @Test(arguments: [DType.f32, .f16, .bf16, .f64, .i32, .u8])
  func roundTripOfMixedDifferences(dtype: DType) throws {
    var rng = SplitMix64(seed: UInt64(dtype.bitCount) &* 77)
    let n = 5000
    let w = dtype.byteCount ?? 1
    let reconstructed = randomBytes(n * w, &rng)
    // Identical buffers need no residual.
    #expect(
      try reconstructed.withUnsafeBytes {
        try ResidualCodec.encode(committed: $0, reconstructed: $0, dtype: dtype)
      } == nil)
    for scenario in ["±1", "±k", "huge", "patterns"] {
      var committed = reconstructed
      var changed = Set<Int>()
      for _ in 0..<(n / 20) {
        let i = Int(rng.next() % UInt64(n))
        switch scenario {
        case "±1": bump(&committed, i, by: rng.next() & 1 == 0 ? 1 : -1, dtype: dtype)
        case "±k": bump(&committed, i, by: Int64(rng.next() % 1000) - 500, dtype: dtype)
        case "huge": bump(&committed, i, by: Int64(bitPattern: rng.next()), dtype: dtype)
        default:
          // NaN, ±inf, −0 and signalling-NaN patterns for floats; extremes for integers.
          let specials: [UInt64] = [
            0x7FF8_0000_0000_0001, 0xFFF0_0000_0000_0000, 0x7F80_0001, 0xFF80_0000, 0x7E01, 0xFC00,
            0x8000, 0x7FC0, 0xFF81, 0,
          ]
          let raw = specials[Int(rng.next() % UInt64(specials.count))]
          for b in 0..<w { committed[i * w + b] = UInt8(truncatingIfNeeded: raw >> UInt64(8 * b)) }
        }
        changed.insert(i)
      }
      let encoded = try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: dtype)
        }
      }
      let e = try #require(encoded, "\(dtype) \(scenario)")
      #expect(e.nonzeroCount <= changed.count)
      #expect(try applied(e, to: reconstructed, dtype: dtype) == committed, "\(dtype) \(scenario)")
    }
  }

  @Test func rankOneEditResidualCost() throws {
    var rng = SplitMix64(seed: 1024)
    let rows = 1024
    let cols = 4096
    let n = rows * cols
    var reconstructed = [Float](repeating: 0, count: n)
    for i in 0..<n { reconstructed[i] = rng.nextGaussian() * 0.02 }
    var committed = reconstructed
    for i in 0..<n where rng.next() % 20 == 0 {
      committed[i] = rng.next() & 1 == 0 ? committed[i].nextUp : committed[i].nextDown
    }
    let encoded = try #require(
      try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: .f32)
        }
      })
    let bitsPerElement = Double(encoded.bytes.count * 8) / Double(n)
    print(
      "residual 1024x4096 F32, 5% ±1 ulp: \(encoded.bytes.count) bytes, \(bitsPerElement) bits/element, encoding \(encoded.bytes[1])"
    )
    #expect(bitsPerElement < 0.45)
    var out = reconstructed
    try out.withUnsafeMutableBytes {
      try ResidualCodec.apply(encoded.bytes, to: $0, dtype: .f32, elementCount: n)
    }
    #expect(out.map(\.bitPattern) == committed.map(\.bitPattern))
  }

  @Test(arguments: [DType.f32, .f16, .bf16, .f64])
  func riceKindRoundTripsAndIsChosenForScatteredUnitDifferences(dtype: DType) throws {
    var rng = SplitMix64(seed: 2 &* UInt64(dtype.bitCount))
    let n = 40_000
    let w = dtype.byteCount ?? 1
    let reconstructed = randomBytes(n * w, &rng)
    for scenario in ["±1", "±k"] {
      var committed = reconstructed
      for i in 0..<n where rng.next() % 60 == 0 {
        bump(
          &committed, i, by: scenario == "±1" ? (rng.next() & 1 == 0 ? 1 : -1) : Int64(rng.next() % 9) - 4, dtype: dtype
        )
      }
      let (rice, plain) = try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          (
            try #require(try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: dtype, allowRice: true)),
            try #require(try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: dtype))
          )
        }
      }
      #expect(!plain.isRiceCoded)
      #expect(try applied(rice, to: reconstructed, dtype: dtype) == committed, "\(dtype) \(scenario)")
      if scenario == "±1" {
        // 1.7% of elements ±1: Rice is chosen and beats the zstd of the LEB128 gaps.
        #expect(rice.isRiceCoded)
        #expect(rice.bytes.count < plain.bytes.count)
      }
    }
  }

  @Test func corruptRiceResidualsThrowAndLeaveBufferUnchanged() throws {
    var rng = SplitMix64(seed: 9)
    let n = 3000
    let reconstructed = randomBytes(n * 4, &rng)
    var committed = reconstructed
    for i in 0..<n where rng.next() % 37 == 0 { bump(&committed, i, by: i % 2 == 0 ? 1 : -3, dtype: .f32) }
    let encoded = try #require(
      try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: .f32, allowRice: true)
        }
      })
    #expect(encoded.isRiceCoded)
    #expect(try applied(encoded, to: reconstructed, dtype: .f32) == committed)
    for _ in 0..<2000 {
      var blob = encoded.bytes
      let i = Int(rng.next() % UInt64(blob.count))
      switch rng.next() % 3 {
      case 0: blob[i] ^= UInt8(1 << (rng.next() % 8))
      case 1: blob.removeSubrange(i...)
      default: blob[i] = UInt8(truncatingIfNeeded: rng.next())
      }
      var target = reconstructed
      do {
        try target.withUnsafeMutableBytes { try ResidualCodec.apply(blob, to: $0, dtype: .f32, elementCount: n) }
      } catch {
        #expect(error is DeltaStoreError)
        #expect(target == reconstructed)
      }
    }
  }

  @Test func corruptResidualsThrowAndLeaveBufferUnchanged() throws {
    var rng = SplitMix64(seed: 5)
    let n = 2000
    let reconstructed = randomBytes(n * 2, &rng)
    var committed = reconstructed
    for i in stride(from: 0, to: n, by: 7) {
      bump(&committed, i, by: Int64(i % 5) - 2, dtype: .bf16)
    }
    let encoded = try #require(
      try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: .bf16)
        }
      })
    // Wrong element count or dtype.
    var out = reconstructed
    #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes {
        try ResidualCodec.apply(
          encoded.bytes, to: UnsafeMutableRawBufferPointer(rebasing: $0[0..<(2 * n - 2)]),
          dtype: .bf16, elementCount: n - 1)
      }
    }
    #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes {
        try ResidualCodec.apply(encoded.bytes, to: $0, dtype: .i8, elementCount: 2 * n)
      }
    }
    for _ in 0..<2000 {
      var blob = encoded.bytes
      let i = Int(rng.next() % UInt64(blob.count))
      switch rng.next() % 3 {
      case 0: blob[i] ^= UInt8(1 << (rng.next() % 8))
      case 1: blob.removeSubrange(i...)
      default: blob[i] = UInt8(truncatingIfNeeded: rng.next())
      }
      var target = reconstructed
      do {
        try target.withUnsafeMutableBytes {
          try ResidualCodec.apply(blob, to: $0, dtype: .bf16, elementCount: n)
        }
      } catch {
        #expect(error is DeltaStoreError)
        #expect(target == reconstructed)
      }
    }
  }
}

@Suite struct ZstdTests {
  @Test func roundTripAndSizeChecks() throws {
    let compressor = try ZstdCompressor(level: 3)
    var rng = SplitMix64(seed: 3)
    let data = (0..<100_000).map { _ in UInt8(rng.next() % 7) }
    let frame = try compressor.compress(data)
    #expect(frame.count < data.count)
    #expect(
      try frame.withUnsafeBytes { try Zstd.decompress($0, expectedByteCount: data.count) } == data)
    let wrong = try #require(throws: DeltaStoreError.self) {
      try frame.withUnsafeBytes { _ = try Zstd.decompress($0, expectedByteCount: data.count - 1) }
    }
    #expect(
      wrong == .zstdContentSizeMismatch(expected: data.count - 1, declared: UInt64(data.count)))
    #expect(throws: DeltaStoreError.self) {
      try (frame + [0]).withUnsafeBytes {
        _ = try Zstd.decompress($0, expectedByteCount: data.count)
      }
    }
    var flipped = frame
    flipped[flipped.count / 2] ^= 0x10
    #expect(throws: DeltaStoreError.self) {
      try flipped.withUnsafeBytes { _ = try Zstd.decompress($0, expectedByteCount: data.count) }
    }
    let empty = try compressor.compress([UInt8]())
    #expect(try empty.withUnsafeBytes { try Zstd.decompress($0, expectedByteCount: 0) } == [])
  }

  @Test func frameClaimingHugeSizeIsRejectedBeforeAllocation() {
    // Magic, descriptor with an 8-byte content size field, window byte, size 2^40, empty raw last block.
    var bomb: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00]
    withUnsafeBytes(of: (UInt64(1) << 40).littleEndian) { bomb.append(contentsOf: $0) }
    bomb += [0x01, 0x00, 0x00]
    let error = #expect(throws: DeltaStoreError.self) {
      try bomb.withUnsafeBytes { _ = try Zstd.decompress($0, expectedByteCount: 4096) }
    }
    #expect(error == .zstdContentSizeMismatch(expected: 4096, declared: 1 << 40))
    // A frame without a content size is refused too.
    #expect(throws: DeltaStoreError.self) {
      try ([0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x00, 0x01, 0x00, 0x00] as [UInt8]).withUnsafeBytes {
        _ = try Zstd.decompress($0, expectedByteCount: 0)
      }
    }
  }

  @Test func fullTensorChunksShuffleAndFactor() throws {
    let compressor = try ZstdCompressor()
    var rng = SplitMix64(seed: 11)
    let floats = rng.gaussianArray(count: 10_001, scale: 0.02)
    let raw = floats.withUnsafeBytes { Array($0) }
    let planes = raw.withUnsafeBytes { ByteShuffle.shuffle($0, elementByteCount: 4) }
    #expect(planes.withUnsafeBytes { ByteShuffle.unshuffle($0, elementByteCount: 4) } == raw)
    let odd: [UInt8] = Array(0..<11)
    let shuffled = odd.withUnsafeBytes { ByteShuffle.shuffle($0, elementByteCount: 4) }
    #expect(shuffled == [0, 4, 1, 5, 2, 6, 3, 7, 8, 9, 10])
    #expect(shuffled.withUnsafeBytes { ByteShuffle.unshuffle($0, elementByteCount: 4) } == odd)

    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode($0, dtype: .f32, chunkByteCount: 4096, compressor: compressor)
    }
    #expect(chunks.count == (raw.count + 4095) / 4096)
    var out = [UInt8](repeating: 0, count: raw.count)
    try out.withUnsafeMutableBytes {
      try FullTensorCodec.decode(chunks: chunks, into: $0, dtype: .f32, chunkByteCount: 4096)
    }
    #expect(out == raw)
    #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(
          chunks: Array(chunks.dropLast()), into: $0, dtype: .f32, chunkByteCount: 4096)
      }
    }
    #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(
          chunks: chunks.reversed(), into: $0, dtype: .f32, chunkByteCount: 4096)
      }
    }

    let factor = try floats.withUnsafeBufferPointer {
      try FactorCodec.encode($0, compressor: compressor)
    }
    #expect(
      try factor.withUnsafeBytes { try FactorCodec.decode($0, elementCount: floats.count) }
        == floats)
    #expect(throws: DeltaStoreError.self) {
      try factor.withUnsafeBytes { try FactorCodec.decode($0, elementCount: floats.count + 1) }
    }
  }
}

@Suite struct ContentHashTests {
  @Test func streamingMatchesOneShotAndStringRoundTrips() throws {
    var rng = SplitMix64(seed: 9)
    let data = randomBytes(100_003, &rng)
    let whole = data.withUnsafeBytes { ContentHash.of($0) }
    let hasher = try ContentHasher()
    try data.withUnsafeBytes { b in
      for start in stride(from: 0, to: b.count, by: 7777) {
        try hasher.update(UnsafeRawBufferPointer(rebasing: b[start..<min(b.count, start + 7777)]))
      }
    }
    #expect(hasher.finalize() == whole)
    let s = whole.description
    #expect(s.hasPrefix("xxh3-128:") && s.count == 9 + 32)
    #expect(ContentHash(string: s) == whole)
    #expect(
      ContentHash(string: s.uppercased().replacingOccurrences(of: "XXH3-128:", with: "xxh3-128:"))
        == whole)
    #expect(ContentHash(string: "xxh3-128:123") == nil)
    #expect(ContentHash(string: "sha256:" + String(repeating: "0", count: 32)) == nil)
    let json = try JSONEncoder().encode([whole])
    #expect(try JSONDecoder().decode([ContentHash].self, from: json) == [whole])
    // XXH3-128 of the empty input (xxHash's published test vector).
    #expect(
      ContentHash.of(UnsafeRawBufferPointer(start: nil, count: 0)).description
        == "xxh3-128:99aa06d3014798d86001c324468d497f")
  }
}
