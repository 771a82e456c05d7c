import DeltaStore
import Foundation

/// How the working model differs from a commit, tensor by tensor.
public struct WorkingStatus: Sendable {
  public enum Change: String, Sendable, Codable {
    case modified, added, removed
  }

  public struct Entry: Sendable {
    public var name: String
    public var change: Change
    public var dtype: DType
    public var shape: [Int]
  }

  /// A tracked side file (`config.json`, `tokenizer.json`, ...) that differs from HEAD's.
  public struct FileEntry: Sendable {
    public var name: String
    public var change: Change
  }

  public var head: HeadState
  public var entries: [Entry]
  /// True when a file's header differs from HEAD's although no tensor changed (e.g. metadata).
  public var headerChanged: Bool
  /// Side files added, modified or removed against HEAD.
  public var files: [FileEntry] = []
  /// Other files in the model's folder, which mvc does not track.
  public var untracked: [String] = []
  public var isClean: Bool { entries.isEmpty && !headerChanged && files.isEmpty }
  /// Changed tensors, then changed side files.
  var changedNames: [String] { entries.map(\.name) + files.map(\.name) }
  /// Clean but for side files HEAD does not track (like git's untracked files, a move keeps
  /// them, and refuses only to overwrite one with other bytes): a repository made before side
  /// files were tracked keeps working with a config.json beside its model.
  var isCleanBesidesNewFiles: Bool {
    entries.isEmpty && !headerChanged && files.allSatisfy { $0.change == .added }
  }
  /// Side files present but not tracked at HEAD.
  var newFiles: Set<String> { Set(files.filter { $0.change == .added }.map(\.name)) }
}

extension EditRepository {
  /// Compares the working model with HEAD; hashes only what the stat cache cannot vouch for.
  public func status() throws -> WorkingStatus {
    let headState = try head()
    guard let commit = headState.commit else { throw RepositoryError.emptyHistory }
    let working = try WorkingModel(path: modelPath)
    return try status(of: working, against: commit, head: headState)
  }

  /// - Parameter hashes: the working tensors' hashes when the caller has them already.
  func status(
    of working: WorkingModel, against commit: ObjectID, head: HeadState, hashes: [String: String]? = nil
  ) throws -> WorkingStatus {
    let current = try hashes ?? workingHashes(working)
    let contents = try contents(of: commit)
    var entries: [WorkingStatus.Entry] = []
    for name in working.tensorNames {
      guard let (_, info) = working.location(of: name) else { continue }
      if let tree = contents.tensorTrees[name] {
        let stored = try storedState(tree, tensor: name).state
        if stored.dtype != info.dtype || stored.shape != info.shape {
          throw RepositoryError.layoutMismatch(
            file: working.path, tensor: name,
            detail:
              "is \(info.dtype.rawValue) \(info.shape) in the working model but \(stored.dtype.rawValue) \(stored.shape) at HEAD"
          )
        }
        if current[name] != stored.hash {
          entries.append(.init(name: name, change: .modified, dtype: info.dtype, shape: info.shape))
        }
      } else {
        entries.append(.init(name: name, change: .added, dtype: info.dtype, shape: info.shape))
      }
    }
    let present = Set(working.tensorNames)
    for (name, tree) in contents.tensorTrees.sorted(by: { $0.key < $1.key }) where !present.contains(name) {
      let stored = try storedState(tree, tensor: name).state
      entries.append(.init(name: name, change: .removed, dtype: stored.dtype, shape: stored.shape))
    }
    let headerChanged = try !sameLayout(working, as: commit)
    var status = WorkingStatus(head: head, entries: entries, headerChanged: entries.isEmpty && headerChanged)
    let committed = try sideFileBlobs(of: contents)
    let files = try working.sideFiles()
    for name in Set(committed.keys).union(files.keys).sorted() {
      if let id = committed[name], let bytes = files[name] {
        if try git.readBlob(id) != bytes { status.files.append(.init(name: name, change: .modified)) }
      } else {
        status.files.append(.init(name: name, change: committed[name] == nil ? .added : .removed))
      }
    }
    status.untracked = SideFiles.untracked(in: working.sideFileFolder, excluding: working.ownFileNames)
    return status
  }

  /// Whether the working files' headers (and index) are byte for byte those of `commit`.
  func sameLayout(_ working: WorkingModel, as commit: ObjectID) throws -> Bool {
    let (layout, blobs) = try layout(of: contents(of: commit))
    let (workingLayout, headers) = working.layout()
    guard layout == workingLayout else { return false }
    for shard in layout.shards {
      guard let id = blobs[shard.headerBlob], try git.readBlob(id) == headers[shard.headerBlob] else { return false }
    }
    if let index = working.indexBytes {
      guard let id = blobs[TreeEntryName.index], try git.readBlob(id) == index else { return false }
    }
    return true
  }
}
