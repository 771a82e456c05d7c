import DeltaStore
import Foundation
import TestSupport
import Testing

/// Runs `python3 -c script args…` (the python3 that has numpy); returns the exit status and
/// stdout, or nil without one.
private func runPython(_ script: String, _ arguments: [String] = []) -> (Int32, String)? {
  guard let python = python3WithNumpy else { return nil }
  let result = runProcessOutcome(python, ["-c", script] + arguments, in: FileManager.default.temporaryDirectory)
  return (result.status, result.stdout)
}

/// A hand-built .npy file: header text padded as numpy does, then `payload`.
private func npyBytes(
  header: String, major: UInt8 = 1, payload: [UInt8], pad: Bool = true
) -> Data {
  let prefix = major == 1 ? 10 : 12
  var text = header
  if pad {
    let total = (prefix + text.utf8.count + 1 + 63) / 64 * 64
    text += String(repeating: " ", count: total - prefix - text.utf8.count - 1) + "\n"
  }
  var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, major, 0])
  let length = text.utf8.count
  if major == 1 {
    data.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
  } else {
    data.append(contentsOf: (0..<4).map { UInt8((length >> (8 * $0)) & 0xFF) })
  }
  data.append(contentsOf: Array(text.utf8))
  data.append(contentsOf: payload)
  return data
}

private func f8Bytes(_ values: [Double]) -> [UInt8] {
  values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

private func expectNpyError(
  _ data: Data, sourceLocation: SourceLocation = #_sourceLocation,
  _ matches: (DeltaStoreError) -> Bool
) {
  do {
    let array = try NpyFile.parse(data, path: "bad.npy")
    Issue.record("expected a DeltaStoreError, read \(array.shape)", sourceLocation: sourceLocation)
  } catch let error as DeltaStoreError {
    #expect(matches(error), "unexpected case \(error)", sourceLocation: sourceLocation)
    #expect(error.errorDescription?.contains("'bad.npy'") == true, sourceLocation: sourceLocation)
    #expect(error.recoverySuggestion != nil, sourceLocation: sourceLocation)
  } catch {
    Issue.record("expected a DeltaStoreError, got \(error)", sourceLocation: sourceLocation)
  }
}

@Suite("NpyFile")
struct NpyFileTests {
  @Test("Float64 and Float32 round trips")
  func roundTrip() throws {
    try withTemporaryDirectory { directory in
      var rng = SplitMix64(seed: 1)
      let doubles = (0..<12).map { _ in Double(rng.nextGaussian()) / 3 }
      let path = directory.appendingPathComponent("a.npy").path
      try NpyFile.write(doubles, shape: [3, 4], to: path)
      #expect(try NpyFile.read(from: path) == NpyArray(shape: [3, 4], values: doubles))
      // numpy aligns the data to 64 bytes.
      let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
      #expect(size.map { ($0 - 96) % 64 } == 0)

      let floats = rng.gaussianArray(count: 7)
      try NpyFile.write(floats, shape: [7], to: path)
      #expect(try NpyFile.read(from: path) == NpyArray(shape: [7], values: floats.map(Double.init)))

      try NpyFile.write([Double](), shape: [0, 5], to: path)
      #expect(try NpyFile.read(from: path) == NpyArray(shape: [0, 5], values: []))

      #expect(throws: DeltaStoreError.npyUnsupportedShape(path: path, shape: [2, 2])) {
        try NpyFile.write([1.0, 2, 3], shape: [2, 2], to: path)
      }
      #expect(throws: DeltaStoreError.npyUnsupportedShape(path: path, shape: [1, 1, 3])) {
        try NpyFile.write([1.0, 2, 3], shape: [1, 1, 3], to: path)
      }
    }
  }

  @Test(
    "files written by numpy load exactly, and numpy loads ours",
    .enabled(if: python3WithNumpy != nil, Comment(rawValue: numpyUnavailableReason)))
  func numpyInterop() throws {
    try withTemporaryDirectory { directory in
      let script = """
        import numpy as np, os, sys
        from numpy.lib import format as F
        d = sys.argv[1]
        a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
        np.save(os.path.join(d, 'f8_2d.npy'), a)
        np.save(os.path.join(d, 'f4_1d.npy'), np.arange(5, dtype=np.float32) / np.float32(7))
        for v in (1, 2, 3):
            with open(os.path.join(d, 'v%d.npy' % v), 'wb') as f:
                F.write_array(f, a, version=(v, 0))
        np.save(os.path.join(d, 'fortran.npy'), np.asfortranarray(a))
        np.save(os.path.join(d, 'int.npy'), np.arange(3))
        np.save(os.path.join(d, 'big_endian.npy'), a.astype('>f8'))
        np.save(os.path.join(d, 'three_d.npy'), np.zeros((2, 2, 2)))
        np.save(os.path.join(d, 'scalar.npy'), np.float64(1.5))
        """
      let generated = runPython(script, [directory.path])
      try #require(generated?.0 == 0, "numpy failed to write the fixtures")
      func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

      let expected = (0..<12).map { Double($0) / 7 }
      #expect(
        try NpyFile.read(from: path("f8_2d.npy")) == NpyArray(shape: [3, 4], values: expected))
      for version in 1...3 {
        #expect(
          try NpyFile.read(from: path("v\(version).npy"))
            == NpyArray(shape: [3, 4], values: expected))
      }
      #expect(
        try NpyFile.read(from: path("f4_1d.npy"))
          == NpyArray(shape: [5], values: (0..<5).map { Double(Float($0) / Float(7)) }))
      #expect(throws: DeltaStoreError.npyFortranOrder(path: path("fortran.npy"), shape: [3, 4])) {
        try NpyFile.read(from: path("fortran.npy"))
      }
      #expect(throws: DeltaStoreError.npyUnsupportedDType(path: path("int.npy"), descr: "<i8")) {
        try NpyFile.read(from: path("int.npy"))
      }
      #expect(throws: DeltaStoreError.npyUnsupportedDType(path: path("big_endian.npy"), descr: ">f8")) {
        try NpyFile.read(from: path("big_endian.npy"))
      }
      #expect(throws: DeltaStoreError.npyUnsupportedShape(path: path("three_d.npy"), shape: [2, 2, 2])) {
        try NpyFile.read(from: path("three_d.npy"))
      }
      #expect(throws: DeltaStoreError.npyUnsupportedShape(path: path("scalar.npy"), shape: [])) {
        try NpyFile.read(from: path("scalar.npy"))
      }

      // numpy reads what we write, bit for bit.
      var rng = SplitMix64(seed: 2)
      let doubles = (0..<6).map { _ in Double(rng.nextGaussian()) / 3 }
      let floats = rng.gaussianArray(count: 4)
      try NpyFile.write(doubles, shape: [2, 3], to: path("ours_f8.npy"))
      try NpyFile.write(floats, shape: [4], to: path("ours_f4.npy"))
      let check = """
        import numpy as np, sys
        a = np.load(sys.argv[1]); b = np.load(sys.argv[2])
        assert a.dtype == np.float64 and a.shape == (2, 3) and b.dtype == np.float32 and b.shape == (4,)
        print(' '.join(x.hex() for x in a.ravel()), '|', ' '.join(float(x).hex() for x in b))
        """
      let loaded = try #require(runPython(check, [path("ours_f8.npy"), path("ours_f4.npy")]))
      #expect(loaded.0 == 0)
      let ours =
        doubles.map { hexFloat($0) }.joined(separator: " ") + " | "
        + floats.map { hexFloat(Double($0)) }.joined(separator: " ")
      #expect(loaded.1.trimmingCharacters(in: .whitespacesAndNewlines) == ours)
    }
  }

  @Test("each header and data check has its own error")
  func corruptFiles() {
    let good = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
    let payload = f8Bytes([1, 2])
    // Sanity: the hand-built file itself is valid, in format 1.0 and 2.0.
    #expect(
      (try? NpyFile.parse(npyBytes(header: good, payload: payload), path: "ok.npy"))?.values == [
        1, 2,
      ])
    #expect(
      (try? NpyFile.parse(npyBytes(header: good, major: 2, payload: payload), path: "ok.npy"))?
        .shape == [2])

    expectNpyError(Data([0x93, 0x4E, 0x55])) { $0 == .npyBadMagic(path: "bad.npy") }
    var wrongMagic = npyBytes(header: good, payload: payload)
    wrongMagic[1] = 0x41
    expectNpyError(wrongMagic) { $0 == .npyBadMagic(path: "bad.npy") }
    var version = npyBytes(header: good, payload: payload)
    version[6] = 4
    expectNpyError(version) { $0 == .npyUnsupportedVersion(path: "bad.npy", major: 4, minor: 0) }
    var length = npyBytes(header: good, payload: payload)
    length[8] = 0xFF
    length[9] = 0xFF
    expectNpyError(length) { if case .npyTruncatedHeader = $0 { true } else { false } }
    expectNpyError(Data(npyBytes(header: good, payload: payload).prefix(9))) {
      if case .npyTruncatedHeader = $0 { true } else { false }
    }

    let malformed = [
      "{'descr': '<f8', 'fortran_order': False, }",  // missing shape
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'extra': 1}",
      "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2,)}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2)}",  // not a tuple
      "{'descr': '<f8', 'fortran_order': 0, 'shape': (2,)}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (-2,)}",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)",
      "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)} x",
      "['descr', '<f8']",
    ]
    for header in malformed {
      expectNpyError(npyBytes(header: header, payload: payload)) {
        if case .npyMalformedHeader = $0 { true } else { false }
      }
    }
    expectNpyError(
      npyBytes(
        header: "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", payload: payload)
    ) {
      $0 == .npyUnsupportedDType(path: "bad.npy", descr: "<i4")
    }
    expectNpyError(
      npyBytes(
        header: "{'descr': '<f8', 'fortran_order': True, 'shape': (1, 2), }", payload: payload)
    ) {
      $0 == .npyFortranOrder(path: "bad.npy", shape: [1, 2])
    }
    expectNpyError(
      npyBytes(
        header: "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 2), }", payload: payload)
    ) {
      $0 == .npyUnsupportedShape(path: "bad.npy", shape: [1, 1, 2])
    }
    expectNpyError(npyBytes(header: good, payload: Array(payload.dropLast()))) {
      $0 == .npyDataLengthMismatch(path: "bad.npy", expectedByteCount: 16, actualByteCount: 15)
    }
    expectNpyError(npyBytes(header: good, payload: payload + [0])) {
      $0 == .npyDataLengthMismatch(path: "bad.npy", expectedByteCount: 16, actualByteCount: 17)
    }
    expectNpyError(
      npyBytes(
        header: "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
        payload: payload)
    ) {
      if case .npyUnsupportedShape = $0 { true } else { false }
    }
  }

  @Test("a FIFO is refused at once, not waited on")
  func fifoIsRefused() throws {
    try withTemporaryDirectory { directory in
      let path = directory.appendingPathComponent("keys.npy").path
      try #require(mkfifo(path, 0o600) == 0)
      do {
        _ = try NpyFile.read(from: path)
        Issue.record("read a FIFO")
      } catch let error as DeltaStoreError {
        guard case .npyUnreadable(let reported, let reason) = error else {
          Issue.record("unexpected case \(error)")
          return
        }
        #expect(reported == path)
        #expect(reason.contains("FIFO"), "\(reason)")
      }
    }
  }

  @Test("a missing file names the path")
  func missingFile() throws {
    try withTemporaryDirectory { directory in
      let path = directory.appendingPathComponent("absent.npy").path
      do {
        _ = try NpyFile.read(from: path)
        Issue.record("read a missing file")
      } catch let error as DeltaStoreError {
        guard case .npyUnreadable(let reported, _) = error else {
          Issue.record("unexpected case \(error)")
          return
        }
        #expect(reported == path)
      }
    }
  }

  @Test("seeded byte mutations throw or parse, never crash")
  func mutations() {
    let valid = npyBytes(
      header: "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
      payload: [UInt8](repeating: 0x3F, count: 24))
    var rng = SplitMix64(seed: 99)
    for _ in 0..<2000 {
      var data = valid
      for _ in 0..<(1 + Int(rng.next() % 3)) {
        let index = Int(rng.next() % UInt64(data.count))
        data[index] = UInt8(truncatingIfNeeded: rng.next())
      }
      if rng.next() % 5 == 0 { data = data.prefix(Int(rng.next() % UInt64(data.count))) }
      do {
        let array = try NpyFile.parse(data, path: "m.npy")
        #expect(array.values.count == array.shape.reduce(1, *))
      } catch {
        #expect(error is DeltaStoreError)
      }
    }
  }
}

/// Python's float.hex() spelling for finite normal values (13 hex digits), e.g. 0x1.2492492492492p-3.
private func hexFloat(_ x: Double) -> String {
  if x == 0 { return x.sign == .minus ? "-0x0.0p+0" : "0x0.0p+0" }
  let sign = x < 0 ? "-" : ""
  let magnitude = abs(x)
  let exponent = magnitude.exponent
  let significand = magnitude.significandBitPattern
  var hex = String(significand, radix: 16)
  hex = String(repeating: "0", count: 13 - hex.count) + hex
  return "\(sign)0x1.\(hex)p\(exponent >= 0 ? "+" : "")\(exponent)"
}
