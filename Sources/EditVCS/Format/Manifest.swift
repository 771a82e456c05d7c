import DeltaStore
import Foundation

/// The newest repository format this build reads. Every commit's tree records its own format
/// in `mvc-format`: 1, or 2 when the commit tracks side files (`files/`), which a version-1
/// reader would ignore, or 3 when it holds a conditioned residual. `.mvc/config` records
/// `mvc.formatversion` = 1 (`baseFormatVersion`).
package let repositoryFormatVersion = 3
/// The format of commits without side files, of `edit.json` and of `.mvc/config`.
package let baseFormatVersion = 1
/// The format of commits that track side files in `files/`.
let sideFilesFormatVersion = 2
/// The format of commits whose tensors hold a Rice-coded residual (kind 4 of `ResidualCodec`),
/// which a version-1 reader cannot decode. Such a state says so in `residual_format`.
let riceResidualFormatVersion = 2
/// The format of commits whose tensors hold a conditioned residual (kind 5 of `ResidualCodec`,
/// decoded against the parent's bytes and the factors), which a version-2 reader would refuse
/// as an unknown encoding. Such a state says so in `residual_format`.
let conditionedResidualFormatVersion = 3
/// The format of commits that hold (or build on) a full state in chunk encoding 2
/// (`PlaneCodec`), which a version-1 reader would take for a zstd frame and fail on.
let planeChunksFormatVersion = 2

/// How one tensor's state at a commit is stored: the `meta.json` blob of its tree entry.
///
/// A state is either complete in itself (`full`: the bytes as zstd chunks; `reference`: a
/// read-only base file outside the repository) or a `lowRank` change of the state the tensor
/// had in the first parent of the commit that introduced it:
/// `bytes = round(parent + U·Vᵀ) + residual`, with the canonical rule of `docs/FORMAT.md`.
package struct TensorState: Codable, Equatable, Sendable {
  public enum Kind: String, Codable, Sendable {
    case full
    case lowRank = "low_rank"
    case reference
  }

  package var name: String
  package var dtype: DType
  package var shape: [Int]
  /// The shard that held the tensor when this state was written; informational: the commit's
  /// layout (`model/layout.json`) is what says which file holds the tensor.
  package var shard: Int
  /// The content hash of the tensor's bytes in this state.
  package var hash: String
  package var kind: Kind

  // low_rank
  /// The content hash of the state the delta applies to.
  package var parentHash: String?
  package var rank: Int?
  /// Storage rows and columns the factors refer to (the tensor viewed as a matrix).
  package var rows: Int?
  package var cols: Int?
  /// Element count that differed from the canonical reconstruction and is kept in `residual.zst`.
  package var residualNonzeroCount: Int?
  /// True when the commit was made with `--tolerance` and the residual was dropped.
  package var approximate: Bool?
  package var norms: DeltaNorms?
  /// The repository format the residual blob needs: 2 for a Rice-coded one
  /// (`riceResidualFormatVersion`), 3 for a conditioned one (`conditionedResidualFormatVersion`),
  /// absent (1) otherwise.
  package var residualFormat: Int?

  // full
  package var chunkCount: Int?
  package var chunkByteCount: Int?
  /// `ChunkEncoding`'s raw value; absent: 1 (byte-shuffled zstd). Encoding 2 needs format 2.
  package var chunkEncoding: Int?

  // reference
  package var referencePath: String?
  package var referenceShardFile: String?

  enum CodingKeys: String, CodingKey {
    case name, dtype, shape, shard, hash, kind, rank, rows, cols, approximate, norms
    case parentHash = "parent_hash"
    case residualNonzeroCount = "residual_nonzero_count"
    case residualFormat = "residual_format"
    case chunkCount = "chunk_count"
    case chunkByteCount = "chunk_byte_count"
    case chunkEncoding = "chunk_encoding"
    case referencePath = "reference_path"
    case referenceShardFile = "reference_shard_file"
  }

  package var elementCount: Int { shape.reduce(1, *) }
  package var byteCount: Int { elementCount * dtype.bitCount / 8 }
}

/// Size of a change, measured on the factors (no dense ΔW needed).
public struct DeltaNorms: Codable, Equatable, Sendable {
  /// ‖ΔW‖_F.
  public var frobenius: Double
  /// ‖ΔW‖_2 (largest singular value).
  public var spectral: Double
  /// ‖W‖_F of the tensor before the change, so ratios can be shown.
  package var weightFrobenius: Double

  public var relativeFrobenius: Double { weightFrobenius > 0 ? frobenius / weightFrobenius : 0 }

  package init(frobenius: Double, spectral: Double, weightFrobenius: Double) {
    self.frobenius = frobenius
    self.spectral = spectral
    self.weightFrobenius = weightFrobenius
  }

  enum CodingKeys: String, CodingKey {
    case frobenius, spectral
    case weightFrobenius = "weight_frobenius"
  }
}

/// The files of the tracked model and the exact header of each, so a checkout writes the
/// same bytes the user had (tensor order, `__metadata__`, padding).
package struct ModelLayout: Codable, Equatable, Sendable {
  package struct Shard: Codable, Equatable, Sendable {
    /// Path relative to the model folder (or the model file's own name).
    package var file: String
    /// Tensor names in the order of the file's header.
    package var tensors: [String]
    /// Blob name (in `model/`) of the exact 8+N header prefix.
    package var headerBlob: String

    enum CodingKeys: String, CodingKey {
      case file, tensors
      case headerBlob = "header_blob"
    }
  }

  /// `file` for one `.safetensors` file, `sharded` for a folder with `model.safetensors.index.json`.
  package var kind: String
  package var shards: [Shard]
  /// Name of the index file in a sharded folder; its exact bytes are the blob `model/index.json`.
  package var indexFile: String?

  enum CodingKeys: String, CodingKey {
    case kind, shards
    case indexFile = "index_file"
  }
}

/// What a commit changed, kept beside its tensors (`edit.json`); small, one per commit.
public struct EditRecord: Codable, Equatable, Sendable {
  public struct TensorChange: Codable, Equatable, Sendable {
    public var name: String
    /// `low_rank`, `full` (stored densely), `added`, `removed`.
    public var storage: String
    public var rank: Int?
    public var norms: DeltaNorms?
    public var residualNonzeroCount: Int?
    public var storedByteCount: Int

    package init(
      name: String, storage: String, rank: Int? = nil, norms: DeltaNorms? = nil, residualNonzeroCount: Int? = nil,
      storedByteCount: Int
    ) {
      self.name = name
      self.storage = storage
      self.rank = rank
      self.norms = norms
      self.residualNonzeroCount = residualNonzeroCount
      self.storedByteCount = storedByteCount
    }

    enum CodingKeys: String, CodingKey {
      case name, storage, rank, norms
      case residualNonzeroCount = "residual_nonzero_count"
      case storedByteCount = "stored_byte_count"
    }
  }

  package var formatVersion: Int
  /// `base`, `working-model`, `delta`, `lora`, `revert`, `cherry-pick`, `merge`, `rome`, ...
  public var method: String
  public var changes: [TensorChange]
  package var tolerance: Double?
  /// Free-form details of the method (source commit of a revert, LoRA scaling, λ, ...).
  public var details: [String: String]?

  package init(
    formatVersion: Int, method: String, changes: [TensorChange], tolerance: Double? = nil,
    details: [String: String]? = nil
  ) {
    self.formatVersion = formatVersion
    self.method = method
    self.changes = changes
    self.tolerance = tolerance
    self.details = details
  }

  enum CodingKeys: String, CodingKey {
    case method, changes, tolerance, details
    case formatVersion = "format_version"
  }
}

enum JSONCoding {
  static func encoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
  }

  static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
    Array(try encoder().encode(value))
  }

  static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8], what: String) throws -> T {
    do {
      return try JSONDecoder().decode(type, from: Data(bytes))
    } catch let error as DecodingError {
      throw RepositoryError.corruptObject(what: what, reason: readable(error))
    } catch {
      throw RepositoryError.corruptObject(what: what, reason: "not valid JSON")
    }
  }

  /// A decoding failure in the terms of the JSON (a field's path, what was expected), without
  /// Swift's type dump.
  static func readable(_ error: DecodingError) -> String {
    func path(_ context: DecodingError.Context) -> String {
      let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
      return keys.isEmpty ? "the document" : "'" + keys.joined(separator: ".") + "'"
    }
    switch error {
    case .typeMismatch(let type, let context):
      return "\(path(context)) is not a \(jsonName(type))"
    case .valueNotFound(let type, let context):
      return "\(path(context)) is null, expected a \(jsonName(type))"
    case .keyNotFound(let key, let context):
      return "\(path(context)) has no field '\(key.stringValue)'"
    case .dataCorrupted(let context):
      return context.codingPath.isEmpty ? "not valid JSON" : "\(path(context)) has an invalid value"
    @unknown default:
      return "not the expected JSON"
    }
  }

  private static func jsonName(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type, is Int64.Type, is Double.Type: return "number"
    case is String.Type: return "string"
    case is Bool.Type: return "boolean"
    default:
      let name = "\(type)"
      return name.hasPrefix("Array") ? "list" : name.hasPrefix("Dictionary") ? "object" : "value of the expected kind"
    }
  }
}

/// Tensor names become tree entry names: every byte outside `[A-Za-z0-9._-]` and a leading
/// `.` are percent-encoded, so `/`, `..` and `.git` cannot escape or confuse the tree.
enum TreeName {
  static func escape(_ name: String) -> String {
    var out = ""
    for (i, byte) in name.utf8.enumerated() {
      let c = Character(Unicode.Scalar(byte))
      let plain =
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A)
        || (byte >= 0x61 && byte <= 0x7A) || byte == 0x5F || byte == 0x2D || (byte == 0x2E && i > 0)
      out += plain ? String(c) : String(format: "%%%02X", byte)
    }
    return out.isEmpty ? "%" : out
  }

  static func unescape(_ entry: String) -> String? {
    var bytes: [UInt8] = []
    var utf8 = Array(entry.utf8)[...]
    if entry == "%" { return "" }
    while let byte = utf8.popFirst() {
      if byte == 0x25 {
        guard utf8.count >= 2, let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
        else { return nil }
        bytes.append(value)
        utf8 = utf8.dropFirst(2)
      } else {
        bytes.append(byte)
      }
    }
    return String(bytes: bytes, encoding: .utf8)
  }
}
