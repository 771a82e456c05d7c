import Apply
import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Everything the rebuild of one tensor needs, read from the object database beforehand, so a
/// worker thread can run it (`TensorRebuilder`).
struct MaterializationPlan: Sendable {
  /// Runs a decode of stored objects, naming the tensor and revision in what a codec throws
  /// (a zstd or residual error alone does not say which object was bad).
  func decodingStoredData<T>(_ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let error as DeltaStoreError {
      throw RepositoryError.storedData(error, tensor: tensor, revision: revision.shortHex)
    }
  }

  enum Start {
    /// The caller's current bytes of the oldest state, read when the plan runs.
    case current(@Sendable () throws -> [UInt8])
    /// The start state's snapshot in the local cache.
    case snapshot
    /// A `full` state's compressed chunks.
    case full(chunks: [Chunk])
    /// A `reference` state: the base file outside the repository.
    case reference(path: String)
  }

  /// One compressed chunk of a `full` state.
  enum Chunk {
    /// A loose object, read in place (no libgit2 handle: any thread).
    case loose(LooseBlob)
    /// A packed object, read beforehand (libgit2's buffer, not copied).
    case packed(GitBlob)
  }

  /// Compressed factor blobs of one low-rank state.
  struct Factors {
    var u: [UInt8]
    var v: [UInt8]
    var rows: Int
    var cols: Int
    var rank: Int
  }

  struct Step {
    var state: TensorState
    var factors: Factors
    var residual: [UInt8]?
    /// Where to leave a snapshot of this state after applying it, if anywhere.
    var saveSnapshot: String?
  }

  var tensor: String
  var revision: ObjectID
  var start: Start
  var startState: TensorState
  /// Oldest first.
  var steps: [Step]
  var target: TensorState

  /// Packed chunks already read into memory for this plan: tensor-sized, unlike the factors and
  /// residuals (a few percent of it), which the budget leaves out.
  var prereadByteCount: Int {
    var total = 0
    if case .full(let chunks) = start {
      for case .packed(let blob) in chunks { total += blob.content.count }
    }
    return total
  }
}
