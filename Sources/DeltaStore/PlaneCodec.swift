/// How the chunks of a complete tensor state are encoded: `chunk_encoding` in its `meta.json`.
public enum ChunkEncoding: Int, Sendable, Codable, CaseIterable {
  /// Format 1: the chunk byte-shuffled, then one zstd frame.
  case shuffledZstd = 1
  /// Format 2 (`PlaneCodec`): exponent-aligned byte planes, each stored raw, as a zstd frame or
  /// Huffman-coded, whichever is smallest.
  case planes = 2
}

/// Chunk encoding 2: each float element rotated left by one bit, so that the sign moves to the
/// lowest bit and the exponent's top 8 bits fill the highest byte (bf16's and fp32's whole
/// exponent, ZipNN's byte grouping); then byte planes as `ByteShuffle`. Each plane is stored
/// raw, as one zstd frame (level of the caller's compressor), Huffman-coded (`HuffmanCoder`) or
/// rANS-coded (`RansCoder`), whichever is smallest: the exponent plane codes close to its
/// entropy, the low mantissa planes go raw when nothing compresses them.
///
/// Blob: version (2), element width, rotated (0/1), plane count (= width); then per plane its
/// method (0 raw, 1 zstd, 2 Huffman, 3 rANS) and payload byte count (UInt32, little-endian); then the
/// payloads in plane order; then the bytes after the last whole element, raw. A plane holds one
/// byte per whole element: its size comes from the chunk's size, which the caller knows.
package enum PlaneCodec {
  static let version: UInt8 = 2

  enum Method: UInt8 {
    case raw = 0
    case zstd = 1
    case huffman = 2
    case rans = 3
  }

  /// Whether the elements of `dtype` are rotated: IEEE-style floats of 2, 4 or 8 bytes.
  static func rotates(_ dtype: DType) -> Bool {
    switch dtype {
    case .f16, .bf16, .f32, .f64: return true
    default: return false
    }
  }

  /// Encodes one chunk. `scratch` must hold at least `raw.count` bytes.
  ///
  /// - Throws: `DeltaStoreError.zstd`.
  package static func encode(
    _ raw: UnsafeRawBufferPointer, dtype: DType, scratch: UnsafeMutableRawBufferPointer, compressor: ZstdCompressor
  ) throws -> [UInt8] {
    var buffers = EncodeBuffers()
    try encode(raw, dtype: dtype, scratch: scratch, compressor: compressor, buffers: &buffers)
    return buffers.output
  }

  /// The buffers `encode` writes its trials and its result in: kept by a caller that encodes
  /// many chunks, so that each chunk reuses their pages instead of faulting fresh ones in.
  package struct EncodeBuffers {
    /// The last chunk encoded.
    package var output: [UInt8] = []
    var frame: [UInt8] = []

    package init() {}
  }

  /// Encodes one chunk into `buffers.output` (replacing what it held). `scratch` must hold at
  /// least `raw.count` bytes.
  ///
  /// - Throws: `DeltaStoreError.zstd`.
  package static func encode(
    _ raw: UnsafeRawBufferPointer, dtype: DType, scratch: UnsafeMutableRawBufferPointer, compressor: ZstdCompressor,
    buffers: inout EncodeBuffers
  ) throws {
    let width = dtype.byteCount ?? 1
    let n = raw.count / width
    let rotated = rotates(dtype)
    let planes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<(n * width)])
    transform(UnsafeRawBufferPointer(rebasing: raw[0..<(n * width)]), into: planes, width: width, rotated: rotated)
    let headerSize = 4 + 5 * width
    buffers.output.removeAll(keepingCapacity: true)
    buffers.output.reserveCapacity(headerSize + raw.count + 4096)
    buffers.output += [version, UInt8(width), rotated ? 1 : 0, UInt8(width)]
    buffers.output += repeatElement(0, count: 5 * width)
    for k in 0..<width {
      let plane = UnsafeRawBufferPointer(rebasing: planes[(k * n)..<((k + 1) * n)])
      // Counted by rANS block, once: the plane's histogram is their sum.
      let blockHistograms = RansCoder.blockHistograms(plane)
      var histogram = [Int](repeating: 0, count: 256)
      for block in blockHistograms { for s in 0..<256 { histogram[s] += block[s] } }
      let lengths = HuffmanCoder.codeLengths(histogram)
      let huffmanSize = n > 0 ? HuffmanCoder.encodedByteCount(histogram: histogram, lengths: lengths) : Int.max
      // A plane Huffman halves (an exponent plane) is not worth a zstd pass: its matches cost
      // more than they save on such bytes.
      let frameSize = huffmanSize <= n / 2 ? 0 : try compressor.compress(plane, into: &buffers.frame)
      var method = Method.raw
      var best = n
      if frameSize > 0, frameSize < best { (method, best) = (.zstd, frameSize) }
      if huffmanSize < best { (method, best) = (.huffman, huffmanSize) }
      let start = buffers.output.count
      // rANS (a division per symbol to encode) only where it saves more than 1%: the exponent
      // plane, not the nearly uniform mantissa bytes. Coded straight into the output (no copy
      // of the trial), and dropped again when it is not the smallest.
      if RansCoder.entropyByteCount(histogram) + 256 < best - best / 100 {
        RansCoder.encode(plane, blockHistograms: blockHistograms, into: &buffers.output)
        let ransSize = buffers.output.count - start
        if ransSize < best {
          (method, best) = (.rans, ransSize)
        } else {
          buffers.output.removeLast(ransSize)
        }
      }
      switch method {
      case .raw: buffers.output.append(contentsOf: plane)
      case .zstd: buffers.output += buffers.frame[0..<frameSize]
      case .huffman: HuffmanCoder.encode(plane, histogram: histogram, lengths: lengths, into: &buffers.output)
      case .rans: break
      }
      let size = UInt32(buffers.output.count - start)
      buffers.output[4 + 5 * k] = method.rawValue
      for b in 0..<4 { buffers.output[5 + 5 * k + b] = UInt8(truncatingIfNeeded: size >> UInt32(8 * b)) }
    }
    buffers.output += raw[(n * width)...]
  }

  /// Decodes one chunk into `destination`, whose size the caller's manifest sets. `scratch`
  /// must hold at least `destination.count` bytes.
  ///
  /// - Throws: `.corruptBlob` naming `what` (the tensor and chunk) for a wrong version, width,
  ///   method or size, and for a plane that does not decode to exactly its size.
  /// - Parameter workers: Threads that decode at once: raw planes are copied and rANS planes
  ///   decoded a part at a time, zstd and Huffman planes one per thread, and the planes are
  ///   interleaved by element ranges. The bytes and the errors are the same for any count.
  package static func decode(
    _ blob: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, dtype: DType,
    scratch: UnsafeMutableRawBufferPointer, what: String, workers: Int = 1
  ) throws {
    func corrupt(_ reason: String) -> DeltaStoreError { .corruptBlob(kind: what, reason: reason) }
    let width = dtype.byteCount ?? 1
    let n = destination.count / width
    let tail = destination.count - n * width
    let headerSize = 4 + 5 * width
    guard blob.count >= headerSize else { throw corrupt("\(blob.count) bytes, shorter than its header") }
    guard blob[0] == version else { throw corrupt("chunk encoding \(blob[0]), expected \(version)") }
    guard Int(blob[1]) == width, Int(blob[3]) == width, blob[2] == (rotates(dtype) ? 1 : 0) else {
      throw corrupt("header says width \(blob[1]), rotation \(blob[2]), \(blob[3]) planes for \(dtype.rawValue)")
    }
    var offset = headerSize
    var plans: [(method: Method, range: Range<Int>)] = []
    for k in 0..<width {
      let field = 4 + 5 * k
      guard let method = Method(rawValue: blob[field]) else { throw corrupt("plane \(k) has method \(blob[field])") }
      var size = 0
      for b in 0..<4 { size |= Int(blob[field + 1 + b]) << (8 * b) }
      guard size <= blob.count - offset else { throw corrupt("plane \(k) runs past the end of the blob") }
      plans.append((method, offset..<(offset + size)))
      offset += size
    }
    guard blob.count - offset == tail else {
      throw corrupt("\(blob.count - offset) bytes after the planes, expected \(tail)")
    }
    let planes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<(n * width)])
    for (k, plan) in plans.enumerated() where plan.method == .raw && plan.range.count != n {
      throw corrupt("raw plane \(k) holds \(plan.range.count) bytes, expected \(n)")
    }
    // Planes in order, each on every worker when it splits (raw, rANS); the others (zstd,
    // Huffman: one stream each) on a thread each, beside one another.
    let whole = plans.indices.filter { plans[$0].method == .zstd || plans[$0].method == .huffman }
    try ParallelParts.run(whole.count, workers: workers) { i in
      let k = whole[i]
      let source = UnsafeRawBufferPointer(rebasing: blob[plans[k].range])
      let plane = UnsafeMutableRawBufferPointer(rebasing: planes[(k * n)..<((k + 1) * n)])
      if plans[k].method == .huffman {
        try HuffmanCoder.decode(source, into: plane, what: what + " plane \(k)")
        return
      }
      do {
        try Zstd.decompress(source, into: plane)
      } catch let error as DeltaStoreError {
        throw corrupt("plane \(k): \(error.localizedDescription)")
      }
    }
    for (k, plan) in plans.enumerated() {
      let source = UnsafeRawBufferPointer(rebasing: blob[plan.range])
      let plane = UnsafeMutableRawBufferPointer(rebasing: planes[(k * n)..<((k + 1) * n)])
      switch plan.method {
      case .raw:
        let parts = ParallelParts.ranges(n, parts: workers, minimum: 1 << 20)
        ParallelParts.run(parts.count, workers: workers) { part in
          UnsafeMutableRawBufferPointer(rebasing: plane[parts[part]]).copyMemory(
            from: UnsafeRawBufferPointer(rebasing: source[parts[part]]))
        }
      case .rans:
        try RansCoder.decode(source, into: plane, what: what + " plane \(k)", workers: workers)
      case .zstd, .huffman:
        break
      }
    }
    untransform(
      UnsafeRawBufferPointer(planes), into: UnsafeMutableRawBufferPointer(rebasing: destination[0..<(n * width)]),
      width: width, rotated: rotates(dtype), workers: workers)
    if tail > 0 {
      UnsafeMutableRawBufferPointer(rebasing: destination[(n * width)...]).copyMemory(
        from: UnsafeRawBufferPointer(rebasing: blob[offset...]))
    }
  }

  // MARK: - Rotation and byte planes

  /// Writes the byte planes of the (rotated) elements of `source` to `destination`.
  static func transform(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, width: Int, rotated: Bool
  ) {
    guard rotated, let src = source.baseAddress, let dst = destination.baseAddress else {
      ByteShuffle.shuffle(source, into: destination, elementByteCount: width)
      return
    }
    let n = source.count / width
    switch width {
    case 2: rotateAndSplit(src, dst, n, as: UInt16.self)
    case 4: rotateAndSplit(src, dst, n, as: UInt32.self)
    default: rotateAndSplit(src, dst, n, as: UInt64.self)
    }
  }

  /// Inverts `transform`: each element gathered from its planes and rotated back, in one pass.
  static func untransform(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer, width: Int, rotated: Bool,
    workers: Int = 1
  ) {
    guard rotated, let src = source.baseAddress, let dst = destination.baseAddress else {
      ByteShuffle.unshuffle(source, into: destination, elementByteCount: width)
      return
    }
    let n = source.count / width
    // Element ranges written by different threads: each element's bytes depend on its own alone.
    let parts = ParallelParts.ranges(n, parts: workers, minimum: 1 << 18)
    nonisolated(unsafe) let (from, to) = (src, dst)
    ParallelParts.run(parts.count, workers: workers) { part in
      switch width {
      case 2: mergeAndRotateRight(from, to, n, parts[part], as: UInt16.self)
      case 4: mergeAndRotateRight(from, to, n, parts[part], as: UInt32.self)
      default: mergeAndRotateRight(from, to, n, parts[part], as: UInt64.self)
      }
    }
  }

  @inline(__always)
  private static func mergeAndRotateRight<Word: FixedWidthInteger & UnsignedInteger>(
    _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int, _ elements: Range<Int>, as _: Word.Type
  ) {
    let width = MemoryLayout<Word>.size
    let top = Word(Word.bitWidth - 1)
    for i in elements {
      var word: Word = 0
      for k in 0..<width {
        word |= Word(src.load(fromByteOffset: k &* n &+ i, as: UInt8.self)) &<< Word(8 &* k)
      }
      dst.storeBytes(of: (word &>> 1 | word &<< top).littleEndian, toByteOffset: i &* width, as: Word.self)
    }
  }

  // Offsets use wrapping arithmetic: they are bounded by the buffer size, and overflow checks
  // would keep LLVM from vectorizing the loops.

  @inline(__always)
  private static func rotateAndSplit<Word: FixedWidthInteger & UnsignedInteger>(
    _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int, as _: Word.Type
  ) {
    let width = MemoryLayout<Word>.size
    let top = Word(Word.bitWidth - 1)
    for i in 0..<n {
      let word = Word(littleEndian: src.loadUnaligned(fromByteOffset: i &* width, as: Word.self))
      let rotated = word &<< 1 | word &>> top
      for k in 0..<width {
        dst.storeBytes(
          of: UInt8(truncatingIfNeeded: rotated &>> Word(8 &* k)), toByteOffset: k &* n &+ i, as: UInt8.self)
      }
    }
  }
}
