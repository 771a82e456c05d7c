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
  package func compress(_ source: UnsafeRawBufferPointer) throws -> [UInt8] {
    var output: [UInt8] = []
    let written = try compress(source, into: &output)
    output.removeSubrange(written...)
    return output
  }

  /// Compresses `source` into one frame at the start of `buffer`, which grows (uninitialized) to
  /// zstd's bound when it is smaller and is otherwise reused as it is; returns the frame's size.
  ///
  /// - Throws: `DeltaStoreError.zstd` naming `ZSTD_compress2`.
  package func compress(_ source: UnsafeRawBufferPointer, into buffer: inout [UInt8]) throws -> Int {
    let bound = try check(ZSTD_compressBound(source.count), "ZSTD_compressBound")
    if buffer.count < bound {
      buffer = [UInt8](unsafeUninitializedCapacity: bound) { _, count in count = bound }
    }
    var scratch: UInt8 = 0
    return try withUnsafeMutablePointer(to: &scratch) { empty in
      try buffer.withUnsafeMutableBytes { dst in
        try check(
          ZSTD_compress2(
            context, dst.baseAddress, dst.count, source.baseAddress ?? UnsafeRawPointer(empty),
            source.count),
          "ZSTD_compress2")
      }
    }
  }

  /// Compresses the bytes of `source`.
  package func compress(_ source: [UInt8]) throws -> [UInt8] {
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
  package static func decompress(_ frame: UnsafeRawBufferPointer, expectedByteCount: Int) throws
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
  package static func frameContentSize(_ frame: UnsafeRawBufferPointer, limit: Int) throws -> Int {
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

/// A reusable zstd decompression context for frames that arrive in pieces.
///
/// Wraps `ZSTD_createDCtx` / `ZSTD_freeDCtx` and `ZSTD_decompressStream`. Enforces what the
/// one-shot `Zstd.decompress` enforces: the frame must declare exactly the expected content size
/// (checked from the header before any output is produced), hold exactly one frame with nothing
/// after it, and produce exactly the expected size. Output is handed out in windows of a small
/// buffer the decoder owns, so no buffer of the frame's size is needed. Not thread-safe: use one
/// per thread.
public final class ZstdStreamDecoder {
  /// The default output window: measured on `bench-codecs`, 256 KiB decodes a 16 MiB F32 state
  /// as fast as larger windows while staying in L2.
  public static let defaultWindowByteCount = 256 << 10

  private let context: OpaquePointer
  private let window: UnsafeMutableRawBufferPointer
  /// The first bytes of the frame, kept until they hold a whole frame header.
  private var header: [UInt8] = []

  /// Creates a context and its output window.
  ///
  /// - Parameter windowByteCount: The most bytes handed to `output` at once (at least 1).
  /// - Throws: `DeltaStoreError.zstd` when allocation fails.
  public init(windowByteCount: Int = defaultWindowByteCount) throws {
    precondition(windowByteCount > 0)
    guard let context = ZSTD_createDCtx() else {
      throw DeltaStoreError.zstd(function: "ZSTD_createDCtx", message: "out of memory")
    }
    self.context = context
    window = .allocate(byteCount: windowByteCount, alignment: 64)
    header.reserveCapacity(maxHeaderByteCount)
  }

  deinit {
    ZSTD_freeDCtx(context)
    window.deallocate()
  }

  /// Decompresses one frame that must hold exactly `expectedByteCount` bytes.
  ///
  /// - Parameters:
  ///   - expectedByteCount: The content size the caller's manifest records.
  ///   - pieces: Calls its argument with the frame's bytes in order, in pieces of any size
  ///     (empty ones included); each piece need only stay valid during that call.
  ///   - output: Receives the decompressed bytes in order: the offset of the first byte in the
  ///     frame's content, then up to `windowByteCount` bytes valid only during the call.
  /// - Throws: `.zstdContentSizeMismatch` (checked before any output), `.zstd` carrying zstd's
  ///   message for corrupt data, checksum failures, truncation or bytes after the frame,
  ///   `.zstdOutputSizeMismatch`, or what `pieces` or `output` throw. Output already handed out
  ///   stays handed out when a later error (a checksum, truncation) is found.
  public func decompressFrame(
    expectedByteCount: Int,
    pieces: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void,
    output: (_ offset: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void
  ) throws {
    try check(ZSTD_DCtx_reset(context, ZSTD_reset_session_only), "ZSTD_DCtx_reset")
    var frame = FrameState(expected: expectedByteCount)
    header.removeAll(keepingCapacity: true)
    // `pieces` calls back synchronously, so `output` never outlives this call.
    try withoutActuallyEscaping(output) { output in
      try pieces { piece in
        guard !piece.isEmpty else { return }
        var rest = piece
        if !frame.headerChecked {
          // Keep bytes until the header can be read: the size must be checked before zstd sees
          // the frame, and pieces may be a single byte.
          let taken = min(rest.count, maxHeaderByteCount - header.count)
          header.append(contentsOf: UnsafeRawBufferPointer(rebasing: rest[..<taken]))
          rest = UnsafeRawBufferPointer(rebasing: rest[taken...])
          guard try checkHeader(expectedByteCount, final: header.count == maxHeaderByteCount)
          else { return }
          frame.headerChecked = true
          try header.withUnsafeBytes { try feed($0, &frame, output) }
        }
        try feed(rest, &frame, output)
      }
    }
    if !frame.headerChecked {
      _ = try checkHeader(expectedByteCount, final: true)
      try header.withUnsafeBytes { try feed($0, &frame, output) }
      frame.headerChecked = true
    }
    guard frame.finished else {
      throw DeltaStoreError.zstd(
        function: "ZSTD_decompressStream",
        message: "\(errorString(ZSTD_error_srcSize_wrong)): the frame ends early")
    }
    guard frame.produced == expectedByteCount else {
      throw DeltaStoreError.zstdOutputSizeMismatch(expected: expectedByteCount, actual: frame.produced)
    }
  }

  private struct FrameState {
    var expected: Int
    var headerChecked = false
    var finished = false
    var produced = 0
  }

  /// Whether `header` holds a whole frame header declaring `expected` bytes; `false` when more
  /// bytes are needed, unless `final`.
  ///
  /// - Throws: `.zstdContentSizeMismatch` for another size, no size, or no valid header.
  private func checkHeader(_ expected: Int, final: Bool) throws -> Bool {
    let declared = header.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, $0.count) }
    if declared == contentSizeError {
      // Also the answer while the header is incomplete.
      guard final else { return false }
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expected, declared: nil)
    }
    guard declared != contentSizeUnknown else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expected, declared: nil)
    }
    guard expected >= 0, declared == UInt64(expected) else {
      throw DeltaStoreError.zstdContentSizeMismatch(expected: expected, declared: declared)
    }
    return true
  }

  /// Runs `bytes` through the context, handing each full window (and the last one) to `output`.
  private func feed(
    _ bytes: UnsafeRawBufferPointer, _ frame: inout FrameState,
    _ output: (Int, UnsafeRawBufferPointer) throws -> Void
  ) throws {
    guard !bytes.isEmpty else { return }
    guard !frame.finished else {
      throw DeltaStoreError.zstd(
        function: "ZSTD_decompressStream", message: "\(bytes.count) bytes after the frame")
    }
    var input = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
    var windowFull: Bool
    repeat {
      var out = ZSTD_outBuffer(dst: window.baseAddress, size: window.count, pos: 0)
      let hint = try check(ZSTD_decompressStream(context, &out, &input), "ZSTD_decompressStream")
      frame.finished = hint == 0
      windowFull = out.pos == out.size
      if out.pos > 0 {
        // zstd checks the declared size itself; this keeps `output` inside the caller's buffer
        // even if it did not.
        guard out.pos <= frame.expected - frame.produced else {
          throw DeltaStoreError.zstdOutputSizeMismatch(
            expected: frame.expected, actual: frame.produced + out.pos)
        }
        try output(frame.produced, UnsafeRawBufferPointer(rebasing: window[..<out.pos]))
        frame.produced += out.pos
      }
    } while !frame.finished && (input.pos < input.size || windowFull)
    guard input.pos == input.size else {
      throw DeltaStoreError.zstd(
        function: "ZSTD_decompressStream", message: "\(input.size - input.pos) bytes after the frame")
    }
  }
}

/// `ZSTD_FRAMEHEADERSIZE_MAX` (the macro does not import).
private let maxHeaderByteCount = 18

private func errorString(_ code: ZSTD_ErrorCode) -> String {
  ZSTD_getErrorString(code).map { String(cString: $0) } ?? "unknown zstd error"
}
