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
    /// The start state's standalone keyframe in the local cache.
    case standalone
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
  }

  /// A residual keyframe (`KeyframeHeader.Kind.residual`) applied to the start state: the
  /// factors of every state after it up to the keyframe's state, in one canonical pass, then the
  /// keyframe's residual.
  struct Segment {
    /// The keyframe's state.
    var state: TensorState
    /// Oldest first.
    var factors: [Factors]
  }

  var tensor: String
  var revision: ObjectID
  var start: Start
  var startState: TensorState
  /// A residual keyframe between the start and `steps`, if the plan uses one.
  var segment: Segment?
  /// Oldest first.
  var steps: [Step]
  var target: TensorState
  /// Whether a replay that reaches `EditRepository.maxReplayCost` leaves a standalone keyframe
  /// of the target in the cache (checkouts; not fsck, nor a plan made without keyframes).
  var saveKeyframeAfterLongReplay = false

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
