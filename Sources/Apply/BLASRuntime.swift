internal import CBLAS

/// The process-wide OpenBLAS settings. **Only the `mvc` executable calls these**; libraries never
/// change threads or read the environment (STYLE §1, §5).
///
/// OpenBLAS reads `OPENBLAS_CORETYPE` and `OPENBLAS_NUM_THREADS` in its ELF constructor, before
/// `main`, so a better kernel can only be chosen by re-executing the process with the variable set
/// (platform-notes G1). The pure helpers ``cpuFlags(fromCPUInfo:)``, ``preferredCoreType(cpuFlags:)``
/// and ``isGenericFallback(cpuFlags:)`` give the CLI what it needs to decide.
public enum BLASRuntime {
  /// OpenBLAS starts its worker threads when the library loads, and they spin on `sched_yield`
  /// for ~2²⁸ cycles (~0.1 s) before sleeping: a command that makes no BLAS call stops them
  /// rather than share the CPU with them.
  public static func stopIdleThreads() {
    // OpenBLAS's pthread server; the next threaded BLAS call starts the threads again
    // (`exec_blas_async` checks `blas_server_avail`). Declared in CBLAS's shim.h.
    _ = blas_thread_shutdown_()
  }

  /// The kernel family OpenBLAS chose, e.g. `"SkylakeX"` or `"Prescott"` (`openblas_get_corename`).
  public static var coreName: String {
    guard let name = openblas_get_corename() else { return "unknown" }
    return String(cString: name)
  }

  /// The build description, e.g. `"OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX
  /// MAX_THREADS=64"` (`openblas_get_config`).
  package static var configDescription: String {
    guard let config = openblas_get_config() else { return "unknown" }
    return String(cString: config)
  }

  /// The number of threads BLAS calls use, process-wide (`openblas_get_num_threads` /
  /// `openblas_set_num_threads`). Setting it is not capped at the CPU count, so a large value
  /// oversubscribes; values below 1 are a programmer error. When the caller parallelizes over
  /// tensors itself, set this to 1 so the two levels do not multiply.
  public static var threadCount: Int {
    get { Int(openblas_get_num_threads()) }
    set {
      precondition(newValue >= 1 && newValue <= 1024, "BLAS thread count \(newValue) out of range")
      openblas_set_num_threads(Int32(newValue))
    }
  }

  /// Core names OpenBLAS falls back to when it does not recognize the CPU model (platform-notes G1:
  /// family 6 / model 0xCF gets `Prescott`). All are SSE-only kernels.
  package static let genericCoreNames: Set<String> = [
    "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai", "Coppermine", "Northwood",
    "Banias", "Atom", "Opteron", "Opteron_SSE3", "Barcelona", "Generic",
  ]

  /// The `flags` of the first processor in a `/proc/cpuinfo` text (x86 `flags`, or ARM
  /// `Features`); empty if there is no such line. Pure: the caller reads the file.
  package static func cpuFlags(fromCPUInfo text: String) -> Set<String> {
    for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
      guard let colon = line.firstIndex(of: ":") else { continue }
      let key = line[..<colon].filter { $0 != " " && $0 != "\t" }
      guard key == "flags" || key == "Features" else { continue }
      let values = line[line.index(after: colon)...].split(whereSeparator: {
        $0 == " " || $0 == "\t"
      })
      return Set(values.map(String.init))
    }
    return []
  }

  /// The `OPENBLAS_CORETYPE` to request for a CPU with these flags: `"SkylakeX"` when
  /// AVX-512 F, CD, BW, DQ and VL are all present, `"Haswell"` when AVX2 and FMA are, otherwise
  /// nil (leave OpenBLAS's own choice alone). Pure.
  package static func preferredCoreType(cpuFlags: Set<String>) -> String? {
    if ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"].allSatisfy(cpuFlags.contains) {
      return "SkylakeX"
    }
    if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
    return nil
  }

  /// Whether OpenBLAS picked a generic SSE kernel (``genericCoreNames``) although the CPU could run
  /// a better one, i.e. ``preferredCoreType(cpuFlags:)`` is not nil. When true, the CLI should
  /// re-execute itself with `OPENBLAS_CORETYPE` set.
  ///
  /// Takes the flags as a parameter (instead of reading `/proc/cpuinfo`) because only the CLI
  /// touches process state.
  package static func isGenericFallback(cpuFlags: Set<String>) -> Bool {
    isGenericFallback(coreName: coreName, cpuFlags: cpuFlags)
  }

  /// Pure form of ``isGenericFallback(cpuFlags:)`` for a given core name.
  package static func isGenericFallback(coreName: String, cpuFlags: Set<String>) -> Bool {
    genericCoreNames.contains(coreName) && preferredCoreType(cpuFlags: cpuFlags) != nil
  }

  /// The variables an executable sets before it re-executes itself so that OpenBLAS loads a
  /// better kernel (platform-notes G1), or nil to carry on as it is: when the user chose a core
  /// (`OPENBLAS_CORETYPE`) or set `optOut`, when `marker` says this process is the re-executed
  /// one, when `cpuInfo` gives nothing, or when OpenBLAS's choice is not a generic fallback.
  ///
  /// The decision only: reading the environment, `setenv` and `execv` stay with the executable,
  /// the one owner of process state.
  /// - Parameters:
  ///   - environment: The process's environment variables.
  ///   - marker: Set to "1" in what is returned, so the re-executed process does not try again.
  ///   - optOut: A variable whose presence turns the re-exec off.
  ///   - coreName: The kernel OpenBLAS chose (``coreName``; a parameter for tests).
  ///   - cpuInfo: Reads `/proc/cpuinfo`; called only when the environment allows a re-exec.
  /// - Returns: `OPENBLAS_CORETYPE` and `marker` with the values to set.
  public static func reexecEnvironment(
    environment: [String: String], marker: String, optOut: String, coreName: String = coreName,
    cpuInfo: () -> String?
  ) -> [String: String]? {
    guard environment["OPENBLAS_CORETYPE"] == nil, environment[marker] == nil, environment[optOut] == nil,
      let text = cpuInfo()
    else { return nil }
    let flags = cpuFlags(fromCPUInfo: text)
    guard isGenericFallback(coreName: coreName, cpuFlags: flags), let core = preferredCoreType(cpuFlags: flags) else {
      return nil
    }
    return ["OPENBLAS_CORETYPE": core, marker: "1"]
  }
}
