import DeltaStore
import Foundation
import TestSupport
import Testing

private func directoryEntries(_ dir: URL) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
}

@Suite(.serialized) struct FileWriterTests {
  @Test func commitProducesExactBytesAndAbandonLeavesNothing() throws {
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("model.safetensors")
      try Data([9, 9, 9]).write(to: target)
      let payload = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
      var events: [IOEvent] = []
      let writer = try AtomicFileWriter(
        path: target.path, byteCount: payload.count, hook: { events.append($0) })
      #expect(writer.temporaryPath.contains("/.model.safetensors.mvc-tmp-\(getpid())-"))
      // Out of order, in two pieces.
      try payload.withUnsafeBytes {
        try writer.write(UnsafeRawBufferPointer(rebasing: $0[5000...]), at: 5000)
        try writer.write(UnsafeRawBufferPointer(rebasing: $0[..<5000]), at: 0)
      }
      #expect(try Data(contentsOf: target) == Data([9, 9, 9]))
      try writer.commit()
      #expect(try [UInt8](Data(contentsOf: target)) == payload)
      #expect(try directoryEntries(dir) == ["model.safetensors"])
      #expect(events.first == .willWrite(path: writer.temporaryPath))
      #expect(events.contains(.willRename(from: writer.temporaryPath, to: target.path)))
      #expect(events.last == .willFsync(path: dir.path))

      let abandoned = try AtomicFileWriter(path: target.path, byteCount: 100)
      try ([1, 2, 3] as [UInt8]).withUnsafeBytes { try abandoned.write($0, at: 0) }
      abandoned.abandon()
      #expect(try directoryEntries(dir) == ["model.safetensors"])
      do {
        let dropped = try AtomicFileWriter(path: target.path)
        try ([1] as [UInt8]).withUnsafeBytes { try dropped.write($0, at: 0) }
      }
      #expect(try directoryEntries(dir) == ["model.safetensors"])
      #expect(try [UInt8](Data(contentsOf: target)) == payload)
    }
  }

  @Test func hookFailureAbortsCommitAndKeepsTarget() throws {
    struct Injected: Error {}
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("m.bin")
      try Data([1]).write(to: target)
      let writer = try AtomicFileWriter(
        path: target.path, hook: { if case .willRename = $0 { throw Injected() } })
      try ([7, 7] as [UInt8]).withUnsafeBytes { try writer.write($0, at: 0) }
      #expect(throws: Injected.self) { try writer.commit() }
      #expect(try directoryEntries(dir) == ["m.bin"])
      #expect(try Data(contentsOf: target) == Data([1]))
    }
  }

  @Test func inPlaceWriterRewritesRange() throws {
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("m.bin")
      try Data([0, 0, 0, 0]).write(to: target)
      let writer = try InPlaceFileWriter(path: target.path)
      try ([5, 6] as [UInt8]).withUnsafeBytes { try writer.write($0, at: 1) }
      try writer.sync()
      #expect(try Data(contentsOf: target) == Data([0, 5, 6, 0]))
      #expect(throws: DeltaStoreError.self) {
        try InPlaceFileWriter(path: dir.appendingPathComponent("none").path)
      }
    }
  }

  @Test func fileSizeLimitSurfacesAsEFBIGAndLeavesOriginal() throws {
    signal(SIGXFSZ, SIG_IGN)
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("model.safetensors")
      let original = Data([1, 2, 3, 4])
      try original.write(to: target)
      var saved = rlimit()
      #expect(getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved) == 0)
      var limited = saved
      limited.rlim_cur = 1 << 20
      #expect(setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited) == 0)
      defer { _ = setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved) }
      let big = [UInt8](repeating: 0xAB, count: 2 << 20)

      // Without preallocation the pwrite fails part way.
      let writer = try AtomicFileWriter(path: target.path)
      let error = try #require(throws: DeltaStoreError.self) {
        try big.withUnsafeBytes { try writer.write($0, at: 0) }
      }
      #expect(error == .fileSizeLimitExceeded(path: writer.temporaryPath, function: "pwrite"))
      #expect(error.errorDescription?.contains("file size limit exceeded") == true)
      writer.abandon()

      // With preallocation the failure comes before any data is written.
      let early = try #require(throws: DeltaStoreError.self) {
        _ = try AtomicFileWriter(path: target.path, byteCount: big.count)
      }
      #expect(
        { if case .fileSizeLimitExceeded(_, "posix_fallocate") = early { true } else { false } }())
      #expect(try directoryEntries(dir) == ["model.safetensors"])
      #expect(try Data(contentsOf: target) == original)
    }
  }

  @Test func errorWordingForFullDisk() {
    let e = DeltaStoreError.noSpace(path: "m.safetensors", function: "pwrite", errno: ENOSPC)
    #expect(e.errorDescription == "cannot write 'm.safetensors': no space left on device")
  }
}
