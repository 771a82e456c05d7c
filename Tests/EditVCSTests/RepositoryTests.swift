import DeltaStore
import EditVCS
import Foundation
import TestSupport
import Testing

/// Repository operations through the library API, on generated models in temporary folders.
@Suite struct RepositoryTests {
  /// Two worker threads, as the CLI uses on a two-core machine, so the pipeline's threads run.
  static var environment: RepositoryEnvironment { RepositoryEnvironment(commitTime: 1_700_000_000, workerThreads: 2) }

  static func edit(_ tensors: inout [FixtureTensor], index: Int, rank: Int, seed: UInt64) {
    applyLowRankEdit(&tensors, index: index, rank: rank, seed: seed)
  }

  static func bytes(_ url: URL) throws -> [UInt8] { Array(try Data(contentsOf: url)) }

  @Test func commitsAndChecksOutEveryStateExactly() throws {
    try withTemporaryDirectory { dir in
      let model = dir.appendingPathComponent("model.safetensors")
      var tensors = transformerFixture(blocks: 2, hidden: 32, intermediate: 96, seed: 7)
      try writeSafetensors(tensors, to: model)
      let (repository, base) = try EditRepository.initialize(
        root: dir.path, modelPath: "model.safetensors", environment: Self.environment)
      var history: [(ObjectID, [UInt8])] = [(base, try Self.bytes(model))]
      for step in 0..<8 {
        Self.edit(&tensors, index: [1, 4, 0][step % 3], rank: step % 2 == 0 ? 1 : 4, seed: UInt64(step))
        try writeSafetensors(tensors, to: model)
        let result = try repository.commit(CommitOptions(message: "edit \(step)"))
        let change = try #require(result.record.changes.first)
        #expect(change.storage == "low_rank")
        #expect(change.rank == (step % 2 == 0 ? 1 : 4))
        history.append((result.commit, try Self.bytes(model)))
      }
      // Check out in an order that exercises replay from the base and from neighbours.
      for (commit, expected) in history.reversed() + history {
        try repository.checkout(commit, branch: nil, force: false)
        #expect(try Self.bytes(model) == expected)
        #expect(try repository.status().isClean)
      }
      let output = dir.appendingPathComponent("elsewhere.safetensors")
      try repository.materialize(history[3].0, to: output.path)
      #expect(try Self.bytes(output) == history[3].1)
      #expect(try repository.commitCount() == 9)
    }
  }

  @Test func secondOpenIsRefusedWhileTheLockIsHeld() throws {
    try withTemporaryDirectory { dir in
      try writeSafetensors(
        transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 1),
        to: dir.appendingPathComponent("model.safetensors"))
      let (repository, _) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      #expect(throws: RepositoryError.self) {
        _ = try EditRepository.open(searchingFrom: dir.path)
      }
      withExtendedLifetime(repository) {}
    }
  }

  @Test func anInterruptedCheckoutIsCompletedByTheNextOpen() throws {
    try withTemporaryDirectory { dir in
      let model = dir.appendingPathComponent("model.safetensors")
      var tensors = transformerFixture(blocks: 1, hidden: 16, intermediate: 48, seed: 3)
      try writeSafetensors(tensors, to: model)
      let gitDirectory = dir.path + "/.mvc"
      let (base, baseBytes): (ObjectID, [UInt8]) = try {
        let (repository, base) = try EditRepository.initialize(
          root: dir.path, modelPath: "model.safetensors", environment: Self.environment)
        let baseBytes = try Self.bytes(model)
        Self.edit(&tensors, index: 1, rank: 1, seed: 9)
        try writeSafetensors(tensors, to: model)
        _ = try repository.commit(CommitOptions(message: "edit"))
        return (base, baseBytes)
      }()
      // Simulate a checkout of the base killed half way: journal written, bytes torn.
      let journal = "{\"operation\":\"checkout\",\"target\":\"\(base.hex)\"}"
      try Data(journal.utf8).write(to: URL(fileURLWithPath: gitDirectory + "/mvc-journal.json"))
      var torn = try Self.bytes(model)
      for i in stride(from: torn.count - 400, to: torn.count, by: 1) { torn[i] = 0xFF }
      try Data(torn).write(to: model)
      let reopened = try EditRepository.open(searchingFrom: dir.path, environment: Self.environment)
      #expect(try Self.bytes(model) == baseBytes)
      #expect(try reopened.head() == .detached(base))
      #expect(!FileManager.default.fileExists(atPath: gitDirectory + "/mvc-journal.json"))
    }
  }

  @Test func unknownRevisionNamesItAndTheHistoryLength() throws {
    try withTemporaryDirectory { dir in
      try writeSafetensors(
        transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 1),
        to: dir.appendingPathComponent("model.safetensors"))
      let (repository, _) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      #expect(throws: RepositoryError.unknownRevision("HEAD~40", commitCount: 1)) {
        try repository.resolve("HEAD~40")
      }
    }
  }
}
