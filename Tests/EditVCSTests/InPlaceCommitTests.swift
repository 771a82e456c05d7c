import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

/// An editor that patches one tensor of a multi-tensor file in place (same inode and size, new
/// times): the file is rehashed, and only the tensors whose bytes changed are changes.
@Suite struct InPlaceCommitTests {
  /// Writes `bytes` over the file's bytes at `offset`, as an editor patching in place does.
  private func patch(_ url: URL, at offset: Int, with bytes: [UInt8]) throws {
    let handle = try FileHandle(forWritingTo: url)
    defer { try? handle.close() }
    try handle.seek(toOffset: UInt64(offset))
    try handle.write(contentsOf: Data(bytes))
  }

  @Test func equalBytesRewrittenInPlaceAreNoChangeAndOneRewrittenTensorIsTheOnlyChange() throws {
    try withTemporaryDirectory { dir in
      let edit = RoundingRefinementTests.Edit(rows: 64, cols: 256, dtype: .bf16, relativeNorm: 0.01, seed: 9)
      var rng = SplitMix64(seed: 3)
      let other = (0..<(64 * 256 * 2)).map { _ in UInt8(truncatingIfNeeded: rng.next() % 64) }
      let names = ["a.weight", "b.weight", "c.weight"]
      let model = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors(
        [
          FixtureTensor(name: names[0], dtype: "BF16", shape: [64, 256], bytes: other),
          FixtureTensor(name: names[1], dtype: "BF16", shape: [64, 256], bytes: edit.old),
          FixtureTensor(name: names[2], dtype: "BF16", shape: [64, 256], bytes: other.reversed()),
        ], to: model)
      let before = Array(try Data(contentsOf: model))
      let (repository, base) = try EditRepository.initialize(root: dir.path, modelPath: "model.safetensors")
      let file = try SafetensorsFile(path: model.path)
      let offset = try #require(file.tensor(named: names[1]).map { file.fileOffset(of: $0) })

      // The same bytes written again, after the stat cache was written: the file's times
      // change, its tensors do not.
      usleep(30_000)
      try patch(model, at: offset, with: edit.old)
      #expect(try repository.status().isClean)
      #expect(throws: RepositoryError.nothingToCommit) { try repository.commit(CommitOptions(message: "none")) }

      // One tensor rewritten in place: the only change, stored low-rank, checked out exactly.
      usleep(30_000)
      try patch(model, at: offset, with: edit.new)
      #expect(try repository.status().entries.map(\.name) == [names[1]])
      let after = Array(try Data(contentsOf: model))
      let result = try repository.commit(CommitOptions(message: "one tensor"))
      #expect(result.record.changes.map(\.name) == [names[1]])
      #expect(result.record.changes.first?.storage == "low_rank")
      try repository.checkout(base, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == before)
      try repository.checkout(result.commit, branch: nil, force: false)
      #expect(Array(try Data(contentsOf: model)) == after)
    }
  }
}
