import Foundation

/// A validated safetensors file, read with `pread` (see `ReadOnlyFile`).
///
/// Opening runs the reference reader's checks in order (huggingface/safetensors
/// `read_metadata` / `Metadata::validate`); a file that opens is safe to slice by `TensorInfo`.
/// Tensor bytes are copied into owned buffers, never read through a mapping, so a file rewritten
/// while it is read ends in `DeltaStoreError.fileChanged`, not in `SIGBUS`.
public final class SafetensorsFile: Sendable {
  /// The reference reader's limit on the header length field.
  package static let maximumHeaderByteCount = 100_000_000
  /// How much `hash(of:hasher:scratch:)` callers read at a time: large enough that `pread`'s
  /// per-call cost vanishes, small enough to stay in cache between the copy and the hash.
  package static let hashingChunkByteCount = 1 << 20

  /// The path the file was opened at; errors name it.
  public let path: String
  /// The open file; tensor reads go through it.
  public let file: ReadOnlyFile
  /// N, the JSON header's byte count as declared by the length field.
  package let headerByteCount: Int
  /// The `__metadata__` map, or `nil` when the header has none.
  package let metadata: [String: String]?
  /// The tensors in header order (the JSON key order).
  public let tensors: [TensorInfo]
  /// The exact 8 + N bytes the file starts with (length field and JSON as found), so a file
  /// whose tensors change only in value can be rewritten byte for byte.
  public let headerBytes: [UInt8]
  private let index: [String: Int]

  /// Opens and validates the file at `path`, which must be a regular file.
  ///
  /// - Parameters:
  ///   - path: The file.
  ///   - followSymlink: Whether a symbolic link at `path` is followed (the user's own path) or
  ///     refused (a shard inside a model folder, a path recorded in a repository).
  /// - Throws: `DeltaStoreError.notRegularFile`, I/O cases, `.fileChanged`, then the first
  ///   failing header check's case.
  public init(path: String, followSymlink: Bool = false) throws {
    self.path = path
    file = try ReadOnlyFile(path: path, followSymlink: followSymlink)
    let fileByteCount = file.byteCount
    // (1) and (2) need the length field before the header can be read.
    let lengthField = try file.read(count: min(8, fileByteCount), at: 0)
    var declared: UInt64 = 0
    if lengthField.count == 8 {
      declared = lengthField.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }
    let prefixByteCount =
      declared <= UInt64(Self.maximumHeaderByteCount) ? min(fileByteCount, 8 + Int(declared)) : lengthField.count
    let prefix = prefixByteCount > lengthField.count ? try file.read(count: prefixByteCount, at: 0) : lengthField
    let parsed: (metadata: [String: String]?, tensors: [TensorInfo], headerByteCount: Int)
    do {
      parsed = try prefix.withUnsafeBytes {
        try Self.parseHeader($0, fileByteCount: fileByteCount, path: path)
      }
    } catch {
      // A file caught half-written by an editor looks truncated: say it is changing instead.
      try file.checkUnchanged()
      throw error
    }
    metadata = parsed.metadata
    tensors = parsed.tensors
    headerByteCount = parsed.headerByteCount
    headerBytes = prefix
    var index: [String: Int] = [:]
    for (i, t) in tensors.enumerated() { index[t.name] = i }
    self.index = index
  }

  /// The offset of the data section in the file: 8 + N.
  public var dataStart: Int { 8 + headerByteCount }

  /// The tensor with this name, or `nil`.
  public func tensor(named name: String) -> TensorInfo? {
    index[name].map { tensors[$0] }
  }

  /// The offset of `tensor`'s first byte in the file.
  package func fileOffset(of tensor: TensorInfo) -> Int {
    dataStart + tensor.dataOffsets.lowerBound
  }

  /// The raw little-endian bytes of `tensor`, read into a new array.
  ///
  /// `tensor` must come from this file's `tensors`.
  /// - Throws: `DeltaStoreError.fileChanged` when the file changed since it was opened, or `.io`.
  public func read(_ tensor: TensorInfo) throws -> [UInt8] {
    precondition(dataStart + tensor.dataOffsets.upperBound <= file.byteCount, "tensor is not from this file")
    return try file.read(count: tensor.byteCount, at: fileOffset(of: tensor))
  }

  /// The XXH3-128 hash of `tensor`'s bytes, read through `scratch` a piece at a time.
  ///
  /// - Throws: As `read(_:)`, and `DeltaStoreError.xxhash`.
  package func hash(
    of tensor: TensorInfo, hasher: ContentHasher, scratch: UnsafeMutableRawBufferPointer
  ) throws -> ContentHash {
    precondition(dataStart + tensor.dataOffsets.upperBound <= file.byteCount, "tensor is not from this file")
    return try file.hash(count: tensor.byteCount, at: fileOffset(of: tensor), hasher: hasher, scratch: scratch)
  }

  /// The hash of one tensor with a scratch buffer of its own (for a few tensors; loops over many
  /// pass one `hasher` and `scratch`).
  ///
  /// - Throws: As `hash(of:hasher:scratch:)`.
  package func hash(of tensor: TensorInfo) throws -> ContentHash {
    let scratch = UnsafeMutableRawBufferPointer.allocate(
      byteCount: max(1, min(tensor.byteCount, Self.hashingChunkByteCount)), alignment: 64)
    defer { scratch.deallocate() }
    return try hash(of: tensor, hasher: try ContentHasher(), scratch: scratch)
  }

  /// Parses and validates a safetensors header found at the start of `bytes`.
  ///
  /// Runs the reference checks in order: (1) at least 8 bytes; (2) N ≤ 100 000 000 and 8 + N
  /// within the buffer; (3) UTF-8 JSON object, whitespace padding allowed; (4) unique keys,
  /// `__metadata__` string → string; (5) known dtype, non-negative shape, `end ≥ begin`;
  /// (6) sorted by offset, contiguous from 0; (7) Πshape × bits without overflow, divisible by 8,
  /// equal to `end − begin`; (8) 8 + N + last end == `fileByteCount`.
  ///
  /// - Parameters:
  ///   - bytes: At least the first 8 + N bytes of the file (the whole file when mapped).
  ///   - fileByteCount: The size of the whole file.
  ///   - path: The path that errors name.
  /// - Returns: The metadata, the tensors in header order, and N.
  /// - Throws: The `DeltaStoreError` case of the first failing check.
  package static func parseHeader(
    _ bytes: UnsafeRawBufferPointer, fileByteCount: Int, path: String
  ) throws -> (metadata: [String: String]?, tensors: [TensorInfo], headerByteCount: Int) {
    // (1)
    guard fileByteCount >= 8, bytes.count >= 8 else {
      throw DeltaStoreError.fileTooSmall(path: path, byteCount: min(fileByteCount, bytes.count))
    }
    // (2)
    let declared = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    guard declared <= UInt64(maximumHeaderByteCount) else {
      throw DeltaStoreError.headerTooLarge(
        path: path, declaredByteCount: declared, limit: maximumHeaderByteCount)
    }
    let n = Int(declared)  // ≤ 1e8, so 8 + n cannot overflow
    guard 8 + n <= fileByteCount, 8 + n <= bytes.count else {
      throw DeltaStoreError.headerOutOfBounds(
        path: path, declaredByteCount: declared, fileByteCount: fileByteCount)
    }
    let entries = try headerEntries(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + n)]), path: path)
    let metadata = try metadata(of: entries, path: path)
    // (5)
    var tensors: [TensorInfo] = []
    tensors.reserveCapacity(entries.count)
    for entry in entries where entry.key != "__metadata__" {
      tensors.append(try tensorInfo(name: entry.key, entry.value, path: path))
    }
    let end = try endOfContiguousData(tensors, path: path)
    // (8) end ≤ Int.max from the parse; 8 + n + end may overflow only for absurd offsets
    let (total, overflow) = (8 + n).addingReportingOverflow(end)
    guard !overflow, total == fileByteCount else {
      throw DeltaStoreError.fileSizeMismatch(
        path: path, expected: overflow ? Int.max : total, actual: fileByteCount)
    }
    return (metadata, tensors, n)
  }

  /// The header's JSON object, in file order (checks 3 and 4's duplicate keys).
  private static func headerEntries(
    _ json: UnsafeRawBufferPointer, path: String
  ) throws -> [(key: String, value: HeaderJSON.Value)] {
    // (3)
    guard String(validating: json, as: UTF8.self) != nil else {
      throw DeltaStoreError.headerNotUTF8(path: path)
    }
    guard json.first == UInt8(ascii: "{") else {
      throw DeltaStoreError.invalidHeaderJSON(
        path: path, byteOffset: 8, reason: "header does not start with '{'")
    }
    let root: HeaderJSON.Value
    do {
      root = try HeaderJSON.parse(json)
    } catch {
      switch error {
      case .syntax(let offset, let reason):
        throw DeltaStoreError.invalidHeaderJSON(path: path, byteOffset: 8 + offset, reason: reason)
      case .duplicateKey(let key):
        // (4) duplicates are found while parsing, before any entry is interpreted
        throw DeltaStoreError.duplicateKey(path: path, key: key)
      }
    }
    guard case .object(let entries) = root else {
      throw DeltaStoreError.invalidHeaderJSON(path: path, byteOffset: 8, reason: "not an object")
    }
    return entries
  }

  /// `__metadata__`, a string-to-string map, or nil (check 4).
  private static func metadata(
    of entries: [(key: String, value: HeaderJSON.Value)], path: String
  ) throws -> [String: String]? {
    var metadata: [String: String]?
    for entry in entries where entry.key == "__metadata__" {
      guard case .object(let pairs) = entry.value else {
        throw DeltaStoreError.invalidMetadata(
          path: path, reason: "\(entry.value.kindName), not an object")
      }
      var map: [String: String] = [:]
      for pair in pairs {
        guard case .string(let s) = pair.value else {
          throw DeltaStoreError.invalidMetadata(
            path: path, reason: "value of '\(pair.key)' is \(pair.value.kindName), not a string")
        }
        map[pair.key] = s
      }
      metadata = map
    }
    return metadata
  }

  /// Checks 6 and 7, in offset order as the reference does: the tensors' data are contiguous
  /// from 0, each exactly its shape × dtype bytes. Returns where the last one ends.
  private static func endOfContiguousData(_ tensors: [TensorInfo], path: String) throws -> Int {
    let order = tensors.indices.sorted {
      let a = tensors[$0].dataOffsets
      let b = tensors[$1].dataOffsets
      return (a.lowerBound, a.upperBound) < (b.lowerBound, b.upperBound)
    }
    var end = 0
    for i in order {
      let t = tensors[i]
      guard t.dataOffsets.lowerBound == end else {
        throw DeltaStoreError.tensorNotContiguous(
          path: path, tensor: t.name, expectedBegin: end, actualBegin: t.dataOffsets.lowerBound)
      }
      var elements = 1
      for d in t.shape {
        let (p, o) = elements.multipliedReportingOverflow(by: d)
        guard !o else { throw DeltaStoreError.tensorSizeOverflow(path: path, tensor: t.name) }
        elements = p
      }
      let (bits, o) = elements.multipliedReportingOverflow(by: t.dtype.bitCount)
      guard !o else { throw DeltaStoreError.tensorSizeOverflow(path: path, tensor: t.name) }
      guard bits % 8 == 0 else {
        throw DeltaStoreError.tensorBitsNotByteAligned(path: path, tensor: t.name, bitCount: bits)
      }
      guard bits / 8 == t.dataOffsets.count else {
        throw DeltaStoreError.tensorByteCountMismatch(
          path: path, tensor: t.name, expected: bits / 8, actual: t.dataOffsets.count)
      }
      end = t.dataOffsets.upperBound
    }
    return end
  }

  /// Interprets one header entry as a tensor description (check 5).
  private static func tensorInfo(
    name: String, _ value: HeaderJSON.Value, path: String
  ) throws -> TensorInfo {
    guard case .object(let fields) = value else {
      throw DeltaStoreError.invalidTensorEntry(
        path: path, tensor: name, reason: "entry is \(value.kindName), not an object")
    }
    func field(_ key: String) throws -> HeaderJSON.Value {
      guard let v = fields.first(where: { $0.key == key })?.value else {
        throw DeltaStoreError.invalidTensorEntry(
          path: path, tensor: name, reason: "missing '\(key)'")
      }
      return v
    }
    let dtypeValue = try field("dtype")
    guard case .string(let dtypeName) = dtypeValue else {
      throw DeltaStoreError.unknownDType(path: path, tensor: name, dtype: dtypeValue.kindName)
    }
    guard let dtype = DType(rawValue: dtypeName) else {
      throw DeltaStoreError.unknownDType(path: path, tensor: name, dtype: dtypeName)
    }
    let shapeValue = try field("shape")
    guard case .array(let dims) = shapeValue else {
      throw DeltaStoreError.invalidShape(
        path: path, tensor: name, reason: "\(shapeValue.kindName), not a list")
    }
    var shape: [Int] = []
    shape.reserveCapacity(dims.count)
    for d in dims {
      guard let v = d.nonNegativeInt else {
        throw DeltaStoreError.invalidShape(
          path: path, tensor: name, reason: "\(d.kindName) is not a non-negative integer")
      }
      shape.append(v)
    }
    let offsetsValue = try field("data_offsets")
    guard case .array(let offsets) = offsetsValue, offsets.count == 2 else {
      throw DeltaStoreError.invalidDataOffsets(
        path: path, tensor: name, reason: "not a list of two integers")
    }
    guard let begin = offsets[0].nonNegativeInt, let end = offsets[1].nonNegativeInt else {
      throw DeltaStoreError.invalidDataOffsets(
        path: path, tensor: name, reason: "offsets must be non-negative integers")
    }
    guard end >= begin else {
      throw DeltaStoreError.invalidDataOffsets(
        path: path, tensor: name, reason: "end \(end) is before begin \(begin)")
    }
    return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end)
  }
}
