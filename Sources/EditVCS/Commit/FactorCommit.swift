import Apply
import DeltaStore
import Foundation

/// An editor's own low-rank factors to commit as they are (`mvc commit-factors`), with the
/// provenance `mvc edit` records.
public struct FactorCommitRequest {
  /// A safetensors file holding, per tensor `T`, `T.u` (rows×r) and `T.v` (cols×r) in storage
  /// orientation: ΔW = U·Vᵀ over the tensor viewed as a row-major rows×cols matrix.
  public var file: String
  public var message: String
  /// The editing method's name (`rome`, `memit`, ...), recorded as the commit's method.
  public var method: String
  /// Facts as JSON lines, kept verbatim (`edit-data/facts.jsonl`).
  public var facts: [UInt8]?
  /// The editor's hyper-parameters, a JSON object (`edit-data/hyperparameters.json`).
  public var hyperparameters: [UInt8]?
  public var keys: NpyArray?
  public var values: NpyArray?
  public var covariance: NpyArray?

  public init(
    file: String, message: String, method: String, facts: [UInt8]? = nil, hyperparameters: [UInt8]? = nil,
    keys: NpyArray? = nil, values: NpyArray? = nil, covariance: NpyArray? = nil
  ) {
    self.file = file
    self.message = message
    self.method = method
    self.facts = facts
    self.hyperparameters = hyperparameters
    self.keys = keys
    self.values = values
    self.covariance = covariance
  }
}

/// What `commitFactors` stored, and which factors it had to round.
public struct FactorCommitResult: Sendable {
  public var result: CommitResult
  /// Tensors whose factors came as F64 and were rounded to F32 (storage is F32).
  public var roundedFromFloat64: [String]
}

extension EditDataName {
  static let hyperparameters = "hyperparameters.json"
}

/// Reads a factor file: `<tensor>.u` / `<tensor>.v` pairs, checked against the working model.
enum FactorFileReader {
  struct Entry {
    var tensor: String
    var u: [Float]
    var v: [Float]
    var rank: Int
    var roundedFromFloat64: Bool
  }

  static func read(_ path: String, model: WorkingModel) throws -> [Entry] {
    let file = try SafetensorsFile(path: path, followSymlink: true)
    var pairs: [String: (u: TensorInfo?, v: TensorInfo?)] = [:]
    for info in file.tensors {
      let name = info.name
      guard name.hasSuffix(".u") || name.hasSuffix(".v"), name.count > 2 else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: name, detail: "is neither '<tensor>.u' nor '<tensor>.v'")
      }
      let tensor = String(name.dropLast(2))
      var pair = pairs[tensor] ?? (nil, nil)
      if name.hasSuffix(".u") { pair.u = info } else { pair.v = info }
      pairs[tensor] = pair
    }
    var entries: [Entry] = []
    for (tensor, pair) in pairs.sorted(by: { $0.key < $1.key }) {
      guard let u = pair.u, let v = pair.v else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor,
          detail: "has '\(tensor).\(pair.u == nil ? "v" : "u")' but no '\(tensor).\(pair.u == nil ? "u" : "v")'")
      }
      guard let (_, target) = model.location(of: tensor) else {
        throw RepositoryError.deltaMismatch(file: path, tensor: tensor, detail: "is not a tensor of the model")
      }
      guard target.dtype.isEditableFloat, target.shape.count >= 2 else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor, detail: "is \(target.dtype.rawValue) \(target.shape); factors need a float matrix"
        )
      }
      let (rows, cols) = TensorMath.matrixShape(target.shape)
      guard u.shape.count == 2, v.shape.count == 2, u.shape[1] == v.shape[1], u.shape[1] >= 1,
        u.shape[0] == rows, v.shape[0] == cols
      else {
        throw RepositoryError.deltaMismatch(
          file: path, tensor: tensor,
          detail:
            "factors u \(u.shape) and v \(v.shape) do not fit \(target.shape): expected u [\(rows), r] and v [\(cols), r]"
        )
      }
      let rounded = u.dtype == .f64 || v.dtype == .f64
      entries.append(
        Entry(
          tensor: tensor, u: try DeltaFileReader.floats(file, u), v: try DeltaFileReader.floats(file, v),
          rank: u.shape[1], roundedFromFloat64: rounded))
    }
    guard !entries.isEmpty else {
      throw RepositoryError.deltaMismatch(file: path, tensor: "-", detail: "holds no factors")
    }
    return entries
  }
}

extension EditRepository {
  /// `mvc commit-factors`: commits an editor's factors on top of HEAD exactly as given (no
  /// residual: the new state is the canonical rule's result), rewrites the touched tensors of the
  /// working model in place, and records the provenance in `edit-data/` as `mvc edit` does.
  ///
  /// The working model must be clean. When keys, values and covariance are all given for one
  /// tensor, and the method is `rome`, `emmet` or `memit`, the commit is scored by `mvc score`.
  /// - Throws: `RepositoryError.uncommittedChanges`, `.deltaMismatch` naming the tensor and the
  ///   expected shapes, `.invalidProvenance`, `.inputShapeMismatch` for bad provenance, `.nothingToCommit`.
  public func commitFactors(_ request: FactorCommitRequest) throws -> FactorCommitResult {
    try refuseDuringBisect()
    let methodCharacters = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyz0123456789._-")
    guard !request.method.isEmpty, request.method.count <= 64,
      request.method.unicodeScalars.allSatisfy(methodCharacters.contains)
    else {
      throw RepositoryError.invalidMethodName(request.method)
    }
    let headState = try head()
    guard let parent = headState.commit else { throw RepositoryError.emptyHistory }
    let working = try WorkingModel(path: modelPath)
    let status = try status(of: working, against: parent, head: headState)
    guard status.isClean else { throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name)) }
    let entries = try FactorFileReader.read(request.file, model: working)

    var details: [String: String] = ["factor_file": (request.file as NSString).lastPathComponent]
    let rounded = entries.filter(\.roundedFromFloat64).map(\.tensor)
    if !rounded.isEmpty { details["rounded_from_f64"] = rounded.joined(separator: ",") }
    // Everything is checked before the first object is written: an error leaves .mvc as it was.
    var data: [(name: String, bytes: [UInt8])] = []
    if let facts = request.facts { data.append((EditDataName.facts, facts)) }
    if let hyperparameters = request.hyperparameters {
      guard (try? JSONSerialization.jsonObject(with: Data(hyperparameters))) is [String: Any] else {
        throw RepositoryError.invalidProvenance(what: "hyper-parameters", reason: "they are not a JSON object")
      }
      data.append((EditDataName.hyperparameters, hyperparameters))
      details["hyperparameters"] = String(decoding: hyperparameters, as: UTF8.self)
    }
    if let keys = request.keys {
      guard keys.shape.count == 2, entries.count == 1, let shape = working.location(of: entries[0].tensor)?.info.shape,
        shape.count == 2
      else {
        throw RepositoryError.invalidProvenance(
          what: "keys \(keys.shape)",
          reason: "keys are recorded for one edited 2-D tensor, as n×d_in; this commit edits \(entries.count)")
      }
      let (dOut, dIn, transposed) = try Self.orientation(
        shape: shape, keyLength: keys.shape[1], tensor: entries[0].tensor)
      data.append((EditDataName.keys, try compressedNpy(keys.values, shape: keys.shape)))
      details["orientation"] = transposed ? "conv1d" : "linear"
      if let values = request.values {
        guard values.shape == [keys.shape[0], dOut] else {
          throw RepositoryError.inputShapeMismatch(
            input: "values", shape: values.shape, expected: "[\(keys.shape[0]), \(dOut)]")
        }
        data.append((EditDataName.values, try compressedNpy(values.values, shape: values.shape)))
      }
      if let covariance = request.covariance {
        guard covariance.shape == [dIn, dIn] else {
          throw RepositoryError.inputShapeMismatch(
            input: "covariance", shape: covariance.shape, expected: "[\(dIn), \(dIn)]")
        }
        data.append((EditDataName.covariance, try compressedNpy(covariance.values, shape: [dIn, dIn])))
      }
      if request.values != nil && request.covariance != nil {
        // What `recordedEdit` needs to score this commit like one of `mvc edit`.
        details["tensor"] = entries[0].tensor
        details["edit_count"] = "\(keys.shape[0])"
      }
    } else if request.values != nil || request.covariance != nil {
      throw RepositoryError.invalidProvenance(
        what: "values and covariance", reason: "they are recorded only with the keys they belong to")
    }
    let planned = entries.map { PlannedChange(name: $0.tensor, change: .factors(u: $0.u, v: $0.v, rank: $0.rank)) }
    var extra: [GitRepository.TreeEntry] = []
    if !data.isEmpty {
      let blobs = try data.map { GitRepository.TreeEntry(name: $0.name, id: try writeBlob($0.bytes), isTree: false) }
      extra = [.init(name: TreeEntryName.editData, id: try writeTree(blobs), isTree: true)]
    }
    let result = try commitChanges(
      planned, message: request.message, method: request.method, details: details, parent: parent,
      extraEntries: extra)
    return FactorCommitResult(result: result, roundedFromFloat64: rounded)
  }
}
