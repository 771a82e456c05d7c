/// Byte-plane transposition: element byte k of every element goes to plane k.
///
/// Floats of one tensor share sign and exponent bytes, so planes compress far better than
/// interleaved bytes (the same filter as Blosc and HDF5's shuffle).
public enum ByteShuffle {
  /// Writes the byte planes of `source` to `destination` (same size).
  ///
  /// Bytes beyond the last whole element are copied unchanged at the end.
  public static func shuffle(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    elementByteCount: Int
  ) {
    precondition(source.count == destination.count && elementByteCount > 0)
    let n = source.count / elementByteCount
    for k in 0..<elementByteCount {
      let plane = k * n
      for i in 0..<n { destination[plane + i] = source[i * elementByteCount + k] }
    }
    for j in (n * elementByteCount)..<source.count { destination[j] = source[j] }
  }

  /// Inverts `shuffle(_:into:elementByteCount:)`.
  public static func unshuffle(
    _ source: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer,
    elementByteCount: Int
  ) {
    precondition(source.count == destination.count && elementByteCount > 0)
    let n = source.count / elementByteCount
    for k in 0..<elementByteCount {
      let plane = k * n
      for i in 0..<n { destination[i * elementByteCount + k] = source[plane + i] }
    }
    for j in (n * elementByteCount)..<source.count { destination[j] = source[j] }
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
  public static func unshuffle(_ source: UnsafeRawBufferPointer, elementByteCount: Int) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: source.count) { buffer, count in
      unshuffle(
        source, into: UnsafeMutableRawBufferPointer(buffer), elementByteCount: elementByteCount)
      count = source.count
    }
  }
}
