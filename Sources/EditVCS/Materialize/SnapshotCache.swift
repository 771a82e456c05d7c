import Apply
import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The local keyframe cache (`.mvc/mvc-snapshots/`), outside the object database: never pushed,
/// safe to delete, capped in bytes (`mvc.snapshotCacheBytes`), keyed by state hash and verified
/// on load. docs/FORMAT.md, "Snapshots: bounding the replay", says why it is shaped this way.
extension EditRepository {
  var snapshotDirectory: String { (gitDirectory as NSString).appendingPathComponent("mvc-snapshots") }

  /// The git config key holding the cache's cap in bytes (`0` turns keyframes off).
  static let snapshotCacheBytesKey = "mvc.snapshotcachebytes"

  /// 1 GiB: the cap when the config sets none. Keyframes are also budgeted against the history
  /// they shorten (`KeyframePolicy`), so a repository reaches the cap only with a long history.
  static let defaultSnapshotCacheBytes = 1 << 30

  /// The cap in force: `mvc.snapshotCacheBytes`, else the default.
  var snapshotCacheCap: Int { configuredByteCap(Self.snapshotCacheBytesKey, default: Self.defaultSnapshotCacheBytes) }

  /// `123`, `64k`, `512m`, `2g` (git's integer suffixes); nil when not such a number.
  static func parseByteCount(_ text: String) -> Int? {
    let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
    let scale: Int
    var digits = Substring(trimmed)
    switch trimmed.last {
    case "k": scale = 1 << 10
    case "m": scale = 1 << 20
    case "g": scale = 1 << 30
    default: scale = 1
    }
    if scale != 1 { digits = digits.dropLast() }
    guard let value = Int(digits), value >= 0 else { return nil }
    let (product, overflow) = value.multipliedReportingOverflow(by: scale)
    return overflow ? Int.max : product
  }

  /// The cache in `snapshotDirectory`, as a value any thread may use.
  var snapshots: SnapshotCache { SnapshotCache(directory: snapshotDirectory, capBytes: snapshotCacheCap) }
}

/// One keyframe file's header: what it rebuilds and from what.
struct KeyframeHeader: Equatable {
  enum Kind: UInt8 {
    /// The state's bytes, byte-shuffled and zstd-compressed: a start of its own.
    case standalone = 1
    /// The state as a residual against `anchor` plus the factors of every state after it, summed
    /// in one canonical Float64 pass and rounded once.
    case residual = 2
  }

  var kind: Kind
  /// The state this keyframe holds.
  var hash: String
  var elementCount: Int
  var elementWidth: Int
  /// `.residual`: the state it starts from (a complete state, or a standalone keyframe).
  var anchor: String
  /// `.residual`: how many states follow the anchor up to and including this one.
  var stateCount: Int
  /// Where the payload starts in the file.
  var payloadOffset: Int

  static let magic: [UInt8] = Array("MVCKEYF1".utf8)

  /// The header of a standalone keyframe of `state` (its bytes compressed on their own).
  static func standalone(of state: TensorState) -> KeyframeHeader {
    KeyframeHeader(
      kind: .standalone, hash: state.hash, elementCount: state.elementCount,
      elementWidth: state.dtype.byteCount ?? 0, anchor: "", stateCount: 0, payloadOffset: 0)
  }
  /// Header bytes read before parsing; hashes are short ASCII strings.
  static let maxHeaderBytes = 512

  func encoded() -> [UInt8] {
    var out = Self.magic
    out.append(kind.rawValue)
    out.append(UInt8(elementWidth))
    func append64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { out += $0 } }
    func appendString(_ s: String) {
      let bytes = Array(s.utf8)
      out.append(UInt8(bytes.count))
      out += bytes
    }
    append64(elementCount)
    append64(stateCount)
    appendString(hash)
    appendString(anchor)
    return out
  }

  /// Parses the header at the start of `bytes`; nil when it is not one (the file is dropped).
  static func parse(_ bytes: [UInt8]) -> KeyframeHeader? {
    guard bytes.count >= magic.count + 2 + 16 + 2, Array(bytes[0..<magic.count]) == magic,
      let kind = Kind(rawValue: bytes[magic.count])
    else { return nil }
    var cursor = magic.count + 1
    let width = Int(bytes[cursor])
    cursor += 1
    func read64() -> Int? {
      guard cursor + 8 <= bytes.count else { return nil }
      var v: UInt64 = 0
      for k in 0..<8 { v |= UInt64(bytes[cursor + k]) << (8 * UInt64(k)) }
      cursor += 8
      return v <= UInt64(Int.max) ? Int(v) : nil
    }
    func readString() -> String? {
      guard cursor < bytes.count else { return nil }
      let n = Int(bytes[cursor])
      cursor += 1
      guard cursor + n <= bytes.count else { return nil }
      defer { cursor += n }
      return String(decoding: bytes[cursor..<(cursor + n)], as: UTF8.self)
    }
    guard let elements = read64(), let states = read64(), let hash = readString(), let anchor = readString() else {
      return nil
    }
    return KeyframeHeader(
      kind: kind, hash: hash, elementCount: elements, elementWidth: width, anchor: anchor, stateCount: states,
      payloadOffset: cursor)
  }

  /// Whether this header can describe `state`: same hash, size and element width.
  func matches(_ state: TensorState) -> Bool {
    hash == state.hash && elementCount == state.elementCount && elementWidth == (state.dtype.byteCount ?? 0)
  }
}

/// The keyframe files of one repository: plain files in one folder, named after the state's hash,
/// so workers rebuilding tensors on other threads load them with no shared state. Writes trim
/// the folder to `capBytes`, oldest-used first (a load marks a file used).
struct SnapshotCache: Sendable {
  /// `.mvc/mvc-snapshots`.
  let directory: String
  /// The most the folder may hold, in file bytes; 0: keyframes are neither saved nor loaded.
  let capBytes: Int
  /// The file names in the folder when `listed()` read it, nil when not listed: `header` then
  /// opens only the files listed instead of trying one per state of a chain (most states have
  /// none). A keyframe saved after the listing is missed (a replay starts further back: only
  /// time); one deleted after it fails to open, as it would without a listing.
  var names: Set<String>? = nil

  static let suffix = ".kf"

  static func fileName(_ hash: String) -> String { hash.replacingOccurrences(of: ":", with: "-") + suffix }

  func path(_ hash: String) -> String { (directory as NSString).appendingPathComponent(Self.fileName(hash)) }

  /// This cache with the folder's file names read once (`names`), for a walk that asks for the
  /// header of many states in a row.
  func listed() -> SnapshotCache {
    guard capBytes > 0 else { return self }
    var copy = self
    copy.names = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
    return copy
  }

  /// The header of `state`'s keyframe, when one is there and fits the state.
  func header(_ state: TensorState) -> KeyframeHeader? {
    guard capBytes > 0 else { return nil }
    if let names, !names.contains(Self.fileName(state.hash)) { return nil }
    let fd = Glibc.open(path(state.hash), O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: KeyframeHeader.maxHeaderBytes)
    let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
    guard n > 0, let header = KeyframeHeader.parse(Array(buffer[0..<n])), header.matches(state) else { return nil }
    return header
  }

  /// The whole file of `hash`'s keyframe, marked as used; nil when absent or too large to be
  /// one (`limit`: the most a keyframe of that tensor can take).
  func read(_ hash: String, limit: Int) -> [UInt8]? {
    let fd = Glibc.open(path(hash), O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, Int(info.st_size) <= limit else { return nil }
    var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
    let complete = bytes.withUnsafeMutableBytes { buffer -> Bool in
      guard let base = buffer.baseAddress else { return true }
      var done = 0
      while done < buffer.count {
        let n = Glibc.read(fd, base + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return false }
        done += n
      }
      return true
    }
    guard complete else { return nil }
    _ = futimens(fd, nil)  // least recently used goes first when trimming
    return bytes
  }

  /// The file bytes of `hash`'s keyframe (0 when absent).
  func byteCount(of hash: String) -> Int {
    var info = stat()
    return lstat(path(hash), &info) == 0 ? Int(info.st_size) : 0
  }

  func remove(_ hash: String) { try? FileManager.default.removeItem(atPath: path(hash)) }

  /// Writes a keyframe file (temporary file and rename, no fsync: a torn file fails its checks
  /// and only costs time), then trims the folder to the cap. Safe from any thread.
  func save(_ bytes: [UInt8], hash: String) {
    guard capBytes > 0, bytes.count <= capBytes else { return }
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
      _ = try bytes.withUnsafeBytes { try AtomicFileWriter.replace(path(hash), with: $0, hook: nil, durable: false) }
    } catch { return }
    trim(keeping: Self.fileName(hash))
  }

  /// The folder under its cap (files and trimming, `CappedFolder`).
  var folder: CappedFolder { CappedFolder(directory: directory, capBytes: capBytes) }

  /// The folder's files with their sizes and last use, oldest first.
  func files() -> [(name: String, bytes: Int, used: Int)] { folder.files() }

  /// Deletes the least recently used files down to the cap (`CappedFolder.trim`).
  @discardableResult
  func trim(keeping: String? = nil) -> Int { folder.trim(keeping: keeping) }
}
