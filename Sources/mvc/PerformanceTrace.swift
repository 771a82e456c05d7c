import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Where `MVC_TRACE_PERFORMANCE` lines go, like git's `GIT_TRACE_PERFORMANCE`: "1", "true" or
/// "2" trace to stderr, an absolute path appends to that file (created when missing).
///
/// Worker threads that rebuild tensors trace too, so lines are written one at a time under a
/// lock, each with a single `write(2)` (repeated only for what a short write left), to a
/// descriptor opened with `O_APPEND`: lines never interleave or overwrite one another.
final class PerformanceTrace: Sendable {
  enum Destination: Sendable, Equatable {
    case standardError
    case file(String)
  }

  let destination: Destination
  private let started = Date()
  /// The file's descriptor once opened (at the first line, so a command that times nothing
  /// creates no file); -1 before, or while it cannot be opened.
  private let descriptor = Mutex<Int32>(-1)

  /// nil when `setting` is unset, empty, "0" or "false".
  init?(setting: String?) {
    guard let setting, !["", "0", "false"].contains(setting.lowercased()) else { return nil }
    destination = setting.hasPrefix("/") ? .file(setting) : .standardError
  }

  deinit {
    descriptor.withLock { descriptor in
      if case .file = destination, descriptor >= 0 { close(descriptor) }
    }
  }

  /// Writes `performance: +<seconds since start> <line>` and a newline, as one line.
  func write(_ line: String) {
    let text = String(format: "performance: +%.3f ", Date().timeIntervalSince(started)) + line + "\n"
    descriptor.withLock { descriptor in
      switch destination {
      case .standardError:
        Self.writeAll(Array(text.utf8), to: STDERR_FILENO)
      case .file(let path):
        if descriptor < 0 { descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
        // A trace that cannot be written is dropped, as git drops it.
        if descriptor >= 0 { Self.writeAll(Array(text.utf8), to: descriptor) }
      }
    }
  }

  private static func writeAll(_ bytes: [UInt8], to descriptor: Int32) {
    bytes.withUnsafeBytes { buffer in
      guard let base = buffer.baseAddress else { return }
      var done = 0
      while done < buffer.count {
        let n = Glibc.write(descriptor, base + done, buffer.count - done)
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return }
        done += n
      }
    }
  }
}
