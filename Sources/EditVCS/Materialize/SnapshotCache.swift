import Apply
import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A local cache of materialized tensor states, outside the object database: never pushed,
/// safe to delete (`mvc gc` prunes it), keyed by content hash and verified on load.
extension EditRepository {
  static let snapshotInterval = 16

  /// About one state in `snapshotInterval` is a grid state, chosen by its hash (the last hex
  /// digit is 0), so every process agrees on the grid without any bookkeeping.
  static func isGridState(_ hash: String) -> Bool { hash.hasSuffix("0") }

  /// After a commit: the new state of a changed tensor is saved when it is a grid state (its
  /// bytes are at hand, so the grid costs no replay), keeping later replays short.
  func snapshotIfGridState(_ bytes: UnsafeRawBufferPointer, state: TensorState) {
    guard state.kind == .lowRank, Self.isGridState(state.hash) else { return }
    saveSnapshot(bytes, state: state)
  }

  var snapshotDirectory: String { (gitDirectory as NSString).appendingPathComponent("mvc-snapshots") }

  /// The cache in `snapshotDirectory`, as a value any thread may use.
  var snapshots: SnapshotCache { SnapshotCache(directory: snapshotDirectory) }

  func snapshotPath(_ hash: String) -> String { snapshots.path(hash) }

  /// Raw tensor bytes: weights barely compress (zstd level 1 saved ~15% on float32 weights) and
  /// raw files load with one read straight into the tensor's buffer.
  static let snapshotSuffix = ".bin"

  func hasSnapshot(_ hash: String) -> Bool { FileManager.default.fileExists(atPath: snapshotPath(hash)) }

  func saveSnapshot(_ bytes: UnsafeRawBufferPointer, state: TensorState) {
    snapshots.save(bytes, to: snapshotPath(state.hash))
  }
}

/// The snapshot files of one repository: plain files in one folder, named after the state's
/// hash, so workers rebuilding tensors on other threads save and load them with no shared state.
struct SnapshotCache {
  /// `.mvc/mvc-snapshots`.
  let directory: String

  func path(_ hash: String) -> String {
    let name = hash.replacingOccurrences(of: ":", with: "-")
    return (directory as NSString).appendingPathComponent(name + EditRepository.snapshotSuffix)
  }

  /// Safe from any thread: a cache file written through a temporary file and a rename, with no
  /// fault-injection hook and no fsync (a failed or torn cache file only costs time later: loads
  /// verify the hash).
  func save(_ bytes: UnsafeRawBufferPointer, to path: String) {
    guard !FileManager.default.fileExists(atPath: path) else { return }
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      try AtomicFileWriter.replace(path, with: bytes, hook: nil, durable: false)
    } catch {}
  }

  /// The cached bytes of `state`, or nil when absent or damaged (then the chain is replayed).
  func load(_ state: TensorState) throws -> [UInt8]? {
    let path = path(state.hash)
    let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: state.byteCount)
    let complete = bytes.withUnsafeMutableBytes { buffer -> Bool in
      var done = 0
      var probe: UInt8 = 0
      guard let base = buffer.baseAddress else { return read(fd, &probe, 1) == 0 }
      while done < buffer.count {
        let n = read(fd, base + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
      }
      return read(fd, &probe, 1) == 0
    }
    guard complete, bytes.withUnsafeBytes({ ContentHash.of($0).description }) == state.hash else {
      try? FileManager.default.removeItem(atPath: path)
      return nil
    }
    return bytes
  }
}
