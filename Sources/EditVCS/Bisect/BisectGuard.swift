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
