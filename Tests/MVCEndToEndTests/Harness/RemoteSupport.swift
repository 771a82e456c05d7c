import Foundation
import TestSupport

#if canImport(Glibc)
  import Glibc
#endif

/// A real `git daemon` on loopback for the remote tests. Its processes, like every other, go
/// through the one runner (Tests/TestSupport/ProcessRunner.swift).
enum RemoteHarness {
  /// Why `git daemon` cannot run here, or nil when it can.
  static let gitDaemonUnavailableReason: String? = {
    gitDaemonPath == nil ? gitDaemonProbe.reason : nil
  }()

  static var gitDaemonPath: String? { gitDaemonProbe.path }

  /// Finds `git-daemon` in `git --exec-path`: it is run directly, not through the `git`
  /// wrapper, so that the signals that stop it reach the daemon itself.
  static let gitDaemonProbe: (path: String?, reason: String?) = {
    guard let git = gitExecutable else { return (nil, "no git on PATH") }
    let probe = runProcessOutcome(git, ["--exec-path"], in: FileManager.default.temporaryDirectory)
    guard probe.status == 0 else { return (nil, "'\(git.path) --exec-path' failed: \(probe.summary)") }
    let execPath = probe.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    let daemon = (execPath as NSString).appendingPathComponent("git-daemon")
    guard FileManager.default.isExecutableFile(atPath: daemon) else {
      return (nil, "git-daemon is not installed at '\(daemon)' (Debian: package git-daemon-run or git)")
    }
    return (daemon, nil)
  }()

  /// A `git daemon` serving `basePath` on loopback with receive-pack on; stopped by `stop()`.
  final class GitDaemon {
    let running: RunningProcess
    let port: Int
    init(running: RunningProcess, port: Int) {
      self.running = running
      self.port = port
    }
    var process: Process { running.process }

    func url(_ name: String) -> String { "git://127.0.0.1:\(port)/\(name)" }

    /// SIGTERM, up to 2 s of grace, then SIGKILL (a daemon started from a process that
    /// ignores SIGTERM inherits that), then wait.
    func stop() {
      if process.isRunning { process.terminate() }
      for _ in 0..<20 where process.isRunning { usleep(100_000) }
      running.kill()
      process.waitUntilExit()
    }
  }

  /// Starts the daemon on a free port and waits (bounded) until `probe` answers `ls-remote`.
  static func startGitDaemon(basePath: URL, probe: String) throws -> GitDaemon {
    for _ in 0..<5 {
      let port = try freePort()
      let running = try RunningProcess(
        URL(fileURLWithPath: gitDaemonPath ?? "/usr/lib/git-core/git-daemon"),
        [
          "--export-all", "--enable=receive-pack", "--base-path=\(basePath.path)",
          "--listen=127.0.0.1", "--port=\(port)", "--reuseaddr", basePath.path,
        ], in: basePath)
      let daemon = GitDaemon(running: running, port: port)
      for _ in 0..<50 {
        if !running.isRunning { break }
        if runGit(["ls-remote", daemon.url(probe)], in: basePath).status == 0 { return daemon }
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
