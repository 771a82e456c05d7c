import Foundation

/// Writes git-style diagnostics to stderr: `fatal: <what failed>` then `hint: <next step>`.
enum Diagnostics {
  static func fatal(_ error: Error) {
    let (message, hint) = describe(error)
    printError("fatal: \(message)")
    if let hint { printError("hint: \(hint)") }
  }

  static func describe(_ error: Error) -> (String, String?) {
    if let localized = error as? LocalizedError, let description = localized.errorDescription {
      return (description, localized.recoverySuggestion)
    }
    // Every mvc error is a LocalizedError; anything else is shown by its own words, never as
    // a Swift value dump.
    return ((error as NSError).localizedDescription, nil)
  }

  static func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
  }

  static func warn(_ text: String) { printError("warning: \(text)") }
}

/// Writes results to stdout (what a pipe wants).
func output(_ text: String) {
  FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
