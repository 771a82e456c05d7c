import Foundation
import TestSupport
import Testing

// Runs the built `mvc` binary the way a user does, and compares trees of files.

/// The `mvc` executable built beside the test runner. Under `swift test` on Linux,
/// `CommandLine.arguments[0]` is `.build/<triple>/debug/mvcPackageTests.xctest` (an executable),
/// so `mvc` sits in the same folder. Falls back to searching upwards from this source file
/// and from the current directory for `.build/debug/mvc` or `.build/release/mvc`.
let mvcExecutable: URL? = {
  let manager = FileManager.default
  var candidates: [URL] = []
  if let first = CommandLine.arguments.first {
    let runner = URL(fileURLWithPath: first).resolvingSymlinksInPath()
    candidates.append(runner.deletingLastPathComponent().appendingPathComponent("mvc"))
    // A bundle directory (macOS layout): .../debug/mvcPackageTests.xctest/Contents/MacOS/...
    var up = runner
    while up.path != "/" {
      up = up.deletingLastPathComponent()
      if up.pathExtension == "xctest" {
        candidates.append(up.deletingLastPathComponent().appendingPathComponent("mvc"))
      }
    }
  }
  for start in [URL(fileURLWithPath: #filePath), URL(fileURLWithPath: manager.currentDirectoryPath)] {
    var dir = start
    while dir.path != "/" {
      for configuration in ["debug", "release"] {
        candidates.append(dir.appendingPathComponent(".build/\(configuration)/mvc"))
      }
      dir = dir.deletingLastPathComponent()
    }
  }
  return candidates.first { manager.isExecutableFile(atPath: $0.path) }
}()

/// Runs `mvc args` in `dir` (the one runner, `runProcessOutcome`, and its environment policy,
/// `childEnvironment`: Tests/TestSupport/ProcessRunner.swift); `environment` adds or overrides
/// variables. Every `fatal:`/`error:`/`hint:` line it prints is checked for readability.
@discardableResult
func runMVC(
  _ args: [String], in dir: URL, environment: [String: String] = [:]
) -> (status: Int32, stdout: String, stderr: String) {
  runMVCOutcome(args, in: dir, environment: environment, timeout: nil).tuple
}

/// Runs `mvc args` like `runMVC`, reporting signals and hangs (killed after `timeout` seconds).
func runMVCOutcome(
  _ args: [String], in dir: URL, environment: [String: String] = [:], timeout: TimeInterval? = 120
) -> ProcessOutcome {
  guard let executable = mvcExecutable else {
    return ProcessOutcome(
      status: -1, stdout: "",
      stderr: "test harness: no built mvc executable beside \(CommandLine.arguments.first ?? "?")")
  }
  let outcome = runProcessOutcome(executable, args, in: dir, environment: environment, timeout: timeout)
  checkDiagnosticsAreReadable(outcome.stderr, command: ["mvc"] + args)
  return outcome
}

/// Starts `mvc args` in `dir` for a test that acts on it while it runs (kills it, fills the disk
/// under it); `finishMVC()` waits for it and checks its diagnostics as `runMVC` does.
func startMVC(_ args: [String], in dir: URL, environment: [String: String] = [:]) throws -> RunningProcess {
  guard let executable = mvcExecutable else { throw FixtureError("test harness: no built mvc executable") }
  return try RunningProcess(executable, args, in: dir, environment: environment)
}

extension RunningProcess {
  func finishMVC() -> ProcessOutcome {
    let outcome = finish()
    checkDiagnosticsAreReadable(outcome.stderr, command: ["mvc"] + (process.arguments ?? []))
    return outcome
  }
}

/// Every `fatal:`, `error:` and `hint:` line any test makes mvc print says what went wrong in
/// words: a Swift value dump (`GitError(`, `Optional(`, `DecodingError`) fails the test that
/// ran the command. Every `fatal:` line (exit 128) is followed by a `hint:` line with the next step.
func checkDiagnosticsAreReadable(_ stderr: String, command: [String]) {
  guard command.first == "mvc" else { return }
  let lines = stderr.split(separator: "\n")
  for (index, line) in lines.enumerated() {
    if ["fatal:", "error:", "hint:"].contains(where: line.hasPrefix)
      && ["GitError(", "Optional(", "DecodingError", "CodingKeys("].contains(where: line.contains)
    {
      Issue.record("'\(command.joined(separator: " "))' printed a Swift value dump: \(line)")
    }
    if line.hasPrefix("fatal:") && !(index + 1 < lines.count && lines[index + 1].hasPrefix("hint: ")) {
      Issue.record("'\(command.joined(separator: " "))' printed a fatal error without a hint: \(line)")
    }
  }
}

/// Runs `git args` in `dir` (same runner and environment as mvc).
func runGit(_ args: [String], in dir: URL) -> (status: Int32, stdout: String, stderr: String) {
  guard let git = gitExecutable else { return (-1, "", "git not found") }
  return runProcessOutcome(git, args, in: dir).tuple
}

// MARK: Trees and bytes

/// Files inside `.mvc/` that legitimately change on every command, failed or not: `lock`
/// holds the pid of the last opener, `mvc-index.json` is the stat cache (like git's index,
/// refreshed by any command that hashes the working model).
let volatileRepositoryFiles: Set<String> = ["lock", "mvc-index.json"]

/// FNV-1a 64 over every regular file under `root` (sorted relative path, then bytes), skipping
/// files whose last path component is in `excluding`. A missing root hashes as "missing".
func treeHash(of root: URL, excluding: Set<String> = volatileRepositoryFiles) -> UInt64 {
  var hash: UInt64 = 0xCBF2_9CE4_8422_2325
  func mix<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
    for b in bytes {
      hash ^= UInt64(b)
      hash &*= 0x0000_0100_0000_01B3
    }
  }
  var isDirectory: ObjCBool = false
  guard FileManager.default.fileExists(atPath: root.path, isDirectory: &isDirectory) else {
    mix(Array("missing".utf8))
    return hash
  }
  if !isDirectory.boolValue {
    mix((try? Data(contentsOf: root)) ?? Data("unreadable".utf8))
    return hash
  }
  let paths = (FileManager.default.subpaths(atPath: root.path) ?? []).sorted()
  for relative in paths {
    let url = root.appendingPathComponent(relative)
    guard !excluding.contains(url.lastPathComponent) else { continue }
    var dir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &dir), !dir.boolValue else { continue }
    mix(Array(relative.utf8))
    mix([0])
    let data = (try? Data(contentsOf: url)) ?? Data()
    mix(Array(String(data.count).utf8))
    mix([0])
    mix(data)
  }
  return hash
}

/// The bytes of a file, or of every file under a folder keyed by relative path.
func snapshot(_ url: URL) throws -> [String: Data] {
  var isDirectory: ObjCBool = false
  guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return [:] }
  if !isDirectory.boolValue { return ["": try Data(contentsOf: url)] }
  var out: [String: Data] = [:]
  for relative in FileManager.default.subpaths(atPath: url.path) ?? [] {
    let file = url.appendingPathComponent(relative)
    var dir: ObjCBool = false
    if FileManager.default.fileExists(atPath: file.path, isDirectory: &dir), !dir.boolValue {
      out[relative] = try Data(contentsOf: file)
    }
  }
  return out
}

/// Expects the two files have the same bytes; reports sizes and the first differing offset.
func expectSameBytes(
  _ a: URL, _ b: URL, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation
) {
  guard let x = FileManager.default.contents(atPath: a.path), let y = FileManager.default.contents(atPath: b.path)
  else {
    Issue.record("cannot read '\(a.path)' or '\(b.path)' \(comment)", sourceLocation: sourceLocation)
    return
  }
  expectSameBytes(x, y, "\(a.lastPathComponent) vs \(b.lastPathComponent) \(comment)", sourceLocation: sourceLocation)
}

func expectSameBytes(
  _ x: Data, _ y: Data, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation
) {
  guard x != y else { return }
  let first = zip(x, y).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(x.count, y.count)
  Issue.record(
    "bytes differ \(comment): \(x.count) vs \(y.count) bytes, first difference at offset \(first)",
    sourceLocation: sourceLocation)
}

/// Expects a failed command: exit 128, stderr starting `fatal: ` and mentioning each of `names`.
func expectFatal(
  _ result: (status: Int32, stdout: String, stderr: String), naming names: [String] = [],
  sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(result.status == 128, "exit \(result.status), stderr: \(result.stderr)", sourceLocation: sourceLocation)
  #expect(result.stderr.hasPrefix("fatal: "), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
  for name in names {
    #expect(
      result.stderr.contains(name), "stderr does not name '\(name)': \(result.stderr)", sourceLocation: sourceLocation)
  }
}

/// Expects success (exit 0), with stderr shown on failure.
func expectSuccess(
  _ result: (status: Int32, stdout: String, stderr: String), _ what: String = "",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  #expect(result.status == 0, "\(what) exit \(result.status), stderr: \(result.stderr)", sourceLocation: sourceLocation)
}
