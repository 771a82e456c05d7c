import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

extension EditRepository {
  var bisectStartPath: String { (gitDirectory as NSString).appendingPathComponent("BISECT_START") }

  public var isBisecting: Bool { FileManager.default.fileExists(atPath: bisectStartPath) }

  func refuseDuringBisect() throws {
    if isBisecting { throw RepositoryError.bisectInProgress }
  }
}

extension EditRepository {
  /// `.mvc/BISECT_HEAD`: present only in a `--no-checkout` bisection, where it names the commit
  /// under test (git's pseudo-ref of the same name).
  var bisectHeadPath: String { (gitDirectory as NSString).appendingPathComponent("BISECT_HEAD") }

  /// Whether the running bisection leaves HEAD and the working model alone (`--no-checkout`).
  public var isNoCheckoutBisect: Bool { FileManager.default.fileExists(atPath: bisectHeadPath) }

  func writeBisectHead(_ commit: ObjectID) throws {
    try RepositoryError.fileSystem("write", bisectHeadPath) {
      try Data((commit.hex + "\n").utf8).write(to: URL(fileURLWithPath: bisectHeadPath), options: .atomic)
    }
  }

  /// The commit under test: `BISECT_HEAD` in a `--no-checkout` bisection, HEAD otherwise.
  /// - Throws: `RepositoryError.corruptObject` when `BISECT_HEAD` does not hold a commit id.
  public func bisectCurrent() throws -> ObjectID {
    guard isNoCheckoutBisect else { return try headCommit() }
    let text = (try? String(contentsOfFile: bisectHeadPath, encoding: .utf8)) ?? ""
    guard let id = ObjectID(hex: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
      throw RepositoryError.corruptObject(what: "BISECT_HEAD", reason: "'\(text.prefix(60))' is not a commit id")
    }
    return id
  }
}
