import Foundation
import TestSupport

#if canImport(Glibc)
  import Glibc
#endif

/// Runs programs for the remote tests with stdout and stderr kept apart (each to its own
/// file, so a chatty child can never block on a full pipe).
enum RemoteHarness {
  struct Result {
    var status: Int32
    var stdout: String
    var stderr: String
  }

  static var binDirectory: URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
  }

  static var mvcPath: String {
    // The runner is `.build/<config>/mvcPackageTests.xctest`; `mvc` sits beside it.
    var directory = binDirectory
    for _ in 0..<3 {
      let candidate = directory.appendingPathComponent("mvc").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      directory = directory.deletingLastPathComponent()
    }
    return binDirectory.appendingPathComponent("mvc").path
  }

  static let gitPath = ["/usr/bin/git", "/usr/local/bin/git", "/bin/git"].first {
    FileManager.default.isExecutableFile(atPath: $0)
  }

  static func environment(time: Int64) -> [String: String] {
    var variables = ProcessInfo.processInfo.environment
    variables["OPENBLAS_CORETYPE"] = variables["OPENBLAS_CORETYPE"] ?? "SkylakeX"
    variables["MVC_AUTHOR_DATE"] = "@\(time)"
    variables["GIT_AUTHOR_DATE"] = "@\(time) +0000"
    variables["GIT_COMMITTER_DATE"] = "@\(time) +0000"
    variables["GIT_CONFIG_NOSYSTEM"] = "1"
    return variables
  }

  static func run(_ executable: String, _ arguments: [String], in directory: URL, time: Int64 = 1_700_000_000)
    throws -> Result
  {
    let process = try start(executable, arguments, in: directory, time: time)
    process.process.waitUntilExit()
    return process.finish()
  }

  final class Running {
    let process: Process
    let out: URL
    let err: URL
    init(process: Process, out: URL, err: URL) {
      self.process = process
      self.out = out
      self.err = err
    }
    func finish() -> Result {
      defer {
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: err)
      }
      let stderr = (try? String(contentsOf: err, encoding: .utf8)) ?? ""
      checkDiagnosticsAreReadable(
        stderr, command: [process.executableURL?.lastPathComponent ?? "?"] + (process.arguments ?? []))
      return Result(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
        stderr: stderr)
    }
  }

  static func start(_ executable: String, _ arguments: [String], in directory: URL, time: Int64 = 1_700_000_000)
    throws -> Running
  {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = directory
    process.environment = environment(time: time)
    let scratch = FileManager.default.temporaryDirectory
    let out = scratch.appendingPathComponent("mvc-out-\(UUID().uuidString)")
    let err = scratch.appendingPathComponent("mvc-err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    process.standardInput = FileHandle.nullDevice
    try process.run()
    return Running(process: process, out: out, err: err)
  }

  static func mvc(_ arguments: [String], in directory: URL, time: Int64 = 1_700_000_000) throws -> Result {
    try run(mvcPath, arguments, in: directory, time: time)
  }

  static func git(_ arguments: [String], in directory: URL) throws -> Result {
    try run(gitPath ?? "/usr/bin/git", arguments, in: directory)
  }

  static func edit(_ tensors: inout [FixtureTensor], index: Int, rank: Int, seed: UInt64) {
    applyLowRankEdit(&tensors, index: index, rank: rank, seed: seed)
  }

  // MARK: git daemon

  /// Why `git daemon` cannot run here, or nil when it can.
  static let gitDaemonUnavailableReason: String? = {
    gitDaemonPath == nil ? gitDaemonProbe.reason : nil
  }()

  static var gitDaemonPath: String? { gitDaemonProbe.path }

  /// Finds `git-daemon` in `git --exec-path`: it is run directly, not through the `git`
  /// wrapper, so that the signals that stop it reach the daemon itself.
  static let gitDaemonProbe: (path: String?, reason: String?) = {
    guard let git = gitPath else { return (nil, "no git binary on this machine") }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: git)
    process.arguments = ["--exec-path"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return (nil, "cannot run '\(git) --exec-path'") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let execPath = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    let daemon = (execPath as NSString).appendingPathComponent("git-daemon")
    guard FileManager.default.isExecutableFile(atPath: daemon) else {
      return (nil, "git-daemon is not installed at '\(daemon)' (Debian: package git-daemon-run or git)")
    }
    return (daemon, nil)
  }()

  /// A `git daemon` serving `basePath` on loopback with receive-pack on; stopped by `stop()`.
  final class GitDaemon {
    let process: Process
    let port: Int
    init(process: Process, port: Int) {
      self.process = process
      self.port = port
    }

    func url(_ name: String) -> String { "git://127.0.0.1:\(port)/\(name)" }

    /// SIGTERM, up to 2 s of grace, then SIGKILL (a daemon started from a process that
    /// ignores SIGTERM inherits that), then wait.
    func stop() {
      if process.isRunning { process.terminate() }
      for _ in 0..<20 where process.isRunning { usleep(100_000) }
      if process.isRunning { kill(process.processIdentifier, SIGKILL) }
      process.waitUntilExit()
    }
  }

  /// Starts the daemon on a free port and waits (bounded) until `probe` answers `ls-remote`.
  static func startGitDaemon(basePath: URL, probe: String) throws -> GitDaemon {
    for _ in 0..<5 {
      let port = try freePort()
      let process = Process()
      process.executableURL = URL(fileURLWithPath: gitDaemonPath ?? "/usr/lib/git-core/git-daemon")
      process.arguments = [
        "--export-all", "--enable=receive-pack", "--base-path=\(basePath.path)",
        "--listen=127.0.0.1", "--port=\(port)", "--reuseaddr", basePath.path,
      ]
      process.standardOutput = FileHandle.nullDevice
      process.standardError = FileHandle.nullDevice
      try process.run()
      let daemon = GitDaemon(process: process, port: port)
      for _ in 0..<50 {
        if !process.isRunning { break }
        if let probeResult = try? git(["ls-remote", daemon.url(probe)], in: basePath), probeResult.status == 0 {
          return daemon
        }
        usleep(100_000)
      }
      daemon.stop()
    }
    throw NSError(domain: "RemoteHarness", code: 1, userInfo: [NSLocalizedDescriptionKey: "git daemon did not start"])
  }

  /// A port the kernel says is free now (bind to 0, read it back, close).
  static func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw NSError(domain: "RemoteHarness", code: 2) }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw NSError(domain: "RemoteHarness", code: 3) }
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw NSError(domain: "RemoteHarness", code: 4) }
    return Int(UInt16(bigEndian: address.sin_port))
  }
}
