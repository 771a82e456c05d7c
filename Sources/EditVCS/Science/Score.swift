import Apply
import DeltaStore
import Foundation

/// How well every recorded edit still holds at a revision, from weights alone (no forward pass).
public struct ScoreReport: Sendable {
  public struct Edit: Sendable {
    public var commit: ObjectID
    public var summary: String
    public var tensor: String
    public var method: String
    /// Index of the key within its edit batch.
    public var index: Int
    /// 1 − ‖W_REV k − v‖ / ‖v − W₀ k‖, W₀ the tensor at the edit's parent commit.
    public var retention: Double
  }

  public struct Preservation: Sendable {
    public var tensor: String
    public var keyCount: Int
    /// ‖(W_REV − W_base)K₀‖_F / ‖W_base K₀‖_F on the probe keys.
    public var error: Double
  }

  public var revision: ObjectID
  public var edits: [Edit]
  /// Commits that changed weights without recording keys: listed, not scored.
  public var unscored: [(commit: ObjectID, summary: String)]
  public var preservation: [Preservation]

  public var meanRetention: Double? {
    let values = edits.map(\.retention).filter { $0.isFinite }
    return values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
  }

  public var minimumRetention: Double? { edits.map(\.retention).filter { $0.isFinite }.min() }
}

extension EditRepository {
  static let probesRef = "refs/mvc/probes"

  /// `mvc probe add K0.npy --tensor NAME`: keys whose outputs must be preserved, stored in the
  /// repository (a commit on `refs/mvc/probes`, so they travel with push and clone).
  public func addProbe(_ keys: NpyArray, tensor: String) throws {
    guard let head = try head().commit else { throw RepositoryError.emptyHistory }
    let (_, shape) = try floatTensor(tensor, at: head)
    guard keys.shape.count == 2, shape.contains(keys.shape[1]) else {
      throw RepositoryError.inputShapeMismatch(
        input: "probe keys", shape: keys.shape, expected: "[m, d_in] with d_in of tensor '\(tensor)' \(shape)")
    }
    let previous = try RepositoryError.wrap("reading \(Self.probesRef)") { try git.referenceTarget(Self.probesRef) }
    var entries: [String: GitRepository.TreeEntry] = [:]
    if let previous {
      for e in try git.readTree(try commitInfo(previous).tree) { entries[e.name] = e }
    }
    let name = TreeName.escape(tensor) + ".npy.zst"
    entries[name] = .init(
      name: name, id: try writeBlob(try compressedNpy(keys.values, shape: keys.shape)), isTree: false)
    let tree = try writeTree(Array(entries.values))
    let commit = try RepositoryError.wrap("writing probes") {
      try git.createCommit(
        tree: tree, parents: previous.map { [$0] } ?? [], message: "probe keys for \(tensor)\n", author: signature())
    }
    try RepositoryError.wrap("moving \(Self.probesRef)") {
      try git.updateReference(Self.probesRef, to: commit, expected: previous, message: "probe add \(tensor)")
    }
  }

  /// Probe keys by tensor.
  func probes() throws -> [String: NpyArray] {
    guard let tip = try RepositoryError.wrap("reading \(Self.probesRef)", { try git.referenceTarget(Self.probesRef) })
    else {
      return [:]
    }
    var out: [String: NpyArray] = [:]
    for e in try git.readTree(try commitInfo(tip).tree) where e.name.hasSuffix(".npy.zst") {
      guard let tensor = TreeName.unescape(String(e.name.dropLast(".npy.zst".count))) else { continue }
      out[tensor] = try readCompressedNpy(e.id, what: "probe keys of '\(tensor)'")
    }
    return out
  }

  /// `mvc score [REV]`.
  public func score(at revision: ObjectID) throws -> ScoreReport {
    let history = try log(from: revision)
    var report = ScoreReport(revision: revision, edits: [], unscored: [], preservation: [])
    var current: [String: (values: [Float], shape: [Int])] = [:]
    for summary in history.reversed() {
      let id = summary.commit.id
      guard let parent = summary.commit.parents.first else { continue }  // the base
      guard let edit = try recordedEdit(id) else {
        // Merge commits carry the recorded edits of both sides, which are scored where they were made.
        if !(summary.record?.changes.isEmpty ?? true), summary.commit.parents.count < 2 {
          report.unscored.append((id, summary.commit.summary))
        }
        continue
      }
      let revised = try current[edit.tensor] ?? floatTensor(edit.tensor, at: revision)
      current[edit.tensor] = revised
      let original = try floatTensor(edit.tensor, at: parent)
      let retention = try RepositoryError.applying(to: edit.tensor) {
        try revised.values.withUnsafeBufferPointer { r in
          try original.values.withUnsafeBufferPointer { o in
            try EditSolvers.retention(
              revised: r, original: o, dOut: edit.dOut, dIn: edit.dIn, weightIsTransposed: edit.transposed,
              keys: edit.keys, values: edit.values)
          }
        }
      }
      for (i, value) in retention.enumerated() {
        report.edits.append(
          .init(
            commit: id, summary: summary.commit.summary, tensor: edit.tensor, method: edit.method.rawValue, index: i,
            retention: value))
      }
    }
    guard let root = history.last?.commit.id else { return report }
    for (tensor, keys) in try probes().sorted(by: { $0.key < $1.key }) {
      guard try contents(of: revision).tensorTrees[tensor] != nil else { continue }
      let revised = try current[tensor] ?? floatTensor(tensor, at: revision)
      let base = try floatTensor(tensor, at: root)
      let (dOut, dIn, transposed) = try Self.orientation(shape: base.shape, keyLength: keys.shape[1], tensor: tensor)
      let error = try RepositoryError.applying(to: tensor) {
        try revised.values.withUnsafeBufferPointer { r in
          try base.values.withUnsafeBufferPointer { b in
            try EditSolvers.preservationError(
              revised: r, original: b, dOut: dOut, dIn: dIn, weightIsTransposed: transposed, keys: keys.values)
          }
        }
      }
      report.preservation.append(.init(tensor: tensor, keyCount: keys.shape[0], error: error))
    }
    return report
  }
}
