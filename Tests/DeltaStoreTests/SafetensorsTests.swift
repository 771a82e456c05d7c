import DeltaStore
import Foundation
import TestSupport
import Testing

/// Builds a file from a literal JSON header (padded unless `pad` is false) and data bytes.
private func rawFile(_ json: String, data: [UInt8] = [], declared: UInt64? = nil) -> [UInt8] {
  let header = Array(json.utf8)
  var out: [UInt8] = []
  withUnsafeBytes(of: (declared ?? UInt64(header.count)).littleEndian) {
    out.append(contentsOf: $0)
  }
  return out + header + data
}

/// Writes `bytes` to `name` in `dir` and opens it, returning the error thrown.
private func openError(_ bytes: [UInt8], in dir: URL, name: String = "model.safetensors") -> Error? {
  let url = dir.appendingPathComponent(name)
  do {
    try Data(bytes).write(to: url)
    _ = try SafetensorsFile(path: url.path)
    return nil
  } catch {
    return error
  }
}

@Suite struct SafetensorsReadTests {
  @Test func roundTripOfIndependentlyWrittenFile() throws {
    try withTemporaryDirectory { dir in
      var tensors = transformerFixture(blocks: 2, hidden: 8, intermediate: 16, seed: 7)
      tensors.append(
        FixtureTensor(name: "a.bias16", dtype: "F16", shape: [3], bytes: [1, 2, 3, 4, 5, 6]))
      tensors.append(
        FixtureTensor(name: "scalar", dtype: "I64", shape: [], bytes: Array(repeating: 9, count: 8))
      )
      tensors.append(FixtureTensor(name: "empty", dtype: "BF16", shape: [0, 4], bytes: []))
      let metadata = ["format": "pt", "note": "héllo \"quoted\""]
      let url = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors(tensors, to: url, metadata: ["format": "pt"])
      let file = try SafetensorsFile(path: url.path)
      #expect(file.tensors.map(\.name) == tensors.map(\.name))
      #expect(file.metadata == ["format": "pt"])
      for t in tensors {
        let info = try #require(file.tensor(named: t.name))
        #expect(info.dtype.rawValue == t.dtype)
        #expect(info.shape == t.shape)
        #expect(try file.read(info) == t.bytes)
        #expect(try file.hash(of: info) == t.bytes.withUnsafeBytes { ContentHash.of($0) })
      }
      let original = try [UInt8](Data(contentsOf: url))
      #expect(file.headerBytes == Array(original[0..<file.dataStart]))

      // Our writer's header reads back through the same validator with the same layout.
      let specs = file.tensors.map { (name: $0.name, dtype: $0.dtype, shape: $0.shape) }
      var rewritten = SafetensorsHeader.serialize(tensors: specs, metadata: metadata)
      #expect((rewritten.count - 8) % 8 == 0)
      for info in file.tensors { rewritten += try file.read(info) }
      let url2 = dir.appendingPathComponent("copy.safetensors")
      try Data(rewritten).write(to: url2)
      let copy = try SafetensorsFile(path: url2.path)
      #expect(copy.tensors == file.tensors)
      #expect(copy.metadata == metadata)
      #expect(copy.dataStart % 8 == 0)
    }
  }

  @Test func headerOnlyFileWithNoTensors() throws {
    try withTemporaryDirectory { dir in
      #expect(openError(rawFile("{}      "), in: dir) == nil)
      #expect(openError(rawFile("{\"__metadata__\":{}}\t\n "), in: dir) == nil)
    }
  }

  /// One hand-built file per reference check, in order; each names the file (and tensor).
  @Test func eachValidationCheckHasItsCase() throws {
    try withTemporaryDirectory { dir in
      let f32x2 = "\"dtype\":\"F32\",\"shape\":[2]"
      let cases: [(String, [UInt8], (DeltaStoreError) -> Bool, String?)] = [
        ("(1) short", [1, 2, 3], { if case .fileTooSmall = $0 { true } else { false } }, nil),
        (
          "(2) huge N", rawFile("{}", declared: UInt64(Int64.max)),
          {
            if case .headerTooLarge(_, 9_223_372_036_854_775_807, 100_000_000) = $0 {
              true
            } else {
              false
            }
          }, nil
        ),
        (
          "(2) N past end", rawFile("{}", declared: 64),
          { if case .headerOutOfBounds = $0 { true } else { false } }, nil
        ),
        (
          "(3) not utf8",
          rawFile("{\"\u{FF}\":1}").enumerated().map { $0.offset == 10 ? 0xFF : $0.element },
          { if case .headerNotUTF8 = $0 { true } else { false } }, nil
        ),
        (
          "(3) not object", rawFile("[1,2]"),
          { if case .invalidHeaderJSON = $0 { true } else { false } }, nil
        ),
        (
          "(3) trailing comma", rawFile("{\"a\":1,}"),
          { if case .invalidHeaderJSON = $0 { true } else { false } }, nil
        ),
        (
          "(3) garbage after", rawFile("{} x"),
          { if case .invalidHeaderJSON = $0 { true } else { false } }, nil
        ),
        (
          "(4) duplicate",
          rawFile(
            "{\"w\":{\(f32x2),\"data_offsets\":[0,8]},\"w\":{\(f32x2),\"data_offsets\":[8,16]}}",
            data: Array(repeating: 0, count: 16)),
          { if case .duplicateKey(_, "w") = $0 { true } else { false } }, "w"
        ),
        (
          "(4) metadata value", rawFile("{\"__metadata__\":{\"k\":1}}"),
          { if case .invalidMetadata = $0 { true } else { false } }, nil
        ),
        (
          "(5) dtype",
          rawFile(
            "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}",
            data: Array(repeating: 0, count: 8)),
          { if case .unknownDType(_, "w", "F33") = $0 { true } else { false } }, "w"
        ),
        (
          "(5) shape",
          rawFile(
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
            data: Array(repeating: 0, count: 8)),
          { if case .invalidShape(_, "w", _) = $0 { true } else { false } }, "w"
        ),
        (
          "(5) end<begin",
          rawFile("{\"w\":{\(f32x2),\"data_offsets\":[8,0]}}", data: Array(repeating: 0, count: 8)),
          { if case .invalidDataOffsets(_, "w", _) = $0 { true } else { false } }, "w"
        ),
        (
          "(5) missing field", rawFile("{\"w\":{\(f32x2)}}"),
          { if case .invalidTensorEntry(_, "w", _) = $0 { true } else { false } }, "w"
        ),
        (
          "(6) gap",
          rawFile(
            "{\"w\":{\(f32x2),\"data_offsets\":[4,12]}}", data: Array(repeating: 0, count: 12)),
          { if case .tensorNotContiguous(_, "w", 0, 4) = $0 { true } else { false } }, "w"
        ),
        (
          "(7) overflow",
          rawFile(
            "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}",
            data: Array(repeating: 0, count: 8)),
          { if case .tensorSizeOverflow(_, "w") = $0 { true } else { false } }, "w"
        ),
        (
          "(7) sub-byte",
          rawFile("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", data: [0, 0]),
          { if case .tensorBitsNotByteAligned(_, "w", 12) = $0 { true } else { false } }, "w"
        ),
        (
          "(7) size",
          rawFile(
            "{\"w\":{\(f32x2),\"data_offsets\":[0,12]}}", data: Array(repeating: 0, count: 12)),
          { if case .tensorByteCountMismatch(_, "w", 8, 12) = $0 { true } else { false } }, "w"
        ),
        (
          "(8) trailing bytes",
          rawFile("{\"w\":{\(f32x2),\"data_offsets\":[0,8]}}", data: Array(repeating: 0, count: 9)),
          { if case .fileSizeMismatch = $0 { true } else { false } }, nil
        ),
      ]
      for (label, bytes, matches, tensor) in cases {
        let error = try #require(openError(bytes, in: dir), "\(label)")
        let e = try #require(error as? DeltaStoreError, "\(label)")
        #expect(matches(e), "\(label): \(e)")
        let message = e.errorDescription ?? ""
        #expect(
          message.contains("'\(dir.appendingPathComponent("model.safetensors").path)'"), "\(label)")
        if let tensor { #expect(message.contains("'\(tensor)'"), "\(label): \(message)") }
        #expect(message.first?.isLowercase == true && message.last != ".")
        #expect(e.recoverySuggestion != nil)
      }
      #expect(
        DeltaStoreError.headerTooLarge(
          path: "model.safetensors", declaredByteCount: 9_223_372_036_854_775_807,
          limit: 100_000_000
        )
        .errorDescription
          == "cannot read 'model.safetensors': header declares 9223372036854775807 bytes, limit is 100000000"
      )
    }
  }

  @Test func mutatedHeadersThrowOrValidateNeverCrash() throws {
    var rng = SplitMix64(seed: 0xD5)
    let tensors = [
      FixtureTensor(name: "a", dtype: "F32", shape: [2, 3], bytes: Array(repeating: 1, count: 24)),
      FixtureTensor(name: "b", dtype: "BF16", shape: [4], bytes: Array(repeating: 2, count: 8)),
      FixtureTensor(name: "c\\u00e9", dtype: "I8", shape: [3], bytes: [1, 2, 3]),
    ]
    let base = safetensorsBytes(tensors, metadata: ["k": "v"])
    let alphabet =
      Array("{}[]\",:0123456789-eE.\\u \t\nFIBUabcdefghtrsnul".utf8) + [0x00, 0xFF, 0xC3]
    var accepted = 0
    for _ in 0..<4000 {
      var bytes = base
      for _ in 0...(rng.next() % 4) {
        let i = Int(rng.next() % UInt64(bytes.count))
        switch rng.next() % 4 {
        case 0: bytes[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
        case 1: bytes[i] ^= UInt8(1 << (rng.next() % 8))
        case 2: bytes.remove(at: i)
        default: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
        }
      }
      do {
        let parsed = try bytes.withUnsafeBytes {
          try SafetensorsFile.parseHeader($0, fileByteCount: bytes.count, path: "fuzz")
        }
        accepted += 1
        // A valid result accounts for the file exactly.
        let end = parsed.tensors.map(\.dataOffsets.upperBound).max() ?? 0
        #expect(8 + parsed.headerByteCount + end == bytes.count)
        for t in parsed.tensors { #expect(t.byteCount * 8 == t.elementCount * t.dtype.bitCount) }
      } catch {
        #expect(error is DeltaStoreError)
      }
    }
    #expect(accepted < 4000)
  }
}
