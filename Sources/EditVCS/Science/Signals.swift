import Apply
import DeltaStore
import Foundation

/// Collapse signals from the weights alone, per edited tensor along the first-parent history:
/// ‖W_t‖_F/‖W_0‖_F (ENCORE and Norm-Anchor Scaling tie collapse to explosive norm growth),
/// ‖W_t − W_0‖_F, σ₁ and σ₁²/‖ΔW‖_F² of the cumulative update ΔW = W_t − W_0 (W_0 the root's).
public struct SignalReport: Sendable {
  /// One tensor's signals at a commit that changed it.
  public struct Point: Sendable {
    public var commit: ObjectID
    /// Position of the commit in ``SignalReport/commits``.
    public var position: Int
    public var tensor: String
    /// How many commits of the history have changed the tensor so far (this one included).
    public var editCount: Int
    public var measure: CollapseMeasure
    /// ‖W_t − W_0‖_F / √editCount: flat while edits add independent updates (the healthy √t
    /// growth of editing-science §0), rising when they pile up.
    public var driftPerSqrtEdit: Double { measure.distance / Double(max(editCount, 1)).squareRoot() }
    /// ``driftPerSqrtEdit`` over its early value (the median of the tensor's first
    /// ``SignalFlags/earlyCount`` points); nil before there are that many.
    public var driftRatio: Double?
    /// Whether the drift ratio crossed ``SignalFlags/driftFactor`` here (a rising edge).
    public var flagged: Bool
  }

  public var revision: ObjectID
  /// The first-parent history, root first.
  public var commits: [(id: ObjectID, summary: String)]
  public var points: [Point]

  public var tensors: [String] { Array(Set(points.map(\.tensor))).sorted() }
  public var flags: [Point] { points.filter(\.flagged) }
}

/// The rule behind the drift flag (editing-science §0: in the authors' MEMIT runs, once
/// ‖W_t − W_0‖_F/√t exceeded 1.5× its early value, SST-2 fell below half its baseline 100 to
/// 300 edits later, in 8/8 runs).
public enum SignalFlags {
  public static let driftFactor = 1.5
  public static let earlyCount = 5
}

extension EditRepository {
  /// `mvc score --signals`: the signals of every float matrix the first-parent history up to
  /// `revision` changed, at each commit that changed it. States are rebuilt one step from the
  /// previous one (the canonical rule), so the cost is one replay step and one warm-started
  /// subspace iteration per change.
  public func signals(at revision: ObjectID) throws -> SignalReport {
    let history = Array(try log(from: revision, firstParentOnly: true).reversed())
    var report = SignalReport(
      revision: revision, commits: history.map { ($0.commit.id, $0.commit.summary) }, points: [])
    guard let root = history.first?.commit.id else { return report }
    let rootTrees = try contents(of: root).tensorTrees
    struct Track {
      var base: [Float]
      var rows: Int
      var cols: Int
      var previous: CurrentBytes?
      var estimator = CollapseSignals()
      var edits = 0
      var early: [Double] = []
      var above = false
    }
    var tracks: [String: Track] = [:]
    var previousTrees = rootTrees
    for (position, summary) in history.enumerated().dropFirst() {
      let id = summary.commit.id
      let trees = try contents(of: id).tensorTrees
      defer { previousTrees = trees }
      for (name, tree) in trees.sorted(by: { $0.key < $1.key }) where previousTrees[name] != tree {
        guard let rootTree = rootTrees[name] else { continue }
        let state = try storedState(tree, tensor: name).state
        guard state.dtype.isEditableFloat, state.shape.count == 2 else { continue }
        if tracks[name] == nil {
          let base = try floatTensor(name, at: root)
          let rootState = try storedState(rootTree, tensor: name).state
          guard rootState.shape == state.shape else { continue }
          tracks[name] = Track(
            base: base.values, rows: state.shape[0], cols: state.shape[1],
            previous: CurrentBytes(hash: rootState.hash, bytes: try materialize(name, at: root)))
        }
        guard var track = tracks[name] else { continue }
        let bytes = try materialize(name, at: id, current: track.previous)
        track.previous = CurrentBytes(hash: state.hash, bytes: bytes)
        var current = [Float](repeating: 0, count: state.elementCount)
        bytes.withUnsafeBytes { raw in
          current.withUnsafeMutableBufferPointer {
            FloatConversion.decode(raw, dtype: state.dtype, elements: 0..<state.elementCount, into: $0)
          }
        }
        let measure = current.withUnsafeBufferPointer { c in
          track.base.withUnsafeBufferPointer { b in
            track.estimator.measure(current: c, base: b, rows: track.rows, cols: track.cols)
          }
        }
        track.edits += 1
        var point = SignalReport.Point(
          commit: id, position: position, tensor: name, editCount: track.edits, measure: measure, driftRatio: nil,
          flagged: false)
        if track.early.count < SignalFlags.earlyCount {
          track.early.append(point.driftPerSqrtEdit)
        } else {
          let early = NormOutliers.median(track.early)
          if early > 0 {
            let ratio = point.driftPerSqrtEdit / early
            point.driftRatio = ratio
            let above = ratio > SignalFlags.driftFactor
            point.flagged = above && !track.above
            track.above = above
          }
        }
        tracks[name] = track
        report.points.append(point)
      }
    }
    return report
  }

  /// The largest ‖W‖_F/‖W_root‖_F over the float matrices `commit` holds that differ from the
  /// root's: the built-in `bisect run --max-norm-growth` predicate.
  public func maxNormGrowth(at commit: ObjectID) throws -> Double {
    guard let root = try git.walk(from: [commit], firstParentOnly: true).last else { return 1 }
    let rootTrees = try contents(of: root).tensorTrees
    var result = 1.0
    for (name, tree) in try contents(of: commit).tensorTrees where rootTrees[name] != nil && rootTrees[name] != tree {
      let state = try storedState(tree, tensor: name).state
      guard state.dtype.isEditableFloat, state.shape.count == 2 else { continue }
      let now = frobeniusNorm(of: try floatTensor(name, at: commit).values)
      let base = frobeniusNorm(of: try floatTensor(name, at: root).values)
      result = max(result, base > 0 ? now / base : (now > 0 ? .infinity : 1))
    }
    return result
  }
}

/// ‖x‖_F with Float64 accumulation.
private func frobeniusNorm(of values: [Float]) -> Double {
  values.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
}
