import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

// The one way the tests start a program (mvc, mvc-demo-editor, git, git-daemon, python3, mount):
// `runProcessOutcome` for a program that runs to its end, `RunningProcess` for one the test acts on
// while it runs. Both give the child the same environment, `childEnvironment(home:extra:)`.

/// How a child ended: its exit status, or the signal that killed it, and whether the harness
/// killed it for running past its timeout.
public struct ProcessOutcome: Sendable {
  /// The exit status, or 128 + the signal's number, as a shell reports it.
  public var status: Int32
  public var stdout: String
  public var stderr: String
  /// The signal the child died of (its own, not the harness's SIGKILL after a timeout).
  public var signal: Int32?
  /// The harness killed the child: it hung.
  public var timedOut: Bool

  public init(status: Int32, stdout: String, stderr: String, signal: Int32? = nil, timedOut: Bool = false) {
    self.status = status
    self.stdout = stdout
    self.stderr = stderr
    self.signal = signal
    self.timedOut = timedOut
  }

  public var tuple: (status: Int32, stdout: String, stderr: String) { (status, stdout, stderr) }

  /// One line for a test failure message.
  public var summary: String {
    let end = timedOut ? "timed out" : signal.map { "killed by signal \($0)" } ?? "exit \(status)"
    return "\(end); stderr: \(stderr.prefix(600))"
  }
}

/// The environment every child of the tests gets: fixed, and not the test runner's, so that what
/// the developer's shell holds (`GIT_DIR`, `~/.gitconfig`, `MVC_*`, `LANG`) cannot change an
/// outcome, and commit ids are the same on every machine.
///
/// - `PATH` from the runner (to find git, python3, mount), `LANG=C.UTF-8`;
/// - `HOME` = `home` (the test's folder) and `XDG_CONFIG_HOME` inside it, `GIT_CONFIG_NOSYSTEM=1`:
///   no user or system git configuration leaks in;
/// - fixed dates and identities: `MVC_AUTHOR_DATE`, `GIT_AUTHOR_*`, `GIT_COMMITTER_*`;
/// - `OPENBLAS_CORETYPE` only when the runner has it. The harness never picks a BLAS kernel: mvc
///   runs with the kernel OpenBLAS detects, as for a user (and re-execs itself with a better one
///   when OpenBLAS falls back to its generic SSE kernels: `Sources/mvc/BLASSetup.swift`). Passing
///   the runner's value through lets `OPENBLAS_CORETYPE=Haswell scripts/test.sh` run every mvc
///   of the suite under that kernel; a test that needs a kernel names it in `extra`
///   (`KernelTests`). (A `Process` with no environment set would inherit all of the runner's.)
///
/// `extra` adds or overrides variables.
public func childEnvironment(home: URL, extra: [String: String] = [:]) -> [String: String] {
  let inherited = ProcessInfo.processInfo.environment
  var environment: [String: String] = [
    "PATH": inherited["PATH"] ?? "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": home.path,
    "XDG_CONFIG_HOME": home.appendingPathComponent(".config").path,
    "GIT_CONFIG_NOSYSTEM": "1",
    "MVC_AUTHOR_DATE": "1700000000",
    "GIT_AUTHOR_DATE": "@1700000000 +0000",
    "GIT_COMMITTER_DATE": "@1700000000 +0000",
    "GIT_AUTHOR_NAME": "mvc tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "mvc tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
  ]
  if let core = inherited["OPENBLAS_CORETYPE"] { environment["OPENBLAS_CORETYPE"] = core }
  environment.merge(extra) { $1 }
  return environment
}

/// Runs `executable args` in `dir` to its end, with `childEnvironment(home: dir, extra: environment)`,
/// `input` on stdin (empty when nil), stdout and stderr kept apart and drained while it runs (a
/// chatty child never blocks on a full pipe). After `timeout` seconds the child is killed (`timedOut`).
public func runProcessOutcome(
  _ executable: URL, _ args: [String], in dir: URL, environment: [String: String] = [:], input: Data? = nil,
  timeout: TimeInterval? = nil
) -> ProcessOutcome {
  let process = Process()
  process.executableURL = executable
  process.arguments = args
  process.currentDirectoryURL = dir
  process.environment = childEnvironment(home: dir, extra: environment)
  let out = Pipe()
  let err = Pipe()
  process.standardOutput = out
  process.standardError = err
  let stdin = input.map { _ in Pipe() }
  process.standardInput = stdin ?? FileHandle.nullDevice
  do {
    try process.run()
  } catch {
    return ProcessOutcome(status: -1, stdout: "", stderr: "test harness: cannot start \(executable.path): \(error)")
  }
  if let stdin, let input {
    // Written on its own thread, so a child that writes before it has read everything cannot block us.
    Thread.detachNewThread {
      try? stdin.fileHandleForWriting.write(contentsOf: input)
      try? stdin.fileHandleForWriting.close()
    }
  }
  // Our copies of the write ends must close, or the readers never see EOF.
  try? out.fileHandleForWriting.close()
  try? err.fileHandleForWriting.close()
  let timedOut = Flag()
  if let timeout {
    let pid = process.processIdentifier
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
      if process.isRunning {
        timedOut.set()
        kill(pid, SIGKILL)
      }
    }
  }
  let stdoutDrain = PipeDrain(out.fileHandleForReading)
  let stderrDrain = PipeDrain(err.fileHandleForReading)
  let stdoutText = stdoutDrain.wait()
  let stderrText = stderrDrain.wait()
  process.waitUntilExit()
  return ProcessOutcome(process, stdout: stdoutText, stderr: stderrText, timedOut: timedOut.isSet)
}

extension ProcessOutcome {
  init(_ ended: Process, stdout: String, stderr: String, timedOut: Bool) {
    let signaled = ended.terminationReason == .uncaughtSignal
    self.init(
      status: signaled ? 128 + ended.terminationStatus : ended.terminationStatus, stdout: stdout, stderr: stderr,
      signal: signaled && !timedOut ? ended.terminationStatus : nil, timedOut: timedOut)
  }
}

/// A child the test acts on while it runs (kills it, waits for a line on its stderr, fills the
/// disk under it). stdout and stderr go to files, so stderr can be read while the child runs.
public final class RunningProcess {
  public let process: Process
  private let out: URL
  private let err: URL

  /// Starts `executable args` in `dir` with `childEnvironment(home: dir, extra: environment)`.
  public init(_ executable: URL, _ args: [String], in dir: URL, environment: [String: String] = [:]) throws {
    process = Process()
    process.executableURL = executable
    process.arguments = args
    process.currentDirectoryURL = dir
    process.environment = childEnvironment(home: dir, extra: environment)
    let scratch = FileManager.default.temporaryDirectory
    out = scratch.appendingPathComponent("mvc-tests-out-\(UUID().uuidString)")
    err = scratch.appendingPathComponent("mvc-tests-err-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    process.standardInput = FileHandle.nullDevice
    try process.run()
  }

  deinit {
    try? FileManager.default.removeItem(at: out)
    try? FileManager.default.removeItem(at: err)
  }

  public var isRunning: Bool { process.isRunning }

  /// What the child has written to stderr so far.
  public var stderrSoFar: String { (try? String(contentsOf: err, encoding: .utf8)) ?? "" }

  /// Polls stderr every 2 ms until it contains `text` (true), or the child ends or `seconds` pass (false).
  public func waitForStderr(containing text: String, seconds: TimeInterval = 20) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
      if stderrSoFar.contains(text) { return true }
      if !process.isRunning { return stderrSoFar.contains(text) }
      usleep(2_000)
    }
    return false
  }

  /// SIGKILL, as a crash or `kill -9` would.
  public func kill() {
    if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
  }

  /// Waits for the child to end and returns what it printed.
  public func finish() -> ProcessOutcome {
    process.waitUntilExit()
    return ProcessOutcome(
      process, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "", stderr: stderrSoFar, timedOut: false)
  }
}

/// `name` in a folder of `PATH`, or nil.
public func executableOnPath(_ name: String) -> URL? {
  for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
    let url = URL(fileURLWithPath: String(dir)).appendingPathComponent(name)
    if FileManager.default.isExecutableFile(atPath: url.path) { return url }
  }
  return nil
}

/// `git` on PATH, or nil (tests that need it are disabled, saying so).
public let gitExecutable: URL? = executableOnPath("git")

/// `python3` on PATH, or nil.
public let python3Executable: URL? = executableOnPath("python3")

/// The python3 on PATH (its real executable, past any pyenv shim) when it imports numpy, or nil:
/// the numpy cross-checks are then disabled, and `swift test` lists them as skipped, saying why
/// (`numpyUnavailableReason`).
public let python3WithNumpy: URL? = python3Executable.flatMap { python in
  let probe = runProcessOutcome(
    python, ["-c", "import numpy, sys; print(sys.executable)"], in: FileManager.default.temporaryDirectory)
  let path = probe.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  return probe.status == 0 && !path.isEmpty ? URL(fileURLWithPath: path) : nil
}

/// Why `python3WithNumpy` is nil.
public let numpyUnavailableReason =
  python3Executable == nil ? "no python3 on PATH, so the numpy cross-check cannot run" : "python3 on PATH has no numpy"

/// Collects one pipe's bytes on its own thread, so a chatty child never blocks on a full pipe.
private final class PipeDrain: Sendable {
  private let data = Mutex<Data?>(nil)
  private let done = DispatchSemaphore(value: 0)

  init(_ handle: FileHandle) {
    Thread.detachNewThread { [self] in
      let bytes = handle.readDataToEndOfFile()
      data.withLock { $0 = bytes }
      done.signal()
    }
  }

  func wait() -> String {
    done.wait()
    return String(decoding: data.withLock { $0 } ?? Data(), as: UTF8.self)
  }
}

/// Set once from the timeout's queue, read after the child ended.
private final class Flag: Sendable {
  private let value = Mutex(false)
  func set() { value.withLock { $0 = true } }
  var isSet: Bool { value.withLock { $0 } }
}
