/// A strict JSON parser for safetensors headers.
///
/// Foundation's `JSONSerialization` loses key order and silently keeps one of two duplicate keys
/// (STYLE.md Part B.5); this parser keeps objects as ordered pairs and rejects duplicates.
/// It follows RFC 8259 exactly (as serde_json does): no comments, no trailing commas, no leading
/// zeros, no lone surrogates, control characters escaped.
enum HeaderJSON {
  /// A parsed JSON value; objects keep their key order.
  indirect enum Value: Sendable {
    case object([(key: String, value: Value)])
    case array([Value])
    case string(String)
    /// A number kept as its source text, so no precision is lost before the caller decides.
    case number(String)
    case bool(Bool)
    case null

    /// The value as a non-negative integer that fits in `Int`, or `nil`.
    var nonNegativeInt: Int? {
      guard case .number(let text) = self, !text.isEmpty,
        text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
      else { return nil }
      return Int(text)
    }

    /// A short name of the value's kind for messages.
    var kindName: String {
      switch self {
      case .object: return "an object"
      case .array: return "an array"
      case .string: return "a string"
      case .number(let t): return "the number \(t)"
      case .bool(let b): return "\(b)"
      case .null: return "null"
      }
    }
  }

  /// Why parsing failed.
  enum Failure: Error {
    case syntax(offset: Int, reason: String)
    case duplicateKey(String)
  }

  /// The deepest nesting accepted; a real header nests three levels.
  static let maximumDepth = 64

  /// Parses one JSON value from `bytes`, which may be followed only by JSON whitespace.
  static func parse(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> Value {
    var parser = Parser(bytes: bytes)
    parser.skipWhitespace()
    let value = try parser.parseValue(depth: 0)
    parser.skipWhitespace()
    guard parser.index == bytes.count else {
      throw .syntax(offset: parser.index, reason: "unexpected data after the object")
    }
    return value
  }

  private struct Parser {
    let bytes: UnsafeRawBufferPointer
    var index = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    func fail(_ reason: String) -> Failure { .syntax(offset: index, reason: reason) }

    mutating func skipWhitespace() {
      while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D { index += 1 }
    }

    mutating func expect(_ c: UInt8, _ what: String) throws(Failure) {
      guard peek == c else { throw fail("expected \(what)") }
      index += 1
    }

    mutating func parseValue(depth: Int) throws(Failure) -> Value {
      guard depth < HeaderJSON.maximumDepth else { throw fail("nesting too deep") }
      guard let c = peek else { throw fail("unexpected end of header") }
      switch c {
      case UInt8(ascii: "{"): return try parseObject(depth: depth)
      case UInt8(ascii: "["): return try parseArray(depth: depth)
      case UInt8(ascii: "\""): return .string(try parseString())
      case UInt8(ascii: "t"):
        try literal("true")
        return .bool(true)
      case UInt8(ascii: "f"):
        try literal("false")
        return .bool(false)
      case UInt8(ascii: "n"):
        try literal("null")
        return .null
      case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
      default: throw fail("unexpected character")
      }
    }

    mutating func literal(_ word: String) throws(Failure) {
      for b in word.utf8 {
        guard peek == b else { throw fail("invalid literal") }
        index += 1
      }
    }

    mutating func parseObject(depth: Int) throws(Failure) -> Value {
      index += 1
      var pairs: [(key: String, value: Value)] = []
      var seen = Set<String>()
      skipWhitespace()
      if peek == UInt8(ascii: "}") {
        index += 1
        return .object(pairs)
      }
      while true {
        skipWhitespace()
        guard peek == UInt8(ascii: "\"") else { throw fail("expected a string key") }
        let key = try parseString()
        guard seen.insert(key).inserted else { throw .duplicateKey(key) }
        skipWhitespace()
        try expect(UInt8(ascii: ":"), "':'")
        skipWhitespace()
        let value = try parseValue(depth: depth + 1)
        pairs.append((key, value))
        skipWhitespace()
        guard let c = peek else { throw fail("unexpected end of header") }
        index += 1
        if c == UInt8(ascii: "}") { return .object(pairs) }
        guard c == UInt8(ascii: ",") else {
          index -= 1
          throw fail("expected ',' or '}'")
        }
      }
    }

    mutating func parseArray(depth: Int) throws(Failure) -> Value {
      index += 1
      var items: [Value] = []
      skipWhitespace()
      if peek == UInt8(ascii: "]") {
        index += 1
        return .array(items)
      }
      while true {
        skipWhitespace()
        items.append(try parseValue(depth: depth + 1))
        skipWhitespace()
        guard let c = peek else { throw fail("unexpected end of header") }
        index += 1
        if c == UInt8(ascii: "]") { return .array(items) }
        guard c == UInt8(ascii: ",") else {
          index -= 1
          throw fail("expected ',' or ']'")
        }
      }
    }

    mutating func parseNumber() throws(Failure) -> Value {
      let start = index
      if peek == UInt8(ascii: "-") { index += 1 }
      guard let first = peek, first >= 0x30, first <= 0x39 else { throw fail("invalid number") }
      index += 1
      if first != 0x30 {
        while let c = peek, c >= 0x30, c <= 0x39 { index += 1 }
      }
      if peek == UInt8(ascii: ".") {
        index += 1
        guard let c = peek, c >= 0x30, c <= 0x39 else { throw fail("invalid number") }
        while let c = peek, c >= 0x30, c <= 0x39 { index += 1 }
      }
      if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
        index += 1
        if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
        guard let c = peek, c >= 0x30, c <= 0x39 else { throw fail("invalid number") }
        while let c = peek, c >= 0x30, c <= 0x39 { index += 1 }
      }
      return .number(
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self))
    }

    mutating func hex4() throws(Failure) -> UInt32 {
      var v: UInt32 = 0
      for _ in 0..<4 {
        guard let c = peek else { throw fail("unexpected end of header") }
        let d: UInt32
        switch c {
        case 0x30...0x39: d = UInt32(c - 0x30)
        case 0x41...0x46: d = UInt32(c - 0x41 + 10)
        case 0x61...0x66: d = UInt32(c - 0x61 + 10)
        default: throw fail("invalid \\u escape")
        }
        v = v << 4 | d
        index += 1
      }
      return v
    }

    mutating func parseString() throws(Failure) -> String {
      index += 1
      var out: [UInt8] = []
      while true {
        guard let c = peek else { throw fail("unterminated string") }
        switch c {
        case UInt8(ascii: "\""):
          index += 1
          // The header was validated as UTF-8 and escapes produce scalars, so this is lossless.
          return String(decoding: out, as: UTF8.self)
        case UInt8(ascii: "\\"):
          index += 1
          guard let e = peek else { throw fail("unterminated string") }
          index += 1
          switch e {
          case UInt8(ascii: "\""): out.append(0x22)
          case UInt8(ascii: "\\"): out.append(0x5C)
          case UInt8(ascii: "/"): out.append(0x2F)
          case UInt8(ascii: "b"): out.append(0x08)
          case UInt8(ascii: "f"): out.append(0x0C)
          case UInt8(ascii: "n"): out.append(0x0A)
          case UInt8(ascii: "r"): out.append(0x0D)
          case UInt8(ascii: "t"): out.append(0x09)
          case UInt8(ascii: "u"):
            var scalar = try hex4()
            if (0xD800..<0xDC00).contains(scalar) {
              guard peek == UInt8(ascii: "\\") else { throw fail("lone surrogate") }
              index += 1
              guard peek == UInt8(ascii: "u") else { throw fail("lone surrogate") }
              index += 1
              let low = try hex4()
              guard (0xDC00..<0xE000).contains(low) else { throw fail("lone surrogate") }
              scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00..<0xE000).contains(scalar) {
              throw fail("lone surrogate")
            }
            guard let u = Unicode.Scalar(scalar) else { throw fail("invalid \\u escape") }
            out.append(contentsOf: String(u).utf8)
          default:
            index -= 1
            throw fail("invalid escape")
          }
        case 0x00..<0x20:
          throw fail("control character in string")
        default:
          out.append(c)
          index += 1
        }
      }
    }
  }
}
