import DeltaStore
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// `ReadOnlyFile` opens regular files only and reports a file that changes under it.
@Suite("read-only files")
struct ReadOnlyFileTests {
  func expectNotRegular(
    _ path: String, kind: String, followSymlink: Bool = false, sourceLocation: SourceLocation = #_sourceLocation
  ) {
    #expect(throws: DeltaStoreError.notRegularFile(path: path, kind: kind), sourceLocation: sourceLocation) {
      _ = try ReadOnlyFile(path: path, followSymlink: followSymlink)
    }
    #expect(throws: DeltaStoreError.notRegularFile(path: path, kind: kind), sourceLocation: sourceLocation) {
      _ = try SafetensorsFile(path: path, followSymlink: followSymlink)
    }
  }

  @Test func refusesAFIFOWithoutBlocking() throws {
    try withTemporaryDirectory { dir in
      let path = dir.appendingPathComponent("fifo").path
      try #require(mkfifo(path, 0o644) == 0)
      expectNotRegular(path, kind: "FIFO")
      expectNotRegular(path, kind: "FIFO", followSymlink: true)
      let error = DeltaStoreError.notRegularFile(path: path, kind: "FIFO")
      #expect(error.errorDescription == "cannot read '\(path)': is a FIFO, not a regular file")
      #expect(error.recoverySuggestion?.isEmpty == false)
    }
  }

  @Test func refusesDevicesAndDirectories() throws {
    try withTemporaryDirectory { dir in
      expectNotRegular("/dev/zero", kind: "character device")
      expectNotRegular(dir.path, kind: "directory")
    }
  }

  @Test func followsALinkOnlyWhenAsked() throws {
    try withTemporaryDirectory { dir in
      let target = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors([FixtureTensor(name: "w", shape: [2, 2], floats: [1, 2, 3, 4])], to: target)
      let link = dir.appendingPathComponent("link.safetensors").path
      try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target.path)
      expectNotRegular(link, kind: "symbolic link")
      let file = try SafetensorsFile(path: link, followSymlink: true)
      #expect(file.tensors.map(\.name) == ["w"])
      // A followed link must still reach a regular file.
      let device = dir.appendingPathComponent("zero").path
      try FileManager.default.createSymbolicLink(atPath: device, withDestinationPath: "/dev/zero")
      expectNotRegular(device, kind: "character device", followSymlink: true)
    }
  }

  @Test func readsWhatWasWritten() throws {
    try withTemporaryDirectory { dir in
      var rng = SplitMix64(seed: 5)
      let floats = rng.gaussianArray(count: 3000)
      let url = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors([FixtureTensor(name: "w", shape: [30, 100], floats: floats)], to: url)
      let file = try SafetensorsFile(path: url.path)
      let info = try #require(file.tensor(named: "w"))
      let bytes = floats.withUnsafeBytes { Array($0) }
      #expect(try file.read(info) == bytes)
      // Streamed through a scratch buffer smaller than the tensor: the same hash as in one call.
      let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 16)
      defer { scratch.deallocate() }
      let streamed = try file.hash(of: info, hasher: try ContentHasher(), scratch: scratch)
      #expect(streamed == bytes.withUnsafeBytes { ContentHash.of($0) })
    }
  }

  @Test func truncatedAfterOpenIsAChange() throws {
    try withTemporaryDirectory { dir in
      let url = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors(
        [FixtureTensor(name: "w", shape: [64, 64], floats: [Float](repeating: 1, count: 4096))], to: url)
      let file = try SafetensorsFile(path: url.path)
      let info = try #require(file.tensor(named: "w"))
      // What `open(path, "wb")` does first.
      try #require(truncate(url.path, 0) == 0)
      #expect(throws: DeltaStoreError.fileChanged(path: url.path)) { _ = try file.read(info) }
      #expect(throws: DeltaStoreError.fileChanged(path: url.path)) { _ = try file.hash(of: info) }
    }
  }

  @Test func rewrittenToTheSameSizeIsAChange() throws {
    try withTemporaryDirectory { dir in
      let url = dir.appendingPathComponent("model.safetensors")
      let tensors = [FixtureTensor(name: "w", shape: [64, 64], floats: [Float](repeating: 1, count: 4096))]
      try writeSafetensors(tensors, to: url)
      let file = try SafetensorsFile(path: url.path)
      let info = try #require(file.tensor(named: "w"))
      // The times must move on: wait for the file system clock to pass the first write's.
      let before = try FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date
      while (try FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date) == before {
        usleep(2_000)
        let fd = open(url.path, O_WRONLY | O_TRUNC)
        try #require(fd >= 0)
        let bytes = safetensorsBytes(tensors)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
      }
      #expect(throws: DeltaStoreError.fileChanged(path: url.path)) { _ = try file.read(info) }
      let error = DeltaStoreError.fileChanged(path: url.path)
      #expect(error.errorDescription == "'\(url.path)' changed while being read; run the command again")
    }
  }

  @Test func ownWritesAreNotAChange() throws {
    try withTemporaryDirectory { dir in
      let url = dir.appendingPathComponent("model.safetensors")
      let tensors = [
        FixtureTensor(name: "a", shape: [16], floats: [Float](repeating: 1, count: 16)),
        FixtureTensor(name: "b", shape: [16], floats: [Float](repeating: 2, count: 16)),
      ]
      try writeSafetensors(tensors, to: url)
      let file = try SafetensorsFile(path: url.path)
      let a = try #require(file.tensor(named: "a"))
      let b = try #require(file.tensor(named: "b"))
      let writer = try InPlaceFileWriter(path: url.path)
      let fresh = [Float](repeating: 5, count: 16).withUnsafeBytes { Array($0) }
      usleep(20_000)  // past the clock tick of the fixture's write, so the times move
      try file.file.absorbingChanges {
        try fresh.withUnsafeBytes { try writer.write($0, at: file.fileOffset(of: a)) }
      }
      #expect(try file.read(a) == fresh)
      #expect(try file.read(b) == tensors[1].bytes)
    }
  }
}
