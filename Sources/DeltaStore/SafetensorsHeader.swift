/// Builds safetensors headers for new files.
public enum SafetensorsHeader {
  /// Assigns contiguous data offsets to `tensors` in the given order.
  ///
  /// Names must be unique and not `__metadata__`; sizes must not overflow (programmer errors:
  /// the list comes from a validated file or from mvc itself).
  /// - Returns: The tensors with `dataOffsets` filled in; the last `upperBound` is the data size.
  public static func layout(tensors: [(name: String, dtype: DType, shape: [Int])]) -> [TensorInfo] {
    var offset = 0
    var seen = Set<String>()
    return tensors.map { t in
      precondition(t.name != "__metadata__" && seen.insert(t.name).inserted, "bad tensor name")
      var bits = t.dtype.bitCount
      for d in t.shape {
        precondition(d >= 0)
        let (p, o) = bits.multipliedReportingOverflow(by: d)
        precondition(!o, "tensor size overflows")
        bits = p
      }
      precondition(bits % 8 == 0, "tensor is not a whole number of bytes")
      let info = TensorInfo(
        name: t.name, dtype: t.dtype, shape: t.shape, dataOffsets: offset..<(offset + bits / 8))
      offset += bits / 8
      return info
    }
  }

  /// Serializes a header: the 8-byte little-endian length N followed by N bytes of JSON.
  ///
  /// `__metadata__` comes first with its keys sorted; tensors follow in the given order with
  /// contiguous offsets (see `layout(tensors:)`); the JSON is padded with spaces to a multiple of
  /// 8 bytes, as the reference writer does, so the data section starts 8-byte aligned.
  /// - Returns: The exact 8 + N prefix of the file; tensor data follows it in the same order.
  public static func serialize(
    tensors: [(name: String, dtype: DType, shape: [Int])], metadata: [String: String]?
  ) -> [UInt8] {
    var json: [UInt8] = [UInt8(ascii: "{")]
    var first = true
    func separator() {
      if !first { json.append(UInt8(ascii: ",")) }
      first = false
    }
    if let metadata {
      separator()
      appendString("__metadata__", to: &json)
      json.append(contentsOf: ":{".utf8)
      for (i, key) in metadata.keys.sorted().enumerated() {
        if i > 0 { json.append(UInt8(ascii: ",")) }
        appendString(key, to: &json)
        json.append(UInt8(ascii: ":"))
        appendString(metadata[key] ?? "", to: &json)
      }
      json.append(UInt8(ascii: "}"))
    }
    for t in layout(tensors: tensors) {
      separator()
      appendString(t.name, to: &json)
      json.append(contentsOf: ":{\"dtype\":".utf8)
      appendString(t.dtype.rawValue, to: &json)
      json.append(contentsOf: ",\"shape\":[".utf8)
      json.append(contentsOf: t.shape.map(String.init).joined(separator: ",").utf8)
      json.append(
        contentsOf: "],\"data_offsets\":[\(t.dataOffsets.lowerBound),\(t.dataOffsets.upperBound)]}"
          .utf8)
    }
    json.append(UInt8(ascii: "}"))
    while json.count % 8 != 0 { json.append(0x20) }
    var out: [UInt8] = []
    out.reserveCapacity(8 + json.count)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(contentsOf: json)
    return out
  }

  /// Appends `s` as a JSON string literal (quotes, backslashes and control characters escaped).
  private static func appendString(_ s: String, to json: inout [UInt8]) {
    json.append(UInt8(ascii: "\""))
    for b in s.utf8 {
      switch b {
      case UInt8(ascii: "\""): json.append(contentsOf: "\\\"".utf8)
      case UInt8(ascii: "\\"): json.append(contentsOf: "\\\\".utf8)
      case 0x0A: json.append(contentsOf: "\\n".utf8)
      case 0x0D: json.append(contentsOf: "\\r".utf8)
      case 0x09: json.append(contentsOf: "\\t".utf8)
      case 0x00..<0x20:
        let hex = Array("0123456789abcdef".utf8)
        json.append(contentsOf: "\\u00".utf8)
        json.append(hex[Int(b >> 4)])
        json.append(hex[Int(b & 0xF)])
      default: json.append(b)
      }
    }
    json.append(UInt8(ascii: "\""))
  }
}
