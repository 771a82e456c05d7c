import ArgumentParser
internal import CMalloc
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// git accepts `log -n5`; swift-argument-parser wants `-n 5`. Only `log`'s and `reflog`'s
/// arguments are rewritten, so a `bisect run` program's own flags pass through untouched.
func gitStyleArguments(_ arguments: [String]) -> [String] {
  guard arguments.first == "log" || arguments.first == "reflog" else { return arguments }
  return arguments.flatMap { argument -> [String] in
    if argument.hasPrefix("-n"), argument.count > 2, Int(argument.dropFirst(2)) != nil {
      return ["-n", String(argument.dropFirst(2))]
    }
    return [argument]
  }
}

/// The first word of `mvc help WORD...` that names no command (nil: every word does). The
/// parser's own `help` prints the top-level help and exits 0 for an unknown topic; git's `help`
/// fails, and a script checking for a command relies on that.
func unknownHelpTopic(_ arguments: [String]) -> String? {
  guard arguments.first == "help" else { return nil }
  var command: ParsableCommand.Type = MVC.self
  for word in arguments.dropFirst() where !word.hasPrefix("-") {
    let next = command.configuration.subcommands.first {
      ($0.configuration.commandName ?? $0._commandName) == word || $0.configuration.aliases.contains(word)
    }
    guard let next else { return word }
    command = next
  }
  return nil
}

@main
enum Entry {
  static func main() {
    BLASSetup.reexecWithBetterCoreIfNeeded()
    // Tensor buffers (megabytes each) must go back to the system when freed: glibc otherwise
    // raises its mmap threshold after the first free and keeps later ones in per-thread heaps,
    // so peak memory would grow with the number of tensors a command touches.
    _ = mallopt(M_MMAP_THRESHOLD, 1 << 20)
    // A file-size limit must come back as EFBIG, not kill mvc mid-write.
    signal(SIGXFSZ, SIG_IGN)
    let arguments = gitStyleArguments(Array(CommandLine.arguments.dropFirst()))
    if let topic = unknownHelpTopic(arguments) {
      Diagnostics.printError("mvc: '\(topic)' is not an mvc command. See 'mvc --help'.")
      exit(129)
    }
    do {
      var command = try MVC.parseAsRoot(arguments)
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
