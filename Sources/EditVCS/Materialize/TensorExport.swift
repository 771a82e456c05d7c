import DeltaStore
import Foundation

/// One tensor of a commit, as `mvc ls-tensors` lists it: enough for a client to see which
/// tensors differ between two commits (by `hash`) without reading any stored bytes.
public struct TensorListingEntry: Sendable, Equatable {
  public var name: String
  public var dtype: DType
  public var shape: [Int]
  /// `xxh3-128:<32 hex digits>` of the tensor's bytes in this state.
  public var hash: String
  /// How the state is stored: `full`, `low_rank` or `reference`.
  public var kind: String
  /// The shard file that holds the tensor in this commit's layout.
  public var file: String
}

/// What `mvc cat-tensors` wrote.
public struct TensorExport: Sendable {
  public var commit: ObjectID
  public var path: String
  public var tensors: [TensorListingEntry]
}

extension EditRepository {
  /// Every tensor of `commit`, in the order of the layout (shard by shard, header order).
  ///
  /// Reads only trees and `meta.json` blobs: no tensor is materialized.
  /// - Throws: `RepositoryError.corruptObject` when the layout names a tensor the commit lacks.
  public func listTensors(at commit: ObjectID) throws -> [TensorListingEntry] {
    let contents = try contents(of: commit)
    let (layout, _) = try layout(of: contents)
    var entries: [TensorListingEntry] = []
    for shard in layout.shards {
      for name in shard.tensors {
        guard let tree = contents.tensorTrees[name] else {
          throw RepositoryError.corruptObject(
            what: "commit \(commit.shortHex)", reason: "layout names tensor '\(name)' but tensors/ lacks it")
        }
        let state = try storedState(tree, tensor: name).state
        entries.append(
          TensorListingEntry(
            name: name, dtype: state.dtype, shape: state.shape, hash: state.hash, kind: state.kind.rawValue,
            file: shard.file))
      }
    }
    return entries
  }

  /// Writes the exact bytes of `names` (all tensors when empty) at `commit` as one safetensors
  /// file at `path` (a temporary file renamed into place, not fsynced: like `checkout -o`, the
  /// output is a copy a client reads, not the working model).
  ///
  /// Tensors are rebuilt one at a time and each is verified against its hash, so memory holds
  /// at most one tensor besides the header. `__metadata__` records `mvc.commit`.
  /// - Throws: `RepositoryError.tensorNotInCommit` for a name the commit does not have (before
  ///   anything is written), `.hashMismatch`, or the write's `DeltaStoreError`.
  public func exportTensors(_ names: [String], at commit: ObjectID, to path: String) throws -> TensorExport {
    let all = try listTensors(at: commit)
    var chosen: [TensorListingEntry]
    if names.isEmpty {
      chosen = all
    } else {
      let byName = Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
      var seen = Set<String>()
      chosen = []
      for name in names where seen.insert(name).inserted {
        guard let entry = byName[name] else {
          throw RepositoryError.tensorNotInCommit(tensor: name, revision: commit.shortHex)
        }
        chosen.append(entry)
      }
    }
    let described = chosen.map { (name: $0.name, dtype: $0.dtype, shape: $0.shape) }
    let header = SafetensorsHeader.serialize(tensors: described, metadata: ["mvc.commit": commit.hex])
    let infos = SafetensorsHeader.layout(tensors: described)
    let dataByteCount = infos.last?.dataOffsets.upperBound ?? 0
    let writer = try AtomicFileWriter(path: path, byteCount: header.count + dataByteCount)
    try header.withUnsafeBytes { try writer.write($0, at: 0) }
    for (i, info) in infos.enumerated() {
      report("writing", i, infos.count)
      let bytes = try materialize(info.name, at: commit)
      guard bytes.count == info.dataOffsets.count else {
        throw RepositoryError.corruptObject(
          what: "tensor '\(info.name)'",
          reason: "rebuilt \(bytes.count) bytes, its shape needs \(info.dataOffsets.count)")
      }
      try bytes.withUnsafeBytes { try writer.write($0, at: header.count + info.dataOffsets.lowerBound) }
    }
    try writer.commit(durable: false)
    return TensorExport(commit: commit, path: path, tensors: chosen)
  }
}
