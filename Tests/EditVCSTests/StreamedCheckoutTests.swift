import DeltaStore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import EditVCS

/// `checkout -o` streams complete states a chunk at a time into reused buffers (issue 15): the
/// files are the very bytes of the whole-tensor path, across chunks, shards, packed objects and
/// edited tensors beside streamed ones, and a bad chunk leaves no file behind.
@Suite struct StreamedCheckoutTests {
  /// The names and bytes of the files in `folder`.
  static func files(in folder: URL) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: folder.path) {
      out[name] = try Data(contentsOf: folder.appendingPathComponent(name))
    }
    return out
  }

  /// Damages the loose object of the second chunk of "big.weight" (its first chunk is written
  /// before it decodes) for the duration of `body`.
  static func withDamagedSecondChunk(_ repository: EditRepository, at commit: ObjectID, _ body: () throws -> Void)
    throws
  {
    let stored = try repository.storedState(
      try #require(try repository.contents(of: commit).tensorTrees["big.weight"]), tensor: "big.weight")
    let id = try #require(stored.blobs[TreeEntryName.chunk(1)])
    let path = (repository.gitDirectory as NSString).appendingPathComponent(
      "objects/\(id.hex.prefix(2))/\(id.hex.dropFirst(2))")
    let url = URL(fileURLWithPath: path)
    try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
    let good = try Data(contentsOf: url)
    var bad = good
    bad[bad.count / 2] ^= 0xFF
    try bad.write(to: url)
    defer { try? good.write(to: url) }
    try body()
  }

  @Test func streamedCheckoutIsByteIdenticalAcrossChunksShardsPacksAndEdits() throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("model")
      // Three shards; "big.weight" spans two chunks (64 MiB and 4 KiB).
      _ = try LocalSpeedTests.model(in: folder)
      let original = try Self.files(in: folder)
      let phases = Mutex<[String]>([])
      let trace: @Sendable (String) -> Void = { line in phases.withLock { $0.append(line) } }
      let (repository, base) = try EditRepository.initialize(
        root: dir.path, modelPath: "model", environment: LocalSpeedTests.environment(workers: 2, trace: trace))
      // One tensor edited (rebuilt whole by replaying its factors) beside the streamed ones.
      let working = try WorkingModel(path: folder.path)
      let target = try #require(
        working.tensorNames.first { working.location(of: $0)?.info.shape.count == 2 && $0 != "big.weight" })
      let shape = try #require(working.location(of: target)?.info.shape)
      let factors = dir.appendingPathComponent("factors.safetensors")
      try writeSafetensors(
        [
          FixtureTensor(
            name: target + ".u", shape: [shape[0], 1], floats: (0..<shape[0]).map { Float($0 % 7) * 1e-3 }),
          FixtureTensor(name: target + ".v", shape: [shape[1], 1], floats: (0..<shape[1]).map { Float($0 % 5) - 2 }),
        ], to: factors)
      let head = try repository.commitFactors(
        FactorCommitRequest(file: factors.path, message: "factors", method: "rome")
      ).result.commit
      let edited = try Self.files(in: folder)
      #expect(edited != original)
      // No working model to copy from: every tensor comes from the objects.
      try FileManager.default.moveItem(at: folder, to: dir.appendingPathComponent("away"))

      phases.withLock { $0 = [] }
      let outBase = dir.appendingPathComponent("out-base")
      try repository.materialize(base, to: outBase.path)
      #expect(try Self.files(in: outBase) == original)
      let streamedChunks = phases.withLock { $0 }.filter { $0.hasSuffix(" of 'big.weight'") && $0.contains(": chunk ") }
      #expect(streamedChunks.count == 2, "\(streamedChunks)")

      let outHead = dir.appendingPathComponent("out-head")
      try repository.materialize(head, to: outHead.path)
      #expect(try Self.files(in: outHead) == edited)

      // A bad chunk after a streamed one: the shard is never renamed into place, and its
      // temporary file is gone.
      let outBad = dir.appendingPathComponent("out-bad")
      try Self.withDamagedSecondChunk(repository, at: base) {
        #expect(throws: (any Error).self) { try repository.materialize(base, to: outBad.path) }
      }
      let shard = try shardFile(of: "big.weight", in: dir.appendingPathComponent("away")).lastPathComponent
      let left = (try? FileManager.default.contentsOfDirectory(atPath: outBad.path)) ?? []
      #expect(!left.contains(shard) && !left.contains { $0.contains("mvc-tmp") }, "\(left)")

      // Packed chunks (after gc --full, as after a clone) stream from libgit2's buffers.
      _ = try repository.gc(full: true)
      let bigTree = try #require(try repository.contents(of: base).tensorTrees["big.weight"])
      let chunk0 = try #require(try repository.storedState(bigTree, tensor: "big.weight").blobs[TreeEntryName.chunk(0)])
      #expect(try repository.git.looseBlob(chunk0) == nil)
      let outPacked = dir.appendingPathComponent("out-packed")
      try repository.materialize(base, to: outPacked.path)
      #expect(try Self.files(in: outPacked) == original)
      #expect(repository.decodeWorkspaces.keptCount <= repository.decodeWorkspaces.limit)
    }
  }
}
