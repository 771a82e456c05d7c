import Dispatch
import Synchronization

/// Runs the independent parts of one job (a chunk's rANS groups, a tensor's row blocks) on
/// several threads: the caller's and Dispatch's. Each part writes only bytes of its own, so the
/// result is the same for any number of workers; so is the error, which is the lowest-numbered
/// failing part's.
package enum ParallelParts {
  /// Calls `body(part)` for every part in `0..<count`, on up to `workers` threads at once, parts
  /// taken in order. Parts after a failed one may be skipped.
  ///
  /// - Throws: what `body` threw for the lowest-numbered part that failed.
  package static func run(_ count: Int, workers: Int, _ body: (Int) throws -> Void) throws {
    let threads = min(workers, count)
    guard threads > 1 else {
      for part in 0..<count { try body(part) }
      return
    }
    let next = Atomic<Int>(0)
    let failure = Mutex<(part: Int, error: any Error)?>(nil)
    try withoutActuallyEscaping(body) { body in
      nonisolated(unsafe) let body = body
      DispatchQueue.concurrentPerform(iterations: threads) { _ in
        while true {
          let part = next.wrappingAdd(1, ordering: .relaxed).oldValue
          guard part < count, failure.withLock({ ($0?.part ?? Int.max) > part }) else { return }
          do {
            try body(part)
          } catch {
            failure.withLock { if ($0?.part ?? Int.max) > part { $0 = (part, error) } }
          }
        }
      }
      if let failed = failure.withLock({ $0 }) { throw failed.error }
    }
  }

  /// `run` without errors.
  package static func run(_ count: Int, workers: Int, _ body: (Int) -> Void) {
    // A body that cannot throw leaves nothing to rethrow.
    try? run(count, workers: workers) { (part: Int) throws in body(part) }
  }

  /// `0..<count` cut into `parts` ranges of nearly equal size (the first ones one longer), in
  /// order; fewer when a range would hold less than `minimum` (a thread costs more than so
  /// little work).
  package static func ranges(_ count: Int, parts: Int, minimum: Int = 1) -> [Range<Int>] {
    let parts = max(1, min(parts, count / max(1, minimum)))
    let (size, extra) = count.quotientAndRemainder(dividingBy: parts)
    var start = 0
    return (0..<parts).map { part in
      let end = start + size + (part < extra ? 1 : 0)
      defer { start = end }
      return start..<end
    }
  }
}
