import Apply
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The same fix as `mvc`'s `BLASSetup`: Debian's OpenBLAS 0.3.21 falls back to its slow
/// "Prescott" kernels on recent Intel CPUs and reads OPENBLAS_CORETYPE before `main`, so the
/// editor re-execs itself once with the variable set (unless the user set it).
enum BLASSetup {
  static let marker = "MVC_DEMO_EDITOR_BLAS_REEXEC"

  static func reexecWithBetterCoreIfNeeded() {
    let environment = ProcessInfo.processInfo.environment
    guard environment["OPENBLAS_CORETYPE"] == nil, environment[marker] == nil,
      environment["MVC_NO_AUTOCORE"] == nil
    else { return }
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else {
      return
    }
    let flags = BLASRuntime.cpuFlags(fromCPUInfo: cpuinfo)
    guard BLASRuntime.isGenericFallback(coreName: BLASRuntime.coreName, cpuFlags: flags),
      let core = BLASRuntime.preferredCoreType(cpuFlags: flags)
    else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    setenv(marker, "1", 1)
    var argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) }
    argv.append(nil)
    execv("/proc/self/exe", &argv)
    for p in argv { free(p) }  // exec failed: carry on with the slow kernel
  }
}
