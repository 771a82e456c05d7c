import ArgumentParser
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

@main
enum Entry {
  static func main() {
    BLASSetup.reexecWithBetterCoreIfNeeded()
    // A file-size limit must come back as EFBIG, not kill mvc mid-write.
    signal(SIGXFSZ, SIG_IGN)
    do {
      var command = try MVC.parseAsRoot()
      try command.run()
    } catch {
      switch MVC.exitCode(for: error) {
      case .success:
        MVC.exit(withError: error)  // --help, --version
      case .validationFailure:
        FileHandle.standardError.write(Data((MVC.fullMessage(for: error) + "\n").utf8))
        exit(129)
      default:
        if let code = error as? ExitCode { exit(code.rawValue) }
        if error is CleanExit { MVC.exit(withError: error) }
        Diagnostics.fatal(error)
        exit(128)
      }
    }
  }
}
