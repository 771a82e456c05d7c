import Apply
import DeltaStore
import Foundation

/// A closed-form edit to compute and commit (`mvc edit`): keys and targets as rows, as files
/// store them (n×d_in, n×d_out), and the preserved keys' second moment.
public struct KnowledgeEditRequest {
  package var method: EditMethod
  package var tensor: String
  package var keys: NpyArray
  package var values: NpyArray
  /// C₀ (d_in×d_in), or nil when `covarianceKeys` is given.
  package var covariance: NpyArray?
  /// K₀ (m×d_in): C₀ = K₀ᵀK₀/m.
  package var covarianceKeys: NpyArray?
  package var lambda: Double
  package var mu: Double
  /// CounterFact-style JSON lines, kept verbatim.
  package var facts: [UInt8]?
  package var message: String
  /// AlphaEdit: singular values of C₀ below this span the null space (`nullspace_threshold`).
  package var nullspaceThreshold: Double
  /// AlphaEdit: `L2`.
  package var l2: Double
  /// ENCORE: α, `update_norm_lambda`.
  package var normLambda: Double

  public init(
    method: EditMethod, tensor: String, keys: NpyArray, values: NpyArray, covariance: NpyArray?,
    covarianceKeys: NpyArray?, lambda: Double, mu: Double, facts: [UInt8]?, message: String,
    nullspaceThreshold: Double = 2e-2, l2: Double = 10, normLambda: Double = 20
  ) {
    self.nullspaceThreshold = nullspaceThreshold
    self.l2 = l2
    self.normLambda = normLambda
    self.method = method
    self.tensor = tensor
    self.keys = keys
    self.values = values
    self.covariance = covariance
    self.covarianceKeys = covarianceKeys
    self.lambda = lambda
    self.mu = mu
    self.facts = facts
    self.message = message
  }
}

/// The keys, targets and covariance an edit commit recorded (`edit-data/` in its tree).
struct RecordedEdit {
  var commit: ObjectID
  var tensor: String
  var method: EditMethod
  var keys: [Double]
  var values: [Double]
  var covariance: [Double]
  var lambda: Double
  var mu: Double
  var dIn: Int
  var dOut: Int
  var transposed: Bool
  var count: Int { dIn > 0 ? keys.count / dIn : 0 }
}

enum EditDataName {
  static let keys = "keys.npy.zst"
  static let values = "values.npy.zst"
  static let covariance = "covariance.npy.zst"
  static let facts = "facts.jsonl"
}

extension EditRepository {
  /// Loads a float tensor's state at `commit` as Float32 (scoring and solving read it so).
  func floatTensor(_ name: String, at commit: ObjectID) throws -> (values: [Float], shape: [Int]) {
    guard let tree = try contents(of: commit).tensorTrees[name] else {
      throw RepositoryError.tensorNotInCommit(tensor: name, revision: commit.shortHex)
    }
    let state = try storedState(tree, tensor: name).state
    guard state.dtype.isEditableFloat, state.shape.count == 2 else {
      throw RepositoryError.notAMatrix(
        tensor: name, dtype: state.dtype.rawValue, shape: state.shape, operation: "a closed-form edit", revisions: nil)
    }
    let bytes = try materialize(name, at: commit)
    var values = [Float](repeating: 0, count: state.elementCount)
    bytes.withUnsafeBytes { raw in
      values.withUnsafeMutableBufferPointer {
        FloatConversion.decode(raw, dtype: state.dtype, elements: 0..<state.elementCount, into: $0)
      }
    }
    return (values, state.shape)
  }

  /// Decides the orientation from the key length: nn.Linear stores W as d_out×d_in, GPT-2's
  /// Conv1D as d_in×d_out. A square matrix is taken as nn.Linear.
  static func orientation(shape: [Int], keyLength: Int, tensor: String) throws -> (
    dOut: Int, dIn: Int, transposed: Bool
  ) {
    if shape[1] == keyLength { return (shape[0], shape[1], false) }
    if shape[0] == keyLength { return (shape[1], shape[0], true) }
    throw RepositoryError.inputShapeMismatch(
      input: "keys", shape: [keyLength],
      expected: "rows of length d_in of tensor '\(tensor)' \(shape) (a Linear [d_out, d_in] or a Conv1D [d_in, d_out])")
  }

  func compressedNpy(_ values: [Double], shape: [Int]) throws -> [UInt8] {
    let data = try NpyFile.encode(values, shape: shape)
    return try makeCompressor(level: 3).compress(Array(data))
  }

  func readCompressedNpy(_ id: ObjectID, what: String) throws -> NpyArray {
    let frame = try git.readBlob(id)
    // The frame records its size; cap it so a hostile blob cannot ask for more than 4 GiB.
    let size = try frame.withUnsafeBytes { try Zstd.frameContentSize($0, limit: 1 << 32) }
    let bytes = try frame.withUnsafeBytes { try Zstd.decompress($0, expectedByteCount: size) }
    return try NpyFile.parse(Data(bytes), path: what)
  }

  /// `mvc edit`: computes ROME/EMMET/MEMIT against the tensor at HEAD, commits the factors the
  /// formula gives (no dense ΔW is formed) and records keys, targets and covariance.
  public func edit(_ request: KnowledgeEditRequest) throws -> (CommitResult, EditDiagnostics) {
    let parent = try requireCleanHead().commit
    let (w, shape) = try floatTensor(request.tensor, at: parent)
    guard request.keys.shape.count == 2, request.values.shape.count == 2,
      request.keys.shape[0] == request.values.shape[0]
    else {
      throw RepositoryError.inputShapeMismatch(
        input: "values", shape: request.values.shape,
        expected: "[n, d_out] with the same n as keys \(request.keys.shape) ([n, d_in])")
    }
    let (dOut, dIn, transposed) = try Self.orientation(
      shape: shape, keyLength: request.keys.shape[1], tensor: request.tensor)
    guard request.values.shape[1] == dOut else {
      throw RepositoryError.inputShapeMismatch(
        input: "values", shape: request.values.shape,
        expected: "[\(request.values.shape[0]), \(dOut)] (d_out of tensor '\(request.tensor)')")
    }
    let covariance: [Double]
    if let c = request.covariance {
      guard c.shape == [dIn, dIn] else {
        throw RepositoryError.inputShapeMismatch(input: "covariance", shape: c.shape, expected: "[\(dIn), \(dIn)]")
      }
      covariance = c.values
    } else if let k0 = request.covarianceKeys {
      guard k0.shape.count == 2, k0.shape[1] == dIn else {
        throw RepositoryError.inputShapeMismatch(input: "covariance keys", shape: k0.shape, expected: "[m, \(dIn)]")
      }
      covariance = try RepositoryError.applying(to: request.tensor) {
        try EditSolvers.secondMoment(ofKeys: k0.values, count: k0.shape[0], dIn: dIn)
      }
    } else {
      throw RepositoryError.missingCovariance
    }
    var problem = EditProblem(
      w0: .float32(w), dOut: dOut, dIn: dIn, weightIsTransposed: transposed, keys: request.keys.values,
      values: request.values.values, covariance: covariance, lambda: request.lambda, mu: request.mu)
    let sequential = try prepareSequentialEdit(request, problem: &problem, parent: parent)
    let update = try RepositoryError.applying(to: request.tensor) {
      try EditSolvers.solve(problem, method: request.method)
    }
    let planned = PlannedChange(
      name: request.tensor,
      change: .exactFactors(u: update.storageLeft, v: update.storageRight, rank: update.rank))
    let keysBlob = try writeBlob(try compressedNpy(request.keys.values, shape: request.keys.shape))
    let covarianceBlob = try writeBlob(try compressedNpy(covariance, shape: [dIn, dIn]))
    var data: [GitRepository.TreeEntry] = [
      .init(name: EditDataName.keys, id: keysBlob, isTree: false),
      .init(
        name: EditDataName.values,
        id: try writeBlob(try compressedNpy(request.values.values, shape: request.values.shape)), isTree: false),
      // The same C₀ in every edit of a layer is one blob: git stores identical content once.
      .init(name: EditDataName.covariance, id: covarianceBlob, isTree: false),
    ]
    if let facts = request.facts {
      data.append(.init(name: EditDataName.facts, id: try writeBlob(facts), isTree: false))
    }
    var details = [
      "tensor": request.tensor, "lambda": "\(request.lambda)", "mu": "\(request.mu)",
      "edit_count": "\(update.rank == 0 ? 0 : request.keys.shape[0])", "orientation": transposed ? "conv1d" : "linear",
    ]
    if let d = update.diagnostics.romeDenominator { details["rome_denominator"] = "\(d)" }
    if let sequential {
      details.merge(sequential.details) { $1 }
      if request.method == .alphaedit { details["covariance_blob"] = covarianceBlob.hex }
    }
    let result = try commitChanges(
      [planned], message: request.message, method: request.method.rawValue, details: details, parent: parent,
      extraEntries: [.init(name: TreeEntryName.editData, id: try writeTree(data), isTree: true)])
    if let sequential {
      cacheAccumulator(after: sequential.accumulator, keys: request.keys.values, keysBlob: keysBlob, dIn: dIn)
    }
    return (result, update.diagnostics)
  }

  /// The edit a commit recorded, or nil for commits without keys.
  func recordedEdit(_ commit: ObjectID) throws -> RecordedEdit? {
    let info = try commitInfo(commit)
    let root = try git.readTree(info.tree)
    guard let dataTree = root.first(where: { $0.name == TreeEntryName.editData }),
      let record = try editRecord(of: contents(of: commit)),
      let method = EditMethod(rawValue: record.method), let tensor = record.details?["tensor"]
    else { return nil }
    var blobs: [String: ObjectID] = [:]
    for e in try git.readTree(dataTree.id) { blobs[e.name] = e.id }
    guard let k = blobs[EditDataName.keys], let v = blobs[EditDataName.values], let c = blobs[EditDataName.covariance]
    else {
      throw RepositoryError.corruptObject(
        what: "commit \(commit.shortHex)", reason: "edit-data/ lacks keys, values or covariance")
    }
    let keys = try readCompressedNpy(k, what: "keys of \(commit.shortHex)")
    let values = try readCompressedNpy(v, what: "values of \(commit.shortHex)")
    let cov = try readCompressedNpy(c, what: "covariance of \(commit.shortHex)")
    guard keys.shape.count == 2, values.shape.count == 2 else {
      throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "recorded keys are not 2-D")
    }
    return RecordedEdit(
      commit: commit, tensor: tensor, method: method, keys: keys.values, values: values.values, covariance: cov.values,
      lambda: Double(record.details?["lambda"] ?? "1") ?? 1, mu: Double(record.details?["mu"] ?? "0.1") ?? 0.1,
      dIn: keys.shape[1], dOut: values.shape[1], transposed: record.details?["orientation"] == "conv1d")
  }
}
