import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

extension EditRepository {
  /// Worker threads that rebuild tensors: both cores of a small machine, no more (each worker
  /// holds a tensor in memory).
  var materializationWidth: Int { max(1, min(2, ProcessInfo.processInfo.activeProcessorCount)) }

  /// Rebuilds `tensors` at `commit` on up to `materializationWidth` worker threads and hands each
  /// result to `write` on this thread in the given order, so writes, the journal and
  /// fault-injection hooks see the same sequence whatever the timing. Workers go on rebuilding
  /// while this thread writes, as long as what is held (tensors rebuilding or waiting to be
  /// written, and packed objects read for them) stays within twice the largest tensor.
  func materializeInOrder(
    _ tensors: [String], at commit: ObjectID,
    current: (String) throws -> CurrentBytes?,
    write: (String, [UInt8]) throws -> Void
  ) throws {
    final class Pending: @unchecked Sendable {
      let name: String
      let byteCount: Int
      let done = DispatchSemaphore(value: 0)
      var result: Result<[UInt8]?, Error> = .success(nil)
      init(name: String, byteCount: Int) {
        self.name = name
        self.byteCount = byteCount
      }
    }
    let workers = DispatchSemaphore(value: materializationWidth)
    var pending: [Pending] = []
    var heldBytes = 0
    func writeOldest() throws {
      let oldest = pending.removeFirst()
      oldest.done.wait()
      heldBytes -= oldest.byteCount
      let fresh: [UInt8]
      do {
        // nil: a damaged snapshot was dropped; rebuild from the object database alone.
        fresh =
          try oldest.result.get()
          ?? materialize(oldest.name, at: commit, current: try current(oldest.name), useSnapshots: false)
      } catch RepositoryError.hashMismatch where (try? current(oldest.name)) != nil {
        // The caller's bytes were not the state their hash (say, from a hand-edited stat cache)
        // claimed: rebuild from the object database alone, which is verified again.
        fresh = try materialize(oldest.name, at: commit, useSnapshots: false)
      }
      oldest.result = .success(nil)
      try write(oldest.name, fresh)
    }
    defer {
      // On an error, let running workers finish before their inputs go away.
      for item in pending { item.done.wait() }
    }
    let trees = try contents(of: commit).tensorTrees
    let sizes = try tensors.map { name -> Int in
      guard let tree = trees[name] else { return 0 }
      return try storedState(tree, tensor: name).state.byteCount
    }
    let budget = 2 * (sizes.max() ?? 0)
    for (name, size) in zip(tensors, sizes) {
      // Room first: planning may already read a packed object into memory.
      while !pending.isEmpty && heldBytes + size > budget { try writeOldest() }
      let plan = try planMaterialization(name, at: commit, current: try current(name))
      let held = plan.target.byteCount + plan.prereadByteCount
      while !pending.isEmpty && heldBytes + held > budget { try writeOldest() }
      let item = Pending(name: name, byteCount: held)
      heldBytes += held
      pending.append(item)
      workers.wait()
      DispatchQueue.global().async {
        item.result = Result { try self.runMaterialization(plan) }
        workers.signal()
        item.done.signal()
      }
    }
    while !pending.isEmpty { try writeOldest() }
  }
}
