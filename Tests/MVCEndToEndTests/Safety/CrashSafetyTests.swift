import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// SIGKILL `mvc checkout` at seeded random delays; afterwards the repository must be usable
/// and the working model must be exactly one of the two commits.
@Suite(.serialized) struct CrashSafetyTests {

  @Test func killedCheckoutLeavesOldOrNewState() throws {
    try withTemporaryDirectory { dir in
      var tensors = transformerFixture(blocks: 2, hidden: 48, intermediate: 144, seed: 21)
      let model = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors(tensors, to: model)
      #expect(runMVC(["init", "-q", "model.safetensors"], in: dir).status == 0)
      var states: [String: [UInt8]] = [:]
      states[try RemoteTests.head(dir)] = Array(try Data(contentsOf: model))
      for step in 0..<4 {
        let (id, bytes) = try RemoteTests.commitEdit(&tensors, in: dir, step: step)
        states[id] = bytes
      }
      let ids = Array(states.keys).sorted()
      var rng = SplitMix64(seed: 4242)
      let runs = 24
      var killedMidway = 0
      for run in 0..<runs {
        let target = ids[Int(rng.next() % UInt64(ids.count))]
        let running = try startMVC(["checkout", "-q", "--force", target], in: dir)
        usleep(useconds_t(rng.next() % 150_000))
        if running.process.isRunning {
          kill(running.process.processIdentifier, SIGKILL)
          killedMidway += 1
        }
        running.process.waitUntilExit()
        _ = running.finishMVC()
        let status = runMVC(["status"], in: dir)
        #expect(status.status == 0, "run \(run): status after kill: \(status.stderr)")
        let head = try RemoteTests.head(dir)
        #expect(states[head] != nil, "run \(run): HEAD \(head) is no commit of ours")
        #expect(Array(try Data(contentsOf: model)) == states[head], "run \(run): model is not HEAD's state")
        let fsck = runMVC(["fsck"], in: dir)
        #expect(fsck.status == 0 && fsck.stdout.isEmpty, "run \(run): \(fsck.stdout)")
      }
      print("[crash] \(runs) checkouts, \(killedMidway) killed by SIGKILL while running (delays 0-150 ms)")
    }
  }
}
