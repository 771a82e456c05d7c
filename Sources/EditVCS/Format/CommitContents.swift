import DeltaStore
import Foundation

/// What one commit's tree holds, read lazily: the model layout, and per tensor the id of its
/// subtree (`tensors/<escaped name>/`). Equal subtree ids mean an unchanged tensor state,
/// which is how git shares everything a commit did not touch.
struct CommitContents {
  let commit: ObjectID
  let layoutTree: ObjectID
  let editRecordBlob: ObjectID?
  /// Tensor name → subtree id.
  let tensorTrees: [String: ObjectID]
  /// The `files/` tree of side files (format 2), nil when the commit tracks none.
  var filesTree: ObjectID? = nil
  /// The commit's `mvc-format`.
  var formatVersion = baseFormatVersion
  /// The commit's parents, first parent first (a chain walk follows the first).
  var parents: [ObjectID] = []
}

/// One tensor state's subtree: its `meta.json` and the ids of its data blobs.
struct StoredTensorState {
  let tree: ObjectID
  let state: TensorState
  /// Blob ids by entry name (`u.zst`, `v.zst`, `residual.zst`, `data-0000.zst`, ...).
  let blobs: [String: ObjectID]
}

enum TreeEntryName {
  static let format = "mvc-format"
  static let model = "model"
  static let layout = "layout.json"
  static let index = "index.json"
  static let edit = "edit.json"
  static let tensors = "tensors"
  static let files = "files"
  static let editData = "edit-data"
  static let meta = "meta.json"
  static let u = "u.zst"
  static let v = "v.zst"
  static let residual = "residual.zst"
  static func chunk(_ i: Int) -> String { String(format: "data-%04d.zst", i) }
}

extension EditRepository {
  func contents(of commit: ObjectID) throws -> CommitContents {
    if let cached = contentsCache[commit] { return cached }
    let info = try git.commitLinks(commit)
    let root = try git.readTree(info.tree)
    func entry(_ name: String) -> GitRepository.TreeEntry? { root.first { $0.name == name } }
    guard let format = entry(TreeEntryName.format) else {
      throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "no mvc-format entry")
    }
    // Commits share a handful of mvc-format blobs: each is read and parsed once.
    let version: Int
    if let known = formatVersionCache[format.id] {
      version = known
    } else {
      let formatText = String(decoding: try git.readBlob(format.id), as: UTF8.self)
      version =
        Int(formatText.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
      guard version >= 1 else {
        throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "bad mvc-format '\(formatText)'")
      }
      formatVersionCache[format.id] = version
    }
    guard version <= repositoryFormatVersion else {
      throw RepositoryError.unsupportedFormat(found: version, supported: repositoryFormatVersion)
    }
    guard let model = entry(TreeEntryName.model), model.isTree, let tensors = entry(TreeEntryName.tensors),
      tensors.isTree
    else {
      throw RepositoryError.corruptObject(what: "commit \(commit.shortHex)", reason: "no model/ or tensors/ tree")
    }
    var tensorTrees: [String: ObjectID] = [:]
    for item in try git.readTree(tensors.id) {
      guard let name = TreeName.unescape(item.name), item.isTree else {
        throw RepositoryError.corruptObject(
          what: "commit \(commit.shortHex)", reason: "bad tensor entry '\(item.name)'")
      }
      tensorTrees[name] = item.id
    }
    let result = CommitContents(
      commit: commit, layoutTree: model.id, editRecordBlob: entry(TreeEntryName.edit)?.id,
      tensorTrees: tensorTrees, filesTree: entry(TreeEntryName.files).flatMap { $0.isTree ? $0.id : nil },
      formatVersion: version, parents: info.parents)
    if let files = entry(TreeEntryName.files), !files.isTree {
      throw RepositoryError.untrustedData(what: "commit \(commit.shortHex)", reason: "files is not a tree")
    }
    contentsCache[commit] = result
    return result
  }

  func layout(of contents: CommitContents) throws -> (ModelLayout, blobs: [String: ObjectID]) {
    let entries = try git.readTree(contents.layoutTree)
    var blobs: [String: ObjectID] = [:]
    for e in entries { blobs[e.name] = e.id }
    guard let layoutID = blobs[TreeEntryName.layout] else {
      throw RepositoryError.corruptObject(what: "commit \(contents.commit.shortHex)", reason: "no model/layout.json")
    }
    let decoded = try JSONCoding.decode(
      ModelLayout.self, from: try git.readBlob(layoutID), what: "layout of \(contents.commit.shortHex)")
    let layout = try decoded.validated(what: "commit \(contents.commit.shortHex)", blobs: Set(blobs.keys))
    return (layout, blobs)
  }

  func editRecord(of contents: CommitContents) throws -> EditRecord? {
    guard let blob = contents.editRecordBlob else { return nil }
    let record = try JSONCoding.decode(
      EditRecord.self, from: try git.readBlob(blob), what: "edit.json of \(contents.commit.shortHex)")
    return try record.validated(what: "commit \(contents.commit.shortHex)")
  }

  func storedState(_ tree: ObjectID, tensor: String) throws -> StoredTensorState {
    if let cached = stateCache[tree] { return cached }
    var blobs: [String: ObjectID] = [:]
    for e in try git.readTree(tree) { blobs[e.name] = e.id }
    guard let metaID = blobs[TreeEntryName.meta] else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "no meta.json in \(tree.shortHex)")
    }
    let decoded = try JSONCoding.decode(
      TensorState.self, from: try git.readBlob(metaID), what: "meta.json of '\(tensor)'")
    let state = try decoded.validated(tensor: tensor, blobs: Set(blobs.keys))
    guard state.name == tensor else {
      throw RepositoryError.corruptObject(what: "tensor '\(tensor)'", reason: "meta.json names '\(state.name)'")
    }
    let stored = StoredTensorState(tree: tree, state: state, blobs: blobs)
    stateCache[tree] = stored
    return stored
  }

  /// Tensor name → state hash of every tensor at `commit`.
  func tensorHashes(at commit: ObjectID) throws -> [String: String] {
    let contents = try contents(of: commit)
    var out: [String: String] = [:]
    for (name, tree) in contents.tensorTrees { out[name] = try storedState(tree, tensor: name).state.hash }
    return out
  }
}
