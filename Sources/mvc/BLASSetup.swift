import Apply
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Debian's OpenBLAS 0.3.21 does not know recent Intel models and silently picks its SSE3
/// "Prescott" kernels, 5–9× slower at rank ≥ 64. It reads OPENBLAS_CORETYPE in a library
/// constructor, before `main`, so the only fix is to re-exec once with the variable set.
enum BLASSetup {
  static let marker = "MVC_BLAS_REEXEC"

  /// Commands that never call BLAS (materializing uses the canonical rule, which is BLAS-free):
  /// they skip the re-exec, ~20 ms of a bisect step's budget, and do not hand
  /// OPENBLAS_CORETYPE to the programs `bisect run` starts.
  static let blasFreeCommands: Set<String> = [
    "checkout", "switch", "status", "log", "show", "branch", "tag", "fsck", "gc", "remote", "fetch", "push",
    "clone", "completion", "plot", "bisect",
  ]

  /// `bisect run` predicates that score edits solve with LAPACK.
  static let blasBisectOptions: Set<String> = ["--min-score", "--max-preservation-error"]

  static func needsBLAS(_ arguments: [String]) -> Bool {
    // No command (`--version`, `--help`): re-exec, so `OPENBLAS_VERBOSE=2 mvc --version` shows the kernel used.
    guard let command = arguments.first(where: { !$0.hasPrefix("-") }) else { return true }
    if command == "bisect" {
      return arguments.contains { argument in blasBisectOptions.contains { argument.hasPrefix($0) } }
    }
    return !blasFreeCommands.contains(command)
  }

  static func reexecWithBetterCoreIfNeeded() {
    guard needsBLAS(Array(CommandLine.arguments.dropFirst())) else {
      BLASRuntime.stopIdleThreads()
      return
    }
    guard
      let variables = BLASRuntime.reexecEnvironment(
        environment: ProcessInfo.processInfo.environment, marker: marker, optOut: "MVC_NO_AUTOCORE",
        cpuInfo: { try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) })
    else { return }
    for (name, value) in variables { setenv(name, value, 1) }
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &argv)
    // exec failed: carry on with the slow kernel rather than not at all.
    for p in argv { free(p) }
  }
}
