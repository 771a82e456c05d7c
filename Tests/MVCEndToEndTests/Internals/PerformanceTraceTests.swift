import Foundation
import TestSupport
import Testing

@testable import mvc

/// `MVC_TRACE_PERFORMANCE` is written from the threads that rebuild tensors as well as the main
/// thread: every line must arrive whole, none lost or overwritten.
@Suite struct PerformanceTraceTests {
  @Test func twoThreadsTracingToAFileWriteWholeLines() throws {
    try withTemporaryDirectory { dir in
      let path = dir.appendingPathComponent("trace.txt").path
      let trace = try #require(PerformanceTrace(setting: path))
      #expect(trace.destination == .file(path))
      let linesPerThread = 2000
      // Long lines, so a torn or overwritten write would show inside a line.
      let padding = String(repeating: "x", count: 300)
      DispatchQueue.concurrentPerform(iterations: 2) { thread in
        for i in 0..<linesPerThread { trace.write("thread \(thread) line \(i) \(padding)") }
      }
      let lines = try String(contentsOfFile: path, encoding: .utf8).split(
        separator: "\n", omittingEmptySubsequences: false)
      #expect(lines.last == "")  // the file ends with a newline
      let body = lines.dropLast()
      #expect(body.count == 2 * linesPerThread)
      let pattern = /performance: \+[0-9]+\.[0-9]{3} thread ([01]) line ([0-9]+) x{300}/
      var seen = Set<String>()
      for line in body {
        let match = try #require(line.wholeMatch(of: pattern), "torn line: \(line.prefix(80))")
        seen.insert("\(match.1) \(match.2)")
      }
      #expect(seen.count == 2 * linesPerThread)
    }
  }

  @Test func settingsThatTurnTracingOff() {
    for setting in [nil, "", "0", "false", "FALSE"] { #expect(PerformanceTrace(setting: setting) == nil) }
    #expect(PerformanceTrace(setting: "1")?.destination == .standardError)
    #expect(PerformanceTrace(setting: "true")?.destination == .standardError)
  }

  @Test func noFileUntilTheFirstLine() throws {
    try withTemporaryDirectory { dir in
      let path = dir.appendingPathComponent("trace.txt").path
      let trace = try #require(PerformanceTrace(setting: path))
      #expect(!FileManager.default.fileExists(atPath: path))
      trace.write("one")
      #expect(FileManager.default.fileExists(atPath: path))
    }
  }
}
