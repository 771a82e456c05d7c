/// Byte-plane transposition: element byte k of every element goes to plane k.
///
/// Floats of one tensor share sign and exponent bytes, so planes compress far better than
/// interleaved bytes (the same filter as Blosc and HDF5's shuffle).
///
/// Widths 2, 4 and 8 have their own loops over unsafe pointers: one pass that reads every plane
/// and writes whole little-endian words (or the reverse), which LLVM vectorizes; the per-byte
/// bounds-checked loops they replace cost more than zstd itself on checkout.
public enum ByteShuffle {
  /// Writes the byte planes of `source` to `destination` (same size).
  ///
  /// Bytes beyond the last whole element are copied unchanged at the end.
  public static func shuffle(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    elementByteCount: Int
  ) {
    transpose(
      source, into: destination, elementByteCount,
      kernels: (shuffle2, shuffle4, shuffle8, shuffleAnyWidth))
  }

  /// Inverts `shuffle(_:into:elementByteCount:)`.
  public static func unshuffle(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    elementByteCount: Int
  ) {
    transpose(
      source, into: destination, elementByteCount,
      kernels: (unshuffle2, unshuffle4, unshuffle8, unshuffleAnyWidth))
  }

  /// Unshuffles part of a shuffled buffer: `bytes` sit at `offset` in the shuffled form of
  /// `destination` and are written to their interleaved positions there.
  ///
  /// Calling this for pieces that together cover the shuffled bytes once, in any order, equals
  /// `unshuffle(_:into:elementByteCount:)`, so a decoder can scatter each output window without
  /// a buffer of the whole size. Each plane byte is merged into its element's word (vectorizable
  /// word loads and stores) rather than stored alone at a stride.
  static func unshuffle(
    _ bytes: UnsafeRawBufferPointer, shuffledOffset offset: Int,
    into destination: UnsafeMutableRawBufferPointer, elementByteCount width: Int
  ) {
    precondition(offset >= 0 && bytes.count <= destination.count - offset && width > 0)
    guard let dst = destination.baseAddress, var src = bytes.baseAddress else { return }
    let n = destination.count / width
    var position = offset
    let end = offset + bytes.count
    while position < end {
      guard position < n * width else {
        // Bytes beyond the last whole element sit at the same place in both forms.
        (dst + position).copyMemory(from: src, byteCount: end - position)
        return
      }
      let k = position / n
      let first = position - k * n  // element index within plane k
      let count = min(end - position, n - first)
      let element = dst + first * width
      switch width {
      case 1: element.copyMemory(from: src, byteCount: count)
      case 2: mergePlane(src, count, plane: k, into: element, as: UInt16.self)
      case 4: mergePlane(src, count, plane: k, into: element, as: UInt32.self)
      case 8: mergePlane(src, count, plane: k, into: element, as: UInt64.self)
      default:
        for i in 0..<count { put(byte(src, i), element, i &* width &+ k) }
      }
      src += count
      position += count
    }
  }

  /// The byte planes of `source` as a new array.
  public static func shuffle(_ source: UnsafeRawBufferPointer, elementByteCount: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: source.count) { buffer, count in
      shuffle(
        source, into: UnsafeMutableRawBufferPointer(buffer), elementByteCount: elementByteCount)
      count = source.count
    }
  }

  /// The interleaved bytes of the planes in `source` as a new array.
  package static func unshuffle(_ source: UnsafeRawBufferPointer, elementByteCount: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: source.count) { buffer, count in
      unshuffle(
        source, into: UnsafeMutableRawBufferPointer(buffer), elementByteCount: elementByteCount)
      count = source.count
    }
  }

  // MARK: - Kernels
  //
  // `n` whole elements; plane k starts at byte k·n. Words are assembled and split explicitly
  // little-endian, so the result does not depend on the host's byte order.

  private typealias Kernel = (UnsafeRawPointer, UnsafeMutableRawPointer, Int) -> Void

  /// Runs the kernel for `width` on the whole elements, then copies the bytes after them.
  @inline(__always)
  private static func transpose(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    _ width: Int,
    kernels: (
      two: Kernel, four: Kernel, eight: Kernel, any: (UnsafeRawPointer, UnsafeMutableRawPointer, Int, Int) -> Void
    )
  ) {
    precondition(source.count == destination.count && width > 0)
    guard let src = source.baseAddress, let dst = destination.baseAddress else { return }
    let n = source.count / width
    switch width {
    case 2: kernels.two(src, dst, n)
    case 4: kernels.four(src, dst, n)
    case 8: kernels.eight(src, dst, n)
    default: kernels.any(src, dst, n, width)
    }
    let tail = n * width
    (dst + tail).copyMemory(from: src + tail, byteCount: source.count - tail)
  }

  // Offsets use wrapping arithmetic (`&+`, `&*`): they are bounded by the buffer size, and
  // overflow checks inside the loops would stop LLVM from vectorizing them.

  private static func shuffle2(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    let d1 = dst + n
    for i in 0..<n {
      let word = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 &* i, as: UInt16.self))
      put(UInt8(truncatingIfNeeded: word), dst, i)
      put(UInt8(truncatingIfNeeded: word &>> 8), d1, i)
    }
  }

  private static func unshuffle2(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    let s1 = src + n
    for i in 0..<n {
      let word = UInt16(byte(src, i)) | UInt16(byte(s1, i)) &<< 8
      dst.storeBytes(of: word.littleEndian, toByteOffset: 2 &* i, as: UInt16.self)
    }
  }

  private static func shuffle4(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    let (d1, d2, d3) = (dst + n, dst + 2 * n, dst + 3 * n)
    for i in 0..<n {
      let word = UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 &* i, as: UInt32.self))
      put(UInt8(truncatingIfNeeded: word), dst, i)
      put(UInt8(truncatingIfNeeded: word &>> 8), d1, i)
      put(UInt8(truncatingIfNeeded: word &>> 16), d2, i)
      put(UInt8(truncatingIfNeeded: word &>> 24), d3, i)
    }
  }

  private static func unshuffle4(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    let (s1, s2, s3) = (src + n, src + 2 * n, src + 3 * n)
    for i in 0..<n {
      let word =
        UInt32(byte(src, i)) | UInt32(byte(s1, i)) &<< 8 | UInt32(byte(s2, i)) &<< 16
        | UInt32(byte(s3, i)) &<< 24
      dst.storeBytes(of: word.littleEndian, toByteOffset: 4 &* i, as: UInt32.self)
    }
  }

  private static func shuffle8(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    for i in 0..<n {
      let word = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 &* i, as: UInt64.self))
      for k in 0..<8 {
        put(UInt8(truncatingIfNeeded: word &>> UInt64(8 &* k)), dst, k &* n &+ i)
      }
    }
  }

  private static func unshuffle8(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    for i in 0..<n {
      var word: UInt64 = 0
      for k in 0..<8 { word |= UInt64(byte(src, k &* n &+ i)) &<< UInt64(8 &* k) }
      dst.storeBytes(of: word.littleEndian, toByteOffset: 8 &* i, as: UInt64.self)
    }
  }

  private static func shuffleAnyWidth(
    _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int, _ width: Int
  ) {
    for k in 0..<width {
      let plane = dst + k * n
      for i in 0..<n { put(byte(src, i &* width &+ k), plane, i) }
    }
  }

  private static func unshuffleAnyWidth(
    _ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, _ n: Int, _ width: Int
  ) {
    for k in 0..<width {
      let plane = src + k * n
      for i in 0..<n { put(byte(plane, i), dst, i &* width &+ k) }
    }
  }

  /// Replaces byte `plane` of `count` consecutive little-endian `Word`s at `dst` with the bytes
  /// at `src`.
  @inline(__always)
  private static func mergePlane<Word: FixedWidthInteger & UnsignedInteger>(
    _ src: UnsafeRawPointer, _ count: Int, plane: Int, into dst: UnsafeMutableRawPointer,
    as _: Word.Type
  ) {
    let shift = Word(truncatingIfNeeded: 8 &* plane)
    let keep = ~(Word(0xFF) &<< shift)
    let size = MemoryLayout<Word>.size
    for i in 0..<count {
      let old = Word(littleEndian: dst.loadUnaligned(fromByteOffset: i &* size, as: Word.self))
      let new = old & keep | Word(byte(src, i)) &<< shift
      dst.storeBytes(of: new.littleEndian, toByteOffset: i &* size, as: Word.self)
    }
  }

  // Raw loads and stores of single bytes: the buffers may be bound to any type (a [Float], an
  // mmap), and byte access needs no binding.
  @inline(__always)
  private static func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
  }

  @inline(__always)
  private static func put(_ b: UInt8, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: b, toByteOffset: offset, as: UInt8.self)
  }
}
