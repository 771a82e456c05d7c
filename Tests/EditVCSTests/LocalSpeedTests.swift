import DeltaStore
import Foundation
import Synchronization
import TestSupport
import Testing

@testable import EditVCS

#if canImport(Glibc)
  import Glibc
#endif

/// The shortcuts behind fast init, status and commit-factors (issue 15) give the same results as
/// the long ways: the same objects, exactly the changed tensors, the same committed bytes.
@Suite struct LocalSpeedTests {
  static func environment(workers: Int, trace: (@Sendable (String) -> Void)? = nil) -> RepositoryEnvironment {
    RepositoryEnvironment(
      commitTime: 1_700_000_000, compressionWorkers: 2, tracePerformance: trace, workerThreads: workers)
  }

  /// A sharded model with one tensor of more than one 64 MiB chunk, so chunks of one tensor are
  /// compressed by different workers.
  static func model(in folder: URL) throws -> [String: String] {
    var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 5)
    let count = TensorBlobs.chunkByteCount + 4096
    let big = [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
      // Low-entropy words (as float exponents are), a few million stores even in a debug build.
      let words = UnsafeMutableRawBufferPointer(buffer).bindMemory(to: UInt64.self)
      var state: UInt64 = 0x1234_5678
      for i in 0..<words.count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        words[i] = (state >> 29) & 0x0707_0707_0707_0707
      }
      initialized = count
    }
    tensors.append(FixtureTensor(name: "big.weight", dtype: "U8", shape: [big.count], bytes: big))
    return try writeShardedModel(tensors, shardCount: 3, to: folder)
  }

  @Test func parallelInitStoresTheSameObjectsAsTheSerialWriter() throws {
    try withTemporaryDirectory { dir in
      var roots: [[String: ObjectID]] = []
      for workers in [1, 2] {
        let root = dir.appendingPathComponent("w\(workers)")
        _ = try Self.model(in: root.appendingPathComponent("model"))
        let (repository, base) = try EditRepository.initialize(
          root: root.path, modelPath: "model", environment: Self.environment(workers: workers))
        let trees = try repository.contents(of: base).tensorTrees
        roots.append(trees)
        #expect(try repository.status().isClean)
        guard workers == 2 else { continue }
        // The serial writer, one whole tensor at a time, must produce the very same trees.
        let working = try WorkingModel(path: root.appendingPathComponent("model").path)
        for name in working.tensorNames {
          let (shard, info) = try #require(working.location(of: name))
          let bytes = try #require(try working.read(name))
          let hash = bytes.withUnsafeBytes { ContentHash.of($0).description }
          let serial = try bytes.withUnsafeBytes {
            try repository.writeFullState(
              name: name, dtype: info.dtype, shape: info.shape, shard: shard, bytes: $0, hash: hash)
          }
          #expect(trees[name] == serial.tree, "tensor \(name)")
        }
      }
      #expect(roots[0] == roots[1])
      #expect(roots[0]["big.weight"].map { _ in true } == true)
    }
  }

  @Test func statusRehashesOnlyChangedShardsAndFindsExactlyTheChangedTensor() throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("model")
      let tensors = transformerFixture(blocks: 3, hidden: 32, intermediate: 96, seed: 9)
      try writeShardedModel(tensors, shardCount: 3, to: folder)
      let phases = Mutex<[String]>([])
      let trace: @Sendable (String) -> Void = { line in phases.withLock { $0.append(line) } }
      let (repository, _) = try EditRepository.initialize(
        root: dir.path, modelPath: "model", environment: Self.environment(workers: 2, trace: trace))
      #expect(try repository.status().isClean)
      // Patch one tensor in place: same size, and the old modification time put back (only the
      // change time, which no program can set, tells the file changed).
      let target = tensors[4].name
      let shard = try shardFile(of: target, in: folder)
      var before = stat()
      #expect(stat(shard.path, &before) == 0)
      let file = try SafetensorsFile(path: shard.path)
      let info = try #require(file.tensor(named: target))
      var bytes = try file.read(info)
      bytes[bytes.count / 2] ^= 0x01
      let handle = try FileHandle(forWritingTo: shard)
      try handle.seek(toOffset: UInt64(file.fileOffset(of: info)))
      handle.write(Data(bytes))
      try handle.close()
      var times = [before.st_atim, before.st_mtim]
      #expect(utimensat(AT_FDCWD, shard.path, &times, 0) == 0)
      var after = stat()
      #expect(stat(shard.path, &after) == 0)
      #expect(after.st_size == before.st_size && after.st_mtim.tv_sec == before.st_mtim.tv_sec)

      phases.withLock { $0 = [] }
      let status = try repository.status()
      #expect(status.entries.map(\.name) == [target])
      let inShard = tensors.filter { (try? shardFile(of: $0.name, in: folder)) == shard }.count
      let hashed = phases.withLock { $0 }.filter { $0.contains(" tensors") && $0.contains("hash ") }
      #expect(hashed.count == 1)
      #expect(hashed.first?.contains("hash \(inShard) of \(tensors.count) tensors") == true, "\(hashed)")

      // The index changed: every tensor is hashed again, and the answer is the same.
      let indexURL = folder.appendingPathComponent("model.safetensors.index.json")
      try (try Data(contentsOf: indexURL)).write(to: indexURL)
      phases.withLock { $0 = [] }
      #expect(try repository.status().entries.map(\.name) == [target])
      let rehashed = phases.withLock { $0 }.filter { $0.contains(" tensors") && $0.contains("hash ") }
      #expect(rehashed.first?.contains("hash \(tensors.count) of \(tensors.count) tensors") == true, "\(rehashed)")
    }
  }

  @Test func commitFactorsWritesTheStateItHashedOnce() throws {
    try withTemporaryDirectory { dir in
      let folder = dir.appendingPathComponent("model")
      let tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 3, dtype: "BF16")
      try writeShardedModel(tensors, shardCount: 2, to: folder)
      let (repository, base) = try EditRepository.initialize(
        root: dir.path, modelPath: "model", environment: Self.environment(workers: 2))
      let target = tensors.first { $0.shape.count == 2 }!
      let (rows, cols) = (target.shape[0], target.shape[1])
      let u = (0..<rows).map { Float($0 % 7) * 1e-3 }
      let v = (0..<cols).map { Float($0 % 5) - 2 }
      let factors = dir.appendingPathComponent("factors.safetensors")
      try writeSafetensors(
        [
          FixtureTensor(name: target.name + ".u", shape: [rows, 1], floats: u),
          FixtureTensor(name: target.name + ".v", shape: [cols, 1], floats: v),
        ], to: factors)
      let result = try repository.commitFactors(
        FactorCommitRequest(file: factors.path, message: "factors", method: "rome"))
      let commit = result.result.commit
      // The working model holds the committed state, and a rebuild from the objects alone (the
      // long way: the base decompressed, the rule applied) gives the same bytes.
      let working = try WorkingModel(path: folder.path)
      let state = try repository.storedState(
        try #require(try repository.contents(of: commit).tensorTrees[target.name]), tensor: target.name
      ).state
      #expect(try working.hash(of: target.name) == state.hash)
      let rebuilt = try repository.materialize(target.name, at: commit, useSnapshots: false)
      #expect(try working.read(target.name) == rebuilt)
      #expect(rebuilt != (try repository.materialize(target.name, at: base, useSnapshots: false)))
      #expect(try repository.status().isClean)
    }
  }
}
