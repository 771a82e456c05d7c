import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

@Suite("locks, journal, reference base")
struct RecoveryTests {
  /// While another process holds `.mvc/lock`, every command refuses and changes nothing.
  @Test func lockHeldByAnotherProcess() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(1)
      try s.edit(rank: 1)
      let fd = open(s.repository.appendingPathComponent("lock").path, O_RDWR)
      try #require(fd >= 0)
      defer { close(fd) }
      try #require(flock(fd, LOCK_EX | LOCK_NB) == 0)
      s.expectRefused(["commit", "-m", "x"], naming: ["another mvc is running"])
      s.expectRefused(["checkout", "--force", "HEAD~1"], naming: ["another mvc is running"])
      flock(fd, LOCK_UN)
      expectSuccess(runMVC(["commit", "-m", "after the lock"], in: dir))
    }
  }

  /// A checkout killed mid-write leaves the journal; the next command finishes the move.
  @Test func interruptedCheckoutIsCompleted() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel(blocks: 2, hidden: 32, intermediate: 96)
      try s.initialize()
      try s.editAndCommit(3)
      let ids = try s.commitIDs()
      // Half of the bytes already at state 1, half still at state 3 (a torn in-place write).
      let from = [UInt8](s.states[3][""] ?? Data())
      let to = [UInt8](s.states[1][""] ?? Data())
      try #require(from.count == to.count)
      let torn = Array(to.prefix(to.count / 2)) + Array(from.suffix(from.count - to.count / 2))
      try Data(torn).write(to: s.model)
      let journal = #"{"operation":"checkout","target":"\#(ids[2])"}"#
      try Data(journal.utf8).write(to: s.repository.appendingPathComponent("mvc-journal.json"))
      let status = runMVC(["status"], in: dir)
      expectSuccess(status, "status after a crash")
      try s.expectWorkingState(1, "recovered to the journal's target")
      #expect(status.stdout.hasPrefix("HEAD detached at \(ids[2].prefix(7))"), "\(status.stdout)")
      #expect(status.stdout.contains("nothing to commit"), "\(status.stdout)")
      #expect(!FileManager.default.fileExists(atPath: s.repository.appendingPathComponent("mvc-journal.json").path))
    }
  }

  /// `mvc init model.safetensors --reference-base COPY` reads the base from an unchanging copy,
  /// so edits to the working model never make the history unreadable.
  @Test func referenceBaseSurvivesEdits() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try FileManager.default.copyItem(at: s.model, to: dir.appendingPathComponent("base.safetensors"))
      let result = runMVC(["init", "model.safetensors", "--reference-base", "base.safetensors"], in: dir)
      expectSuccess(result, "init --reference-base")
      try #require(result.status == 0)
      s.states.append(try snapshot(s.model))
      try s.edit(rank: 1)
      let commit = runMVC(["commit", "-m", "first edit"], in: dir)
      expectSuccess(commit, "commit after init --reference-base")
      try #require(commit.status == 0)
      s.states.append(try snapshot(s.model))
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir))
      try s.expectWorkingState(0, "base")
    }
  }
}

@Suite("data-loss guards")
struct DataLossGuardTests {
  /// `checkout REV -o PATH` with PATH = the working model overwrites uncommitted edits
  /// without --force; it must refuse like a plain checkout does.
  @Test func checkoutOutputOntoTheWorkingModel() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(1)
      let applied = try s.edit(rank: 1)
      s.expectRefused(["checkout", "HEAD~1", "-o", "model.safetensors"], naming: ["is the working model"])
      _ = applied
    }
  }

  /// An all-zero delta changes nothing, so it is "nothing to commit", as for the working model.
  @Test func zeroDeltaIsNothingToCommit() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      try writeSafetensors(
        [
          FixtureTensor(
            name: "model.layers.0.mlp.up_proj.weight", shape: [96, 32], floats: [Float](repeating: 0, count: 96 * 32))
        ],
        to: dir.appendingPathComponent("zero.safetensors"))
      s.expectRefused(["commit", "--delta", "zero.safetensors", "-m", "zero"], naming: ["nothing to commit"])
      try s.expectWorkingState(0, "a zero delta leaves the model")
    }
  }
}
