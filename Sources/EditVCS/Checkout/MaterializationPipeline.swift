import DeltaStore
import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

extension EditRepository {
  /// Rebuilds `tensors` at `commit` on up to `environment.workerThreads` worker threads and hands
  /// each result to `write` on this thread in the given order, so writes, the journal and
  /// fault-injection hooks see the same sequence whatever the timing. Workers go on rebuilding
  /// while this thread writes, as long as what is held (tensors rebuilding or waiting to be
  /// written, and packed objects read for them) stays within twice the largest tensor.
  ///
  /// Workers get only a `TensorRebuilder` and a plan (both `Sendable`); libgit2 and the
  /// repository itself stay on this thread.
  func materializeInOrder(
    _ tensors: [String], at commit: ObjectID,
    current: (String) throws -> CurrentBytes?,
    write: (String, [UInt8]) throws -> Void
  ) throws {
    /// One tensor on its way: a worker stores the result once and signals `done`; this thread
    /// takes it after waiting on `done`.
    final class Pending: Sendable {
      let name: String
      let byteCount: Int
      let done = DispatchSemaphore(value: 0)
      private let result = Mutex<Result<[UInt8]?, any Error>>(.success(nil))
      init(name: String, byteCount: Int) {
        self.name = name
        self.byteCount = byteCount
      }
      func store(_ outcome: Result<[UInt8]?, any Error>) { result.withLock { $0 = outcome } }
      /// The worker's result, no longer held here (the tensor's memory goes with the caller's copy).
      func take() -> Result<[UInt8]?, any Error> {
        result.withLock { held in
          defer { held = .success(nil) }
          return held
        }
      }
    }
    let workers = DispatchSemaphore(value: environment.workerThreads)
    let rebuilder = self.rebuilder
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
          try oldest.take().get()
          ?? materialize(oldest.name, at: commit, current: try current(oldest.name), useSnapshots: false)
      } catch RepositoryError.hashMismatch where (try? current(oldest.name)) != nil {
        // The caller's bytes were not the state their hash (say, from a hand-edited stat cache)
        // claimed: rebuild from the object database alone, which is verified again.
        fresh = try materialize(oldest.name, at: commit, useSnapshots: false)
      }
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
        item.store(Result { try rebuilder.run(plan) })
        workers.signal()
        item.done.signal()
      }
    }
    while !pending.isEmpty { try writeOldest() }
  }
}
