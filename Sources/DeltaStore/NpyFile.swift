import Foundation

/// A 1-D or 2-D array read from a NumPy `.npy` file, widened to Float64 (exact for `<f4`).
public struct NpyArray: Sendable, Equatable {
  /// The shape as stored: `[count]` or `[rows, columns]`.
  public var shape: [Int]
  /// The elements in C (row-major) order.
  public var values: [Double]

  package init(shape: [Int], values: [Double]) {
    self.shape = shape
    self.values = values
  }
}

/// NumPy `.npy` reading and writing (format versions 1.0, 2.0, 3.0; dtypes `<f4`, `<f8`; C order).
///
/// Layout (numpy/lib/format.py): the magic `\x93NUMPY`, a major and a minor version byte, the header
/// length (u16 little-endian in 1.0, u32 in 2.0/3.0), then the header, a Python dict literal
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }` padded with spaces and ended with
/// `\n` (Latin-1 in 1.0/2.0, UTF-8 in 3.0), then the raw elements.
public enum NpyFile {
  static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY

  /// Reads a `.npy` file.
  /// - Parameter path: the file.
  /// - Returns: the shape and the elements widened to Float64.
  /// - Throws: a ``DeltaStoreError`` naming the file, for every check in order: magic, version, header
  ///   length, header syntax and keys, dtype, fortran order, shape, exact data length.
  public static func read(from path: String) throws -> NpyArray {
    let data: Data
    do {
      // Read, not mapped: a file truncated under a mapping would kill mvc with SIGBUS. A regular
      // file only (a FIFO or device would block or never end).
      data = Data(try ReadOnlyFile.contents(of: path, followSymlink: true))
    } catch {
      throw DeltaStoreError.npyUnreadable(path: path, reason: error.localizedDescription)
    }
    return try parse(data, path: path)
  }

  /// Parses the bytes of a `.npy` file; `path` is only used in errors.
  package static func parse(_ data: Data, path: String) throws -> NpyArray {
    let bytes = [UInt8](data)
    guard bytes.count >= 8, Array(bytes[0..<6]) == magic else {
      throw DeltaStoreError.npyBadMagic(path: path)
    }
    let major = Int(bytes[6])
    let minor = Int(bytes[7])
    guard minor == 0, (1...3).contains(major) else {
      throw DeltaStoreError.npyUnsupportedVersion(path: path, major: major, minor: minor)
    }
    let lengthFieldSize = major == 1 ? 2 : 4
    let prefixSize = 8 + lengthFieldSize
    guard bytes.count >= prefixSize else {
      // Not even the length field is complete: report its own size.
      throw DeltaStoreError.npyTruncatedHeader(
        path: path, declaredByteCount: lengthFieldSize, availableByteCount: bytes.count - 8)
    }
    var headerLength = 0
    for i in (0..<lengthFieldSize).reversed() {
      headerLength = headerLength << 8 | Int(bytes[8 + i])
    }
    guard headerLength <= bytes.count - prefixSize else {
      throw DeltaStoreError.npyTruncatedHeader(
        path: path, declaredByteCount: headerLength, availableByteCount: bytes.count - prefixSize)
    }
    let headerBytes = bytes[prefixSize..<(prefixSize + headerLength)]
    let text: String
    if major == 3 {
      guard let decoded = String(validating: headerBytes, as: UTF8.self) else {
        throw DeltaStoreError.npyMalformedHeader(path: path, reason: "header is not UTF-8")
      }
      text = decoded
    } else {
      text = String(decoding: headerBytes.map { UInt16($0) }, as: UTF16.self)  // Latin-1
    }
    let header: Header
    do {
      header = try HeaderParser.parse(text)
    } catch let error as HeaderParser.Failure {
      throw DeltaStoreError.npyMalformedHeader(path: path, reason: error.reason)
    }

    let itemSize: Int
    switch header.descr {
    case "<f4": itemSize = 4
    case "<f8": itemSize = 8
    default: throw DeltaStoreError.npyUnsupportedDType(path: path, descr: header.descr)
    }
    if header.fortranOrder {
      throw DeltaStoreError.npyFortranOrder(path: path, shape: header.shape)
    }
    guard (1...2).contains(header.shape.count) else {
      throw DeltaStoreError.npyUnsupportedShape(path: path, shape: header.shape)
    }
    var elementCount = 1
    for dimension in header.shape {
      let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
      guard !overflow else { throw DeltaStoreError.npyUnsupportedShape(path: path, shape: header.shape) }
      elementCount = product
    }
    let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: itemSize)
    let dataOffset = prefixSize + headerLength
    let available = bytes.count - dataOffset
    guard !overflow, byteCount == available else {
      throw DeltaStoreError.npyDataLengthMismatch(
        path: path, expectedByteCount: overflow ? Int.max : byteCount, actualByteCount: available)
    }

    var values = [Double](repeating: 0, count: elementCount)
    bytes.withUnsafeBytes { raw in
      for i in 0..<elementCount {
        let offset = dataOffset + i * itemSize
        if itemSize == 4 {
          let bits = UInt32(
            littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
          values[i] = Double(Float(bitPattern: bits))
        } else {
          let bits = UInt64(
            littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
          values[i] = Double(bitPattern: bits)
        }
      }
    }
    return NpyArray(shape: header.shape, values: values)
  }

  /// Writes Float64 elements as a `<f8` `.npy` file (format 1.0, or 2.0 if the header needs it).
  /// - Parameters:
  ///   - values: the elements in C order.
  ///   - shape: `[count]` or `[rows, columns]`; its product must equal `values.count`.
  ///   - path: the file, replaced atomically (temporary file + rename).
  /// - Throws: ``DeltaStoreError/npyUnsupportedShape(path:shape:)``, ``DeltaStoreError/npyUnwritable(path:reason:)``.
  public static func write(_ values: [Double], shape: [Int], to path: String) throws {
    try write(
      descr: "<f8", elementCount: values.count, shape: shape, to: path,
      payload: values.withUnsafeBufferPointer { buffer in
        var data = Data(capacity: buffer.count * 8)
        for value in buffer {
          withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        return data
      })
  }

  /// Writes Float32 elements as a `<f4` `.npy` file; otherwise as the Float64 overload.
  package static func write(_ values: [Float], shape: [Int], to path: String) throws {
    try write(
      descr: "<f4", elementCount: values.count, shape: shape, to: path,
      payload: values.withUnsafeBufferPointer { buffer in
        var data = Data(capacity: buffer.count * 4)
        for value in buffer {
          withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) }
        }
        return data
      })
  }

  /// The bytes of a `<f8` `.npy` file holding `values` (what ``write(_:shape:to:)-(Double)`` writes).
  /// - Throws: ``DeltaStoreError/npyUnsupportedShape(path:shape:)``.
  package static func encode(_ values: [Double], shape: [Int]) throws -> Data {
    var payload = Data(capacity: values.count * 8)
    for value in values {
      withUnsafeBytes(of: value.bitPattern.littleEndian) { payload.append(contentsOf: $0) }
    }
    return try encode(descr: "<f8", elementCount: values.count, shape: shape, path: "-", payload: payload)
  }

  static func write(
    descr: String, elementCount: Int, shape: [Int], to path: String, payload: Data
  ) throws {
    let data = try encode(descr: descr, elementCount: elementCount, shape: shape, path: path, payload: payload)
    do {
      try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    } catch {
      throw DeltaStoreError.npyUnwritable(path: path, reason: error.localizedDescription)
    }
  }

  static func encode(
    descr: String, elementCount: Int, shape: [Int], path: String, payload: Data
  ) throws -> Data {
    guard (1...2).contains(shape.count), shape.allSatisfy({ $0 >= 0 }),
      shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).partialValue }) == elementCount
    else {
      throw DeltaStoreError.npyUnsupportedShape(path: path, shape: shape)
    }
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(\(shape[0]), \(shape[1]))"
    var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
    // numpy pads magic + version + length + header + '\n' to a multiple of 64 bytes.
    var major: UInt8 = 1
    var prefixSize = 10
    if (prefixSize + header.utf8.count + 1 + 63) / 64 * 64 - prefixSize > Int(UInt16.max) {
      major = 2
      prefixSize = 12
    }
    let total = (prefixSize + header.utf8.count + 1 + 63) / 64 * 64
    header += String(repeating: " ", count: total - prefixSize - header.utf8.count - 1) + "\n"
    var data = Data(magic)
    data.append(contentsOf: [major, 0])
    let headerLength = header.utf8.count
    if major == 1 {
      data.append(contentsOf: [UInt8(headerLength & 0xFF), UInt8(headerLength >> 8)])
    } else {
      data.append(contentsOf: (0..<4).map { UInt8((headerLength >> (8 * $0)) & 0xFF) })
    }
    data.append(contentsOf: Array(header.utf8))
    data.append(payload)
    return data
  }

  // MARK: - Header

  struct Header {
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]
  }

  /// A parser for the dict literals numpy writes: string keys, and values that are strings,
  /// `True`/`False`, or tuples of non-negative integers; trailing commas; whitespace. Exactly the
  /// keys `descr`, `fortran_order`, `shape`, each once (numpy's `_read_array_header` rule).
  struct HeaderParser {
    struct Failure: Error { var reason: String }

    enum Value {
      case string(String)
      case bool(Bool)
      case tuple([Int])
    }

    var scalars: [Unicode.Scalar]
    var position = 0

    static func parse(_ text: String) throws -> Header {
      var parser = HeaderParser(scalars: Array(text.unicodeScalars))
      let dict = try parser.parseDict()
      parser.skipWhitespace()
      guard parser.position == parser.scalars.count else {
        throw Failure(reason: "unexpected text after the dict")
      }
      let expected: Set<String> = ["descr", "fortran_order", "shape"]
      guard Set(dict.map(\.0)) == expected, dict.count == 3 else {
        throw Failure(
          reason: "keys are \(dict.map(\.0)), expected exactly 'descr', 'fortran_order', 'shape'")
      }
      var descr: String?
      var fortran: Bool?
      var shape: [Int]?
      for (key, value) in dict {
        switch (key, value) {
        case ("descr", .string(let s)): descr = s
        case ("fortran_order", .bool(let b)): fortran = b
        case ("shape", .tuple(let t)): shape = t
        default: throw Failure(reason: "'\(key)' has the wrong type")
        }
      }
      guard let descr, let fortran, let shape else { throw Failure(reason: "missing key") }
      return Header(descr: descr, fortranOrder: fortran, shape: shape)
    }

    mutating func skipWhitespace() {
      while position < scalars.count, scalars[position].properties.isWhitespace { position += 1 }
    }

    mutating func expect(_ c: Unicode.Scalar) throws {
      skipWhitespace()
      guard position < scalars.count, scalars[position] == c else {
        throw Failure(reason: "expected '\(c)' at character \(position)")
      }
      position += 1
    }

    mutating func peek() -> Unicode.Scalar? {
      skipWhitespace()
      return position < scalars.count ? scalars[position] : nil
    }

    mutating func parseDict() throws -> [(String, Value)] {
      try expect("{")
      var entries: [(String, Value)] = []
      while peek() != "}" {
        guard case .string(let key) = try parseValue() else {
          throw Failure(reason: "dict keys must be strings")
        }
        try expect(":")
        entries.append((key, try parseValue()))
        if peek() == "," { position += 1 } else { break }
      }
      try expect("}")
      return entries
    }

    mutating func parseValue() throws -> Value {
      guard let c = peek() else { throw Failure(reason: "unexpected end of header") }
      switch c {
      case "'", "\"":
        position += 1
        var s = ""
        while position < scalars.count, scalars[position] != c {
          guard scalars[position] != "\\" else {
            throw Failure(reason: "escapes are not supported")
          }
          s.unicodeScalars.append(scalars[position])
          position += 1
        }
        guard position < scalars.count else { throw Failure(reason: "unterminated string") }
        position += 1
        return .string(s)
      case "(":
        position += 1
        var items: [Int] = []
        var sawComma = false
        while peek() != ")" {
          items.append(try parseInteger())
          if peek() == "," {
            position += 1
            sawComma = true
          } else {
            break
          }
        }
        try expect(")")
        // Python needs a comma in a 1-tuple; "(3)" is the integer 3, which numpy rejects.
        if items.count == 1, !sawComma {
          throw Failure(reason: "'shape' must be a tuple")
        }
        return .tuple(items)
      default:
        for (word, value) in [("True", true), ("False", false)] {
          let end = position + word.unicodeScalars.count
          if end <= scalars.count, String(String.UnicodeScalarView(scalars[position..<end])) == word {
            position = end
            return .bool(value)
          }
        }
        throw Failure(reason: "unexpected '\(c)' at character \(position)")
      }
    }

    mutating func parseInteger() throws -> Int {
      skipWhitespace()
      var digits = ""
      while position < scalars.count, ("0"..."9").contains(scalars[position]) {
        digits.unicodeScalars.append(scalars[position])
        position += 1
      }
      if position < scalars.count, scalars[position] == "L" { position += 1 }  // Python 2 longs
      guard let value = Int(digits) else {
        throw Failure(reason: "shape entries must be non-negative integers")
      }
      return value
    }
  }
}
