import DeltaStore
import Foundation
import TestSupport
import Testing

/// `DeltaStoreError` is DeltaStore's one error type (the `.npy` reader's failures included); every
/// case reads as git's messages do and names a next step.
@Suite struct DeltaStoreErrorTests {
  /// One value of every case; `caseIndex` is an exhaustive switch, so a new case needs a sample.
  static let samples: [DeltaStoreError] = [
    .fileTooSmall(path: "m.safetensors", byteCount: 3),
    .headerTooLarge(path: "m.safetensors", declaredByteCount: 1 << 40, limit: 100_000_000),
    .headerOutOfBounds(path: "m.safetensors", declaredByteCount: 90, fileByteCount: 40),
    .headerNotUTF8(path: "m.safetensors"),
    .invalidHeaderJSON(path: "m.safetensors", byteOffset: 12, reason: "expected ':'"),
    .duplicateKey(path: "m.safetensors", key: "w"),
    .invalidMetadata(path: "m.safetensors", reason: "values must be strings"),
    .invalidTensorEntry(path: "m.safetensors", tensor: "w", reason: "missing 'dtype'"),
    .unknownDType(path: "m.safetensors", tensor: "w", dtype: "F7"),
    .invalidShape(path: "m.safetensors", tensor: "w", reason: "-1 is negative"),
    .invalidDataOffsets(path: "m.safetensors", tensor: "w", reason: "end before begin"),
    .tensorNotContiguous(path: "m.safetensors", tensor: "w", expectedBegin: 0, actualBegin: 8),
    .tensorSizeOverflow(path: "m.safetensors", tensor: "w"),
    .tensorBitsNotByteAligned(path: "m.safetensors", tensor: "w", bitCount: 7),
    .tensorByteCountMismatch(path: "m.safetensors", tensor: "w", expected: 16, actual: 12),
    .fileSizeMismatch(path: "m.safetensors", expected: 100, actual: 90),
    .io(path: "m.safetensors", function: "open", errno: EACCES, message: "permission denied"),
    .noSpace(path: "m.safetensors", function: "pwrite", errno: ENOSPC),
    .fileSizeLimitExceeded(path: "m.safetensors", function: "pwrite"),
    .zstd(function: "ZSTD_decompressDCtx", message: "corrupted block detected"),
    .zstdContentSizeMismatch(expected: 8, declared: nil),
    .zstdOutputSizeMismatch(expected: 8, actual: 7),
    .corruptResidual(reason: "run past the end"),
    .corruptBlob(kind: "factor blob", reason: "rank 0"),
    .unsupportedDType(dtype: .i64, operation: "delta encoding"),
    .byteCountMismatch(what: "tensor 'w'", expected: 16, actual: 12),
    .xxhash(function: "XXH3_createState"),
    .notRegularFile(path: "m.safetensors", kind: "symbolic link"),
    .fileChanged(path: "m.safetensors"),
    .npyUnreadable(path: "k.npy", reason: "no such file"),
    .npyBadMagic(path: "k.npy"),
    .npyUnsupportedVersion(path: "k.npy", major: 4, minor: 0),
    .npyTruncatedHeader(path: "k.npy", declaredByteCount: 118, availableByteCount: 10),
    .npyMalformedHeader(path: "k.npy", reason: "missing key"),
    .npyUnsupportedDType(path: "k.npy", descr: "<i8"),
    .npyFortranOrder(path: "k.npy", shape: [3, 4]),
    .npyUnsupportedShape(path: "k.npy", shape: [2, 2, 2]),
    .npyDataLengthMismatch(path: "k.npy", expectedByteCount: 16, actualByteCount: 15),
    .npyUnwritable(path: "k.npy", reason: "read-only file system"),
  ]

  static func caseIndex(_ error: DeltaStoreError) -> Int {
    switch error {
    case .fileTooSmall: 0
    case .headerTooLarge: 1
    case .headerOutOfBounds: 2
    case .headerNotUTF8: 3
    case .invalidHeaderJSON: 4
    case .duplicateKey: 5
    case .invalidMetadata: 6
    case .invalidTensorEntry: 7
    case .unknownDType: 8
    case .invalidShape: 9
    case .invalidDataOffsets: 10
    case .tensorNotContiguous: 11
    case .tensorSizeOverflow: 12
    case .tensorBitsNotByteAligned: 13
    case .tensorByteCountMismatch: 14
    case .fileSizeMismatch: 15
    case .io: 16
    case .noSpace: 17
    case .fileSizeLimitExceeded: 18
    case .zstd: 19
    case .zstdContentSizeMismatch: 20
    case .zstdOutputSizeMismatch: 21
    case .corruptResidual: 22
    case .corruptBlob: 23
    case .unsupportedDType: 24
    case .byteCountMismatch: 25
    case .xxhash: 26
    case .notRegularFile: 27
    case .fileChanged: 28
    case .npyUnreadable: 29
    case .npyBadMagic: 30
    case .npyUnsupportedVersion: 31
    case .npyTruncatedHeader: 32
    case .npyMalformedHeader: 33
    case .npyUnsupportedDType: 34
    case .npyFortranOrder: 35
    case .npyUnsupportedShape: 36
    case .npyDataLengthMismatch: 37
    case .npyUnwritable: 38
    }
  }
  static let caseCount = 39

  @Test func everyCaseHasASample() {
    #expect(Set(Self.samples.map(Self.caseIndex)) == Set(0..<Self.caseCount))
  }

  @Test(arguments: samples)
  func descriptionFollowsGitsGuidelinesAndHasAHint(_ error: DeltaStoreError) {
    #expect(gitStyleProblems(error).isEmpty, "\(error.errorDescription ?? "")")
  }

  /// Representative failures, matched on their cases.
  @Test func failuresAreTypedCases() throws {
    try withTemporaryDirectory { dir in
      let short = dir.appendingPathComponent("short.safetensors")
      try Data([1, 2, 3]).write(to: short)
      #expect(throws: DeltaStoreError.fileTooSmall(path: short.path, byteCount: 3)) {
        _ = try SafetensorsFile(path: short.path)
      }
      let npy = dir.appendingPathComponent("cube.npy").path
      #expect(throws: DeltaStoreError.npyUnsupportedShape(path: npy, shape: [1, 1, 2])) {
        try NpyFile.write([1.0, 2.0], shape: [1, 1, 2], to: npy)
      }
      #expect(throws: DeltaStoreError.npyBadMagic(path: "x.npy")) {
        _ = try NpyFile.parse(Data("not numpy at all".utf8), path: "x.npy")
      }
    }
  }
}
