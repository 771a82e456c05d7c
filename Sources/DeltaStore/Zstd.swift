internal import CZstd

/// `ZSTD_getFrameContentSize`'s "unknown" and "error" results (the macros do not import).
private let contentSizeUnknown = UInt64.max
private let contentSizeError = UInt64.max - 1

/// Throws `DeltaStoreError.zstd` when `code` is a zstd error code.
@discardableResult
private func check(_ code: Int, _ function: StaticString) throws -> Int {
  if ZSTD_isError(code) != 0 {
    let name = ZSTD_getErrorName(code).map { String(cString: $0) } ?? "unknown zstd error"
    throw DeltaStoreError.zstd(function: "\(function)", message: name)
  }
  return code
}

/// A reusable zstd compression context.
///
/// Wraps `ZSTD_createCCtx` / `ZSTD_freeCCtx`. Frames carry their content size and a checksum
/// (`ZSTD_c_checksumFlag = 1`). Not thread-safe: use one per thread.
public final class ZstdCompressor {
  private let context: OpaquePointer

  /// Creates a context.
  ///
  /// - Parameters:
  ///   - level: The compression level (3 is zstd's default).
  ///   - workerCount: zstd worker threads; 0 compresses on the calling thread.
  /// - Throws: `DeltaStoreError.zstd` when allocation fails or a parameter is refused
  ///   (builds without thread support refuse `workerCount > 0`).
  public init(level: Int32 = 3, workerCount: Int32 = 0) throws {
    guard let context = ZSTD_createCCtx() else {
      throw DeltaStoreError.zstd(function: "ZSTD_createCCtx", message: "out of memory")
    }
    do {
      try check(
        ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, level), "ZSTD_CCtx_setParameter")
      try check(ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1), "ZSTD_CCtx_setParameter")
      if workerCount > 0 {
        try check(
          ZSTD_CCtx_setParameter(context, ZSTD_c_nbWorkers, workerCount), "ZSTD_CCtx_setParameter")
      }
    } catch {
      ZSTD_freeCCtx(context)
      throw error
    }
    self.context = context
  }

  deinit { ZSTD_freeCCtx(context) }

  /// Compresses `source` into one frame that records its content size.
  ///
  /// - Throws: `DeltaStoreError.zstd` naming `ZSTD_compress2`.
  public func compress(_ source: UnsafeRawBufferPointer) throws -> [UInt8] {
    let bound = ZSTD_compressBound(source.count)
    try check(bound, "ZSTD_compressBound")
    var scratch: UInt8 = 0
    return try withUnsafeMutablePointer(to: &scratch) { empty in
      var output = [UInt8](repeating: 0, count: bound)
      let written = try output.withUnsafeMutableBytes { dst in
        try check(
          ZSTD_compress2(
            context, dst.baseAddress, dst.count, source.baseAddress ?? UnsafeRawPointer(empty),
            source.count),
          "ZSTD_compress2")
      }
      output.removeSubrange(written...)
      return output
    }
  }

  /// Compresses the bytes of `source`.
  public func compress(_ source: [UInt8]) throws -> [UInt8] {
    try source.withUnsafeBytes { try compress($0) }
  }
}

/// One-shot zstd decompression that trusts the caller's manifest, not the frame.
public enum Zstd {
  /// Decompresses one frame that must hold exactly `expectedByteCount` bytes.
  ///
  /// The frame's declared content size is checked against `expectedByteCount` before anything is
  /// allocated, so a frame that claims a huge size cannot exhaust memory.
  /// - Throws: `.zstdContentSizeMismatch`, `.zstdOutputSizeMismatch` or `.zstd`.
  public static func decompress(_ frame: UnsafeRawBufferPointer, expectedByteCount: Int) throws
    -> [UInt8]
  {
    try checkContentSize(frame, expectedByteCount: expectedByteCount)
    var output = [UInt8](repeating: 0, count: expectedByteCount)
    try output.withUnsafeMutableBytes { try decompressChecked(frame, into: $0) }
    return output
  }

  /// Decompresses one frame into `destination`, which it must fill exactly.
  ///
  /// - Throws: `.zstdContentSizeMismatch`, `.zstdOutputSizeMismatch` or `.zstd`.
  public static func decompress(
    _ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
  ) throws {
    try checkContentSize(frame, expectedByteCount: destination.count)
    try decompressChecked(frame, into: destination)
  }

  /// The content size a frame declares, when it declares one no larger than `limit`.
  ///
  /// For blobs whose size no manifest records (recorded keys, covariances): the limit keeps a
  /// frame that claims a huge size from deciding the allocation.
  /// - Throws: `.zstdContentSizeMismatch` when the size is unknown or above `limit`.
  public static func frameContentSize(_ frame: UnsafeRawBufferPointer, limit: Int) throws -> Int {
    guard let base = frame.baseAddress else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: limit, declared: nil)
    }
    let declared = ZSTD_getFrameContentSize(base, frame.count)
    guard declared != contentSizeUnknown, declared != contentSizeError, declared <= UInt64(limit) else {
      throw DeltaStoreError.zstdContentSizeMismatch(
        expected: limit, declared: declared == contentSizeUnknown || declared == contentSizeError ? nil : declared)
    }
    return Int(declared)
  }

  private static func checkContentSize(_ frame: UnsafeRawBufferPointer, expectedByteCount: Int)
    throws
  {
    guard let base = frame.baseAddress else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expectedByteCount, declared: nil)
    }
    let declared = ZSTD_getFrameContentSize(base, frame.count)
    guard declared != contentSizeUnknown, declared != contentSizeError else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expectedByteCount, declared: nil)
    }
    guard expectedByteCount >= 0, declared == UInt64(expectedByteCount) else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expectedByteCount, declared: declared)
    }
    // Exactly one frame: trailing frames or garbage would otherwise go unnoticed.
    let frameByteCount = try check(
      ZSTD_findFrameCompressedSize(base, frame.count), "ZSTD_findFrameCompressedSize")
    guard frameByteCount == frame.count else {
      throw DeltaStoreError.zstd(
        function: "ZSTD_findFrameCompressedSize",
        message: "\(frame.count - frameByteCount) bytes after the frame")
    }
  }

  private static func decompressChecked(
    _ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer
  ) throws {
    var scratch: UInt8 = 0
    let written = try withUnsafeMutablePointer(to: &scratch) { empty in
      try check(
        ZSTD_decompress(
          destination.baseAddress ?? UnsafeMutableRawPointer(empty), destination.count,
          frame.baseAddress, frame.count),
        "ZSTD_decompress")
    }
    guard written == destination.count else {
      throw DeltaStoreError.zstdOutputSizeMismatch(expected: destination.count, actual: written)
    }
  }
}
