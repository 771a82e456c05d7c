internal import CGit2

/// A resolved git object id (SHA-1), copied out of libgit2 so no C type escapes.
public struct ObjectID: Hashable, Sendable, CustomStringConvertible, Codable {
  /// The 20 raw bytes.
  package let bytes: [UInt8]

  init(_ oid: git_oid) {
    bytes = withUnsafeBytes(of: oid.id) { Array($0) }
  }

  /// The id whose 20 raw bytes these are.
  init(rawBytes: [UInt8]) {
    precondition(rawBytes.count == 20, "an object id has 20 bytes")
    bytes = rawBytes
  }

  /// Parses 40 hex digits; nil for anything else.
  package init?(hex: String) {
    guard hex.utf8.count == 40 else { return nil }
    var out: [UInt8] = []
    out.reserveCapacity(20)
    var index = hex.startIndex
    while index < hex.endIndex {
      let next = hex.index(index, offsetBy: 2)
      guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
      out.append(byte)
      index = next
    }
    bytes = out
  }

  var raw: git_oid {
    var oid = git_oid()
    withUnsafeMutableBytes(of: &oid.id) { dst in
      for (i, b) in bytes.enumerated() { dst[i] = b }
    }
    return oid
  }

  public var hex: String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(40)
    for b in bytes {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  public var shortHex: String { String(hex.prefix(7)) }
  public var description: String { hex }

  public init(from decoder: Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let id = ObjectID(hex: text) else {
      throw DecodingError.dataCorrupted(
        .init(codingPath: decoder.codingPath, debugDescription: "not an object id: \(text)"))
    }
    self = id
  }

  public func encode(to encoder: Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(hex)
  }
}

extension git_oid {
  static func from(_ id: ObjectID) -> git_oid { id.raw }
}
