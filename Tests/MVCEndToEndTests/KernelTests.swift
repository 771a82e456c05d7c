import Foundation
import TestSupport
import Testing

/// Exactness must not rest on BLAS: OpenBLAS gives different bits under different CPU kernels,
/// so commits made under one kernel are checked out under another, both ways.
@Suite("the same bytes under every BLAS kernel")
struct KernelTests {
  static let cpuFlags: String = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
  static var hasAVX2: Bool { cpuFlags.contains(" avx2") }

  @Test(.enabled(if: hasAVX2, "Haswell kernels need AVX2; this CPU has none, so only Prescott could run"))
  func commitUnderOneKernelCheckOutUnderAnother() throws {
    for (commitKernel, checkoutKernel) in [("Prescott", "Haswell"), ("Haswell", "Prescott")] {
      try withTemporaryDirectory { dir in
        var s = Scenario(dir: dir)
        try s.writeModel(blocks: 2, hidden: 48, intermediate: 160)
        let commitEnv = ["OPENBLAS_CORETYPE": commitKernel]
        let checkoutEnv = ["OPENBLAS_CORETYPE": checkoutKernel]
        let initialized = runMVC(["init", "model.safetensors"], in: dir, environment: commitEnv)
        expectSuccess(initialized, "init under \(commitKernel)")
        s.states.append(try snapshot(s.model))
        for i in 0..<6 {
          _ = try s.edit(rank: i % 2 == 0 ? 1 : 8)
          expectSuccess(
            runMVC(["commit", "-m", "edit \(i)"], in: dir, environment: commitEnv), "commit under \(commitKernel)")
          s.states.append(try snapshot(s.model))
        }
        for back in stride(from: 6, through: 0, by: -1) {
          let result = runMVC(["checkout", back == 0 ? "main" : "main~\(back)"], in: dir, environment: checkoutEnv)
          expectSuccess(result, "checkout under \(checkoutKernel)")
          try s.expectWorkingState(6 - back, "committed under \(commitKernel), checked out under \(checkoutKernel)")
        }
      }
    }
  }
}
