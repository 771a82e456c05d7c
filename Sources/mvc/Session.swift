import Apply
import DeltaStore
import EditVCS
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Turns the process's environment into the library's explicit inputs.
enum Session {
  static func environment(quiet: Bool) -> RepositoryEnvironment {
    let variables = ProcessInfo.processInfo.environment
    // Like git's GIT_AUTHOR_DATE ("@<seconds>" or plain seconds): fixed times give stable ids.
    let date = (variables["MVC_AUTHOR_DATE"] ?? variables["GIT_AUTHOR_DATE"]).flatMap {
      Int64($0.hasPrefix("@") ? String($0.dropFirst()) : $0.split(separator: " ").first.map(String.init) ?? "")
    }
    let progress = quiet ? nil : ProgressBar.makeReporter()
    return RepositoryEnvironment(
      commitTime: date, ioHook: FaultInjection.hook(from: variables), progress: progress, compressionWorkers: 2,
      tracePerformance: performanceTrace(variables["MVC_TRACE_PERFORMANCE"]),
      // One thread per core rebuilds tensors and hashes the working model (what holds memory is
      // bounded by the pipeline's budget, not by the thread count).
      workerThreads: ProcessInfo.processInfo.activeProcessorCount,
      releaseBLASThreads: { BLASRuntime.stopIdleThreads() },
      setBLASThreadCount: { count in
        let previous = BLASRuntime.threadCount
        BLASRuntime.threadCount = count
        return previous
      })
  }

  /// Like git's GIT_TRACE_PERFORMANCE: "1"/"true"/"2" traces to stderr, an absolute path appends there.
  static func performanceTrace(_ setting: String?) -> (@Sendable (String) -> Void)? {
    guard let trace = PerformanceTrace(setting: setting) else { return nil }
    return { trace.write($0) }
  }

  /// - Parameter toleratingUnfinishedMove: open even when an interrupted move cannot be
  ///   finished (`fsck` reports it instead of failing).
  static func open(_ global: GlobalOptions, toleratingUnfinishedMove: Bool = false) throws -> EditRepository {
    try EditRepository.open(
      searchingFrom: global.workingDirectory, environment: environment(quiet: global.quiet),
      toleratingUnfinishedMove: toleratingUnfinishedMove)
  }
}

/// A one-line progress bar on stderr, only when stderr is a terminal; finished lines are erased.
final class ProgressBar {
  private var lastDraw = Date.distantPast
  private var started = Date()
  private var phase = ""
  private var bytes = 0

  static func makeReporter() -> ((ProgressEvent) -> Void)? {
    guard isatty(STDERR_FILENO) != 0 else { return nil }
    let bar = ProgressBar()
    return { bar.update($0) }
  }

  func update(_ event: ProgressEvent) {
    if event.phase != phase {
      phase = event.phase
      started = Date()
      bytes = 0
    }
    bytes += event.byteCount
    let now = Date()
    let elapsed = now.timeIntervalSince(started)
    // Quiet for the first second: short commands show nothing.
    guard elapsed > 1, now.timeIntervalSince(lastDraw) > 0.1 || event.completed == event.total else { return }
    lastDraw = now
    let rate = Double(bytes) / max(elapsed, 1e-3) / 1_048_576
    let width = 30
    let filled = event.total > 0 ? width * event.completed / event.total : 0
    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
    var line = "\r\(phase): [\(bar)] \(event.completed)/\(event.total) tensors"
    if bytes > 0 { line += String(format: ", %.0f MiB, %.0f MiB/s", Double(bytes) / 1_048_576, rate) }
    if event.completed == event.total { line += "\r\u{1B}[K" }
    FileHandle.standardError.write(Data(line.utf8))
  }
}

enum Format {
  static func bytes(_ count: Int) -> String {
    let value = Double(count)
    if value >= Double(1 << 30) { return String(format: "%.2f GiB", value / Double(1 << 30)) }
    if value >= Double(1 << 20) { return String(format: "%.2f MiB", value / Double(1 << 20)) }
    if value >= Double(1 << 10) { return String(format: "%.1f KiB", value / Double(1 << 10)) }
    return "\(count) B"
  }

  static func shape(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }

  static func date(_ seconds: Int64, offsetMinutes: Int32) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(secondsFromGMT: Int(offsetMinutes) * 60)
    return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
  }

  static func json<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
  }
}

/// Test seams for crash-safety tests, read from the environment by the CLI only (libraries take
/// the hook and never read the environment):
/// * `MVC_IO_FAIL=<write|fsync|rename>:<n>` fails the n-th such I/O event (1-based) as if the
///   disk were full;
/// * `MVC_IO_PAUSE=<write|fsync|rename|any>:<n>:<seconds>` sleeps before the n-th event, so a
///   test can kill mvc at that exact point.
enum FaultInjection {
  struct Injected: Error, LocalizedError {
    var event: String
    var errorDescription: String? { "no space left on device (injected at \(event) by MVC_IO_FAIL)" }
    var recoverySuggestion: String? { "unset MVC_IO_FAIL and run the command again; nothing was changed" }
  }

  static func hook(from variables: [String: String]) -> IOHook? {
    let fail = variables["MVC_IO_FAIL"].flatMap(parse)
    let pause = variables["MVC_IO_PAUSE"].flatMap(parse)
    guard fail != nil || pause != nil else { return nil }
    // The hook is not `Sendable`: the library calls it on the calling thread only.
    final class Counter { var counts: [String: Int] = [:] }
    let counter = Counter()
    return { event in
      let kind: String
      switch event {
      case .willWrite: kind = "write"
      case .willFsync: kind = "fsync"
      case .willRename: kind = "rename"
      }
      counter.counts[kind, default: 0] += 1
      counter.counts["any", default: 0] += 1
      if let pause, counter.counts[pause.kind] == pause.index {
        FileHandle.standardError.write(Data("mvc: paused before \(kind) #\(pause.index)\n".utf8))
        Thread.sleep(forTimeInterval: pause.seconds)
      }
      if let fail, counter.counts[fail.kind] == fail.index { throw Injected(event: "\(kind) #\(fail.index)") }
    }
  }

  static func parse(_ text: String) -> (kind: String, index: Int, seconds: Double)? {
    let parts = text.split(separator: ":").map(String.init)
    guard parts.count >= 2, ["write", "fsync", "rename", "any"].contains(parts[0]), let index = Int(parts[1]) else {
      return nil
    }
    return (parts[0], index, parts.count > 2 ? Double(parts[2]) ?? 0 : 0)
  }
}
