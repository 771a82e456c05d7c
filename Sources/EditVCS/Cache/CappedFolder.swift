import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A folder of local cache files under `.mvc/` trimmed to a byte cap, least recently used first
/// (a load marks a file used by touching its modification time). Shared by the keyframe cache
/// (`mvc-snapshots/`) and the derived-matrix cache (`mvc-cache/`): docs/FORMAT.md, "Local caches".
struct CappedFolder: Sendable {
  let directory: String
  /// The most the folder may hold, in file bytes.
  let capBytes: Int

  /// The folder's files with their sizes and last use, oldest first.
  func files() -> [(name: String, bytes: Int, used: Int)] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.compactMap { name -> (String, Int, Int)? in
      var info = stat()
      guard lstat((directory as NSString).appendingPathComponent(name), &info) == 0 else { return nil }
      return (name, Int(info.st_size), Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec))
    }.sorted { ($0.2, $0.0) < ($1.2, $1.0) }
  }

  /// Deletes the least recently used files until the folder holds at most `capBytes`; returns
  /// how many it deleted. `keeping` (the file just written) goes last.
  @discardableResult
  func trim(keeping: String? = nil) -> Int {
    var all = files()
    var total = all.reduce(0) { $0 + $1.bytes }
    guard total > capBytes else { return 0 }
    if let keeping, let i = all.firstIndex(where: { $0.name == keeping }) { all.append(all.remove(at: i)) }
    var removed = 0
    for file in all where total > capBytes {
      try? FileManager.default.removeItem(atPath: (directory as NSString).appendingPathComponent(file.name))
      total -= file.bytes
      removed += 1
    }
    return removed
  }
}

extension EditRepository {
  /// The byte cap a git config key sets (a byte count, or with a `k`, `m` or `g` suffix as git
  /// writes them), else `fallback`. An unreadable value falls back too.
  func configuredByteCap(_ key: String, default fallback: Int) -> Int {
    guard let text = try? git.configString(key) else { return fallback }
    return Self.parseByteCount(text) ?? fallback
  }
}
