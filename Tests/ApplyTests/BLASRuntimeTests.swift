import Testing

@testable import Apply

let sampleCPUInfo = """
  processor\t: 0
  vendor_id\t: GenuineIntel
  flags\t\t: fpu sse sse2 ssse3 fma avx avx2 avx512f avx512dq avx512cd avx512bw avx512vl
  bugs\t\t: spectre_v1

  processor\t: 1
  flags\t\t: fpu sse
  """

@Suite("BLAS runtime")
struct BLASRuntimeTests {
  @Test("cpu flags come from the first flags line")
  func parsesFlags() {
    let flags = BLASRuntime.cpuFlags(fromCPUInfo: sampleCPUInfo)
    #expect(flags.contains("avx512bw") && flags.contains("fma") && flags.contains("fpu"))
    #expect(flags.count == 12)
    #expect(
      BLASRuntime.cpuFlags(fromCPUInfo: "Features\t: fp asimd sve\n") == ["fp", "asimd", "sve"])
    #expect(BLASRuntime.cpuFlags(fromCPUInfo: "").isEmpty)
  }

  @Test("preferred core type follows the instruction sets")
  func preferredCore() {
    let avx512: Set = ["avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]
    #expect(BLASRuntime.preferredCoreType(cpuFlags: avx512) == "SkylakeX")
    #expect(BLASRuntime.preferredCoreType(cpuFlags: avx512.subtracting(["avx512vl"])) == "Haswell")
    #expect(BLASRuntime.preferredCoreType(cpuFlags: ["avx2", "fma"]) == "Haswell")
    #expect(BLASRuntime.preferredCoreType(cpuFlags: ["avx2"]) == nil)
    #expect(BLASRuntime.preferredCoreType(cpuFlags: ["sse3"]) == nil)
  }

  @Test("generic fallback is detected only when a better core exists")
  func genericFallback() {
    let flags = BLASRuntime.cpuFlags(fromCPUInfo: sampleCPUInfo)
    #expect(BLASRuntime.isGenericFallback(coreName: "Prescott", cpuFlags: flags))
    #expect(!BLASRuntime.isGenericFallback(coreName: "SkylakeX", cpuFlags: flags))
    #expect(!BLASRuntime.isGenericFallback(coreName: "Prescott", cpuFlags: ["sse3"]))
  }

  @Test("a re-exec is asked for only on a generic fallback the user did not choose")
  func reexecDecision() {
    func decide(_ environment: [String: String], core: String = "Prescott", cpuInfo: String? = sampleCPUInfo)
      -> [String: String]?
    {
      BLASRuntime.reexecEnvironment(
        environment: environment, marker: "M", optOut: "NO", coreName: core, cpuInfo: { cpuInfo })
    }
    #expect(decide([:]) == ["OPENBLAS_CORETYPE": "SkylakeX", "M": "1"])
    #expect(decide(["OPENBLAS_CORETYPE": "Prescott"]) == nil)  // the user's choice stands
    #expect(decide(["M": "1"]) == nil)  // already re-executed once
    #expect(decide(["NO": ""]) == nil)
    #expect(decide([:], core: "SkylakeX") == nil)
    #expect(decide([:], cpuInfo: nil) == nil)
    #expect(decide([:], cpuInfo: "flags\t: sse sse2 sse3\n") == nil)
    var read = false
    _ = BLASRuntime.reexecEnvironment(
      environment: ["NO": "1"], marker: "M", optOut: "NO", coreName: "Prescott",
      cpuInfo: {
        read = true
        return sampleCPUInfo
      })
    #expect(!read)  // /proc/cpuinfo is not read when the environment already says no
  }

  @Test("the loaded OpenBLAS reports itself")
  func loadedLibrary() {
    #expect(!BLASRuntime.coreName.isEmpty)
    #expect(BLASRuntime.configDescription.contains("OpenBLAS"))
    #expect(BLASRuntime.threadCount >= 1)
  }
}
