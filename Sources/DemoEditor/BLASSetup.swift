import Apply
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The same fix as `mvc`'s `BLASSetup` (the decision is Apply's `BLASRuntime.reexecEnvironment`):
/// Debian's OpenBLAS 0.3.21 falls back to its slow "Prescott" kernels on recent Intel CPUs and
/// reads OPENBLAS_CORETYPE before `main`, so the editor re-execs itself once with the variable
/// set (unless the user set it).
enum BLASSetup {
  static func reexecWithBetterCoreIfNeeded() {
    guard
      let variables = BLASRuntime.reexecEnvironment(
        environment: ProcessInfo.processInfo.environment, marker: "MVC_DEMO_EDITOR_BLAS_REEXEC",
        optOut: "MVC_NO_AUTOCORE", cpuInfo: { try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) })
    else { return }
    for (name, value) in variables { setenv(name, value, 1) }
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &argv)
    for p in argv { free(p) }  // exec failed: carry on with the slow kernel
  }
}
