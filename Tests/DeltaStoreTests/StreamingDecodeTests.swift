import DeltaStore
import TestSupport
import Testing

/// Today's per-byte loops, kept as the reference the fast kernels must match bit for bit:
/// byte k of element i sits at `i·width + k` interleaved and at `k·n + i` in planes.
private func referenceTranspose(_ source: [UInt8], width: Int, toPlanes: Bool) -> [UInt8] {
  var out = source
  let n = source.count / width
  for k in 0..<width {
    for i in 0..<n {
      let (interleaved, planar) = (i * width + k, k * n + i)
      if toPlanes { out[planar] = source[interleaved] } else { out[interleaved] = source[planar] }
    }
  }
  return out
}

/// Feeds `bytes` to `sink` in random pieces of 0 to `maxPiece` bytes, 1-byte and empty ones
/// included.
private func feedInPieces(
  _ bytes: [UInt8], maxPiece: Int, _ rng: inout SplitMix64,
  _ sink: (UnsafeRawBufferPointer) throws -> Void
) rethrows {
  try bytes.withUnsafeBytes { all in
    var start = 0
    while start < all.count {
      let size: Int
      switch rng.next() % 4 {
      case 0: size = 0
      case 1: size = 1
      default: size = Int(rng.next() % UInt64(maxPiece + 1))
      }
      let end = min(all.count, start + size)
      try sink(UnsafeRawBufferPointer(rebasing: all[start..<end]))
      start = end
    }
    try sink(UnsafeRawBufferPointer(rebasing: all[all.count...]))
  }
}

/// Whether `error` is `DeltaStoreError.zstd`.
private func isZstdError(_ error: DeltaStoreError?) -> Bool {
  if case .zstd = error { return true }
  return false
}

@Suite struct ByteShuffleTests {
  @Test(arguments: [1, 2, 3, 4, 8])
  func kernelsMatchReference(width: Int) {
    var rng = SplitMix64(seed: UInt64(width))
    for count in [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 1001, 4099, 65_543] {
      let source = randomBytes(count, &rng)
      let shuffled = source.withUnsafeBytes { ByteShuffle.shuffle($0, elementByteCount: width) }
      #expect(shuffled == referenceTranspose(source, width: width, toPlanes: true), "width \(width), \(count) bytes")
      let unshuffled = source.withUnsafeBytes {
        ByteShuffle.unshuffle($0, elementByteCount: width)
      }
      #expect(
        unshuffled == referenceTranspose(source, width: width, toPlanes: false), "width \(width), \(count) bytes")
      #expect(shuffled.withUnsafeBytes { ByteShuffle.unshuffle($0, elementByteCount: width) } == source)
    }
  }

  @Test func unalignedBuffersGiveTheSameBytes() {
    var rng = SplitMix64(seed: 99)
    let source = randomBytes(4 * 1000 + 3, &rng)
    for width in [2, 4, 8] {
      for shift in 1..<4 {
        var padded = [UInt8](repeating: 0, count: source.count + shift)
        padded.withUnsafeMutableBytes { dst in
          source.withUnsafeBytes { src in
            ByteShuffle.shuffle(
              src, into: UnsafeMutableRawBufferPointer(rebasing: dst[shift...]),
              elementByteCount: width)
          }
        }
        #expect(Array(padded[shift...]) == referenceTranspose(source, width: width, toPlanes: true))
      }
    }
  }
}

@Suite struct StreamingDecodeTests {
  @Test(arguments: [DType.f32, .f16, .bf16, .f64, .u8])
  func streamingEqualsArrayDecode(dtype: DType) throws {
    var rng = SplitMix64(seed: 17 &* UInt64(dtype.bitCount))
    let compressor = try ZstdCompressor()
    let width = dtype.byteCount ?? 1
    // Small windows make windows straddle plane and chunk boundaries.
    let decoders = [
      try ZstdStreamDecoder(), try ZstdStreamDecoder(windowByteCount: 7),
      try ZstdStreamDecoder(windowByteCount: 1000),
    ]
    // Whole elements plus, for the last case, bytes beyond the last whole element.
    for byteCount in [0, width, 5000 * width, 12_345 * width, 3000 * width + width / 2] {
      // Mostly compressible floats-like bytes: planes of one value each, plus noise.
      let raw = (0..<byteCount).map { i in
        i % width == width - 1 ? UInt8(0x3C) : UInt8(truncatingIfNeeded: rng.next())
      }
      for chunkByteCount in [4096, 1001, 1 << 20] {
        let chunks = try raw.withUnsafeBytes {
          try FullTensorCodec.encode(
            $0, dtype: dtype, chunkByteCount: chunkByteCount, compressor: compressor)
        }
        var expected = [UInt8](repeating: 0, count: byteCount)
        try expected.withUnsafeMutableBytes {
          try FullTensorCodec.decode(
            chunks: chunks, into: $0, dtype: dtype, chunkByteCount: chunkByteCount)
        }
        #expect(expected == raw)
        for decoder in decoders {
          var out = [UInt8](repeating: 0xEE, count: byteCount)
          try out.withUnsafeMutableBytes { destination in
            try FullTensorCodec.decode(
              chunkCount: chunks.count, dtype: dtype, chunkByteCount: chunkByteCount,
              into: destination, decoder: decoder
            ) { i, sink in try feedInPieces(chunks[i], maxPiece: 300, &rng, sink) }
          }
          #expect(out == expected, "\(dtype) \(byteCount) bytes, chunks of \(chunkByteCount)")
        }
      }
    }
  }

  /// Whole chunks (libgit2's buffer of a packed object) decode, in both encodings, to what the
  /// pieces path gives; an encoding-2 chunk handed over in two pieces is refused, not misread.
  @Test(arguments: [ChunkEncoding.shuffledZstd, .planes])
  func wholeChunksDecodeLikePieces(encoding: ChunkEncoding) throws {
    var rng = SplitMix64(seed: 23)
    let compressor = try ZstdCompressor()
    for dtype in [DType.bf16, .f32] {
      let raw = (0..<(9000 * (dtype.byteCount ?? 1))).map { _ in UInt8(truncatingIfNeeded: rng.next() % 7) }
      let chunks = try raw.withUnsafeBytes {
        try FullTensorCodec.encode($0, dtype: dtype, chunkByteCount: 4096, encoding: encoding, compressor: compressor)
      }
      var out = [UInt8](repeating: 0xEE, count: raw.count)
      try out.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decodeWholeChunks(
          chunkCount: chunks.count, dtype: dtype, chunkByteCount: 4096, encoding: encoding, tensor: "t",
          into: destination, chunkBytes: { i, sink in try chunks[i].withUnsafeBytes { try sink($0) } })
      }
      #expect(out == raw, "\(dtype) \(encoding)")
      guard encoding == .planes else { continue }
      let error = #expect(throws: DeltaStoreError.self) {
        try out.withUnsafeMutableBytes { destination in
          try FullTensorCodec.decodeWholeChunks(
            chunkCount: chunks.count, dtype: dtype, chunkByteCount: 4096, encoding: encoding, tensor: "t",
            into: destination,
            chunkBytes: { i, sink in try feedInPieces(chunks[i], maxPiece: 100, &rng, sink) })
        }
      }
      #expect(error != nil)
    }
  }

  @Test func wrongChunkCountIsRefused() throws {
    let raw = [UInt8](repeating: 1, count: 10_000)
    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode($0, dtype: .f32, chunkByteCount: 4096, compressor: ZstdCompressor())
    }
    var out = [UInt8](repeating: 0, count: raw.count)
    let error = #expect(throws: DeltaStoreError.self) {
      try out.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decode(
          chunkCount: chunks.count - 1, dtype: .f32, chunkByteCount: 4096, into: destination
        ) { i, sink in try chunks[i].withUnsafeBytes { try sink($0) } }
      }
    }
    #expect(error == .corruptBlob(kind: "tensor", reason: "2 chunks, expected 3"))
  }

  /// Decodes `frame` in pieces of at most `maxPiece` bytes; returns the output.
  private func decode(
    _ frame: [UInt8], expected: Int, decoder: ZstdStreamDecoder, maxPiece: Int = 64,
    seed: UInt64 = 1
  ) throws -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var out = [UInt8](repeating: 0, count: expected)
    try decoder.decompressFrame(
      expectedByteCount: expected,
      pieces: { try feedInPieces(frame, maxPiece: maxPiece, &rng, $0) },
      output: { offset, bytes in
        out.withUnsafeMutableBytes {
          UnsafeMutableRawBufferPointer(rebasing: $0[offset..<offset + bytes.count])
            .copyMemory(from: bytes)
        }
      })
    return out
  }

  @Test func decoderRefusesWhatTheOneShotPathRefuses() throws {
    let compressor = try ZstdCompressor()
    var rng = SplitMix64(seed: 23)
    let data = (0..<50_000).map { _ in UInt8(rng.next() % 5) }
    let frame = try compressor.compress(data)
    let decoder = try ZstdStreamDecoder(windowByteCount: 4096)
    for maxPiece in [1, 64, 100_000] {
      #expect(try decode(frame, expected: data.count, decoder: decoder, maxPiece: maxPiece) == data)
    }

    // Another declared size: refused from the header, before any output.
    var outputCalls = 0
    let wrongSize = #expect(throws: DeltaStoreError.self) {
      try decoder.decompressFrame(
        expectedByteCount: data.count - 1,
        pieces: { try feedInPieces(frame, maxPiece: 1, &rng, $0) },
        output: { _, _ in outputCalls += 1 })
    }
    #expect(
      wrongSize == .zstdContentSizeMismatch(expected: data.count - 1, declared: UInt64(data.count)))
    #expect(outputCalls == 0)

    // No declared size (a frame header without the content size field).
    let unknown = #expect(throws: DeltaStoreError.self) {
      _ = try decode([0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x00, 0x01, 0x00, 0x00], expected: 0, decoder: decoder)
    }
    #expect(unknown == .zstdContentSizeMismatch(expected: 0, declared: nil))

    // Not a frame at all, and a frame cut inside its header.
    #expect(throws: DeltaStoreError.self) {
      _ = try decode([UInt8](repeating: 7, count: 40), expected: data.count, decoder: decoder)
    }
    let cutHeader = #expect(throws: DeltaStoreError.self) {
      _ = try decode(Array(frame.prefix(3)), expected: data.count, decoder: decoder)
    }
    #expect(cutHeader == .zstdContentSizeMismatch(expected: data.count, declared: nil))

    // Truncated, trailing garbage, a second frame, a corrupted checksum, a corrupted block.
    var badChecksum = frame
    badChecksum[frame.count - 1] ^= 0x01
    var badBlock = frame
    badBlock[frame.count / 2] ^= 0x10
    let broken: [(String, [UInt8])] = [
      ("truncated", Array(frame.dropLast(10))),
      ("truncated checksum", Array(frame.dropLast(1))),
      ("garbage after", frame + [0]),
      ("two frames", frame + frame),
      ("checksum", badChecksum),
      ("block", badBlock),
    ]
    for (name, bytes) in broken {
      for maxPiece in [1, 1000, 1 << 20] {
        let error = #expect(throws: DeltaStoreError.self, "\(name)") {
          _ = try decode(bytes, expected: data.count, decoder: decoder, maxPiece: maxPiece)
        }
        #expect(isZstdError(error), "\(name), pieces ≤ \(maxPiece): \(String(describing: error))")
      }
      // The one-shot path refuses the same bytes.
      #expect(throws: DeltaStoreError.self, "\(name)") {
        try bytes.withUnsafeBytes { _ = try Zstd.decompress($0, expectedByteCount: data.count) }
      }
    }
    // A failed frame leaves the decoder reusable.
    #expect(try decode(frame, expected: data.count, decoder: decoder) == data)
    let empty = try compressor.compress([UInt8]())
    #expect(try decode(empty, expected: 0, decoder: decoder) == [])
  }

  @Test func checksumErrorCarriesZstdMessage() throws {
    let frame = try ZstdCompressor().compress([UInt8](repeating: 9, count: 1000))
    var bad = frame
    bad[bad.count - 2] ^= 0xFF
    let error = #expect(throws: DeltaStoreError.self) {
      _ = try decode(bad, expected: 1000, decoder: ZstdStreamDecoder())
    }
    guard case .zstd(let function, let message) = error else {
      Issue.record("expected a zstd error, got \(String(describing: error))")
      return
    }
    #expect(function == "ZSTD_decompressStream")
    #expect(message.lowercased().contains("checksum"))
  }
}
