internal import CXXHash

/// The XXH3-128 hash of a tensor's raw bytes, written `xxh3-128:<32 hex digits>`.
///
/// The hex digits are the canonical (big-endian) form: the high 64 bits, then the low 64 bits.
package struct ContentHash: Hashable, Codable, Sendable, CustomStringConvertible {
  /// The high 64 bits.
  package var high: UInt64
  /// The low 64 bits.
  package var low: UInt64

  private static let prefix = "xxh3-128:"

  /// Creates a hash from its two halves.
  package init(high: UInt64, low: UInt64) {
    self.high = high
    self.low = low
  }

  /// Parses `xxh3-128:<32 lowercase or uppercase hex digits>`.
  package init?(string: String) {
    guard string.hasPrefix(Self.prefix) else { return nil }
    let hex = string.dropFirst(Self.prefix.count)
    guard hex.count == 32, hex.allSatisfy(\.isHexDigit),
      let high = UInt64(hex.prefix(16), radix: 16), let low = UInt64(hex.suffix(16), radix: 16)
    else { return nil }
    self.init(high: high, low: low)
  }

  /// `xxh3-128:` and 32 lowercase hex digits.
  package var description: String {
    func hex(_ v: UInt64) -> String {
      let s = String(v, radix: 16)
      return String(repeating: "0", count: 16 - s.count) + s
    }
    return Self.prefix + hex(high) + hex(low)
  }

  /// The hash of `bytes` in one call (`XXH3_128bits`).
  package static func of(_ bytes: UnsafeRawBufferPointer) -> ContentHash {
    let h = XXH3_128bits(bytes.baseAddress, bytes.count)
    return ContentHash(high: h.high64, low: h.low64)
  }

  /// Decodes the string form.
  package init(from decoder: Decoder) throws {
    let container = try decoder.singleValueContainer()
    let s = try container.decode(String.self)
    guard let hash = ContentHash(string: s) else {
      throw DecodingError.dataCorruptedError(
        in: container, debugDescription: "'\(s)' is not an xxh3-128 hash")
    }
    self = hash
  }

  /// Encodes the string form.
  package func encode(to encoder: Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(description)
  }
}

/// Hashes a tensor fed in pieces; the result equals `ContentHash.of` over the concatenation.
///
/// Wraps `XXH3_createState` / `XXH3_freeState`.
package final class ContentHasher {
  private let state: OpaquePointer

  /// Creates a hasher with a fresh state.
  ///
  /// - Throws: `DeltaStoreError.xxhash` when the state cannot be allocated or reset.
  package init() throws {
    guard let state = XXH3_createState() else {
      throw DeltaStoreError.xxhash(function: "XXH3_createState")
    }
    guard XXH3_128bits_reset(state) == XXH_OK else {
      XXH3_freeState(state)
      throw DeltaStoreError.xxhash(function: "XXH3_128bits_reset")
    }
    self.state = state
  }

  deinit { XXH3_freeState(state) }

  /// Adds `bytes` to the hash.
  ///
  /// - Throws: `DeltaStoreError.xxhash` naming `XXH3_128bits_update`.
  package func update(_ bytes: UnsafeRawBufferPointer) throws {
    guard XXH3_128bits_update(state, bytes.baseAddress, bytes.count) == XXH_OK else {
      throw DeltaStoreError.xxhash(function: "XXH3_128bits_update")
    }
  }

  /// Starts over, as a fresh hasher.
  ///
  /// - Throws: `DeltaStoreError.xxhash` naming `XXH3_128bits_reset`.
  package func reset() throws {
    guard XXH3_128bits_reset(state) == XXH_OK else {
      throw DeltaStoreError.xxhash(function: "XXH3_128bits_reset")
    }
  }

  /// The hash of everything added so far (the state stays usable).
  package func finalize() -> ContentHash {
    let h = XXH3_128bits_digest(state)
    return ContentHash(high: h.high64, low: h.low64)
  }
}
