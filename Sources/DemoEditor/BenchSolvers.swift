import Apply
import ArgumentParser
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// `mvc-demo-editor bench-solvers`: times `Apply.EditSolvers.solve` (EMMET, MEMIT, ROME) at
/// GPT-2 XL MLP shape (W 1600×6400, C₀ 6400×6400 from random keys), the Swift counterpart of
/// `scripts/bench_solvers.py`.
///
/// The parent builds W₀ (Float32) and C₀ = K₀ᵀK₀/m (Float64) once and writes them to a temporary
/// folder; each (method, n) row then runs in a fresh child process (this executable again, with
/// the hidden `--row` options), so that the peak RSS (`getrusage` `ru_maxrss`) it reports belongs
/// to that row alone. Like the numpy script, every row holds W₀ (41 MB) and C₀ (328 MB).
struct BenchSolvers: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-solvers",
    abstract: "Time EditSolvers.solve (emmet, memit, rome) on a 1600×6400 W for several batch sizes.")

  @Option(help: "Comma-separated batch sizes n.") var sizes = "1,100,1000,10000"
  @Option(help: "Comma-separated methods: rome, emmet, memit.") var methods = "emmet,memit"
  @Option(help: "Number of random preservation keys m behind C₀ = K₀ᵀK₀/m.")
  var preservationKeys = 8000
  @Option(help: "λ (mom2_update_weight).") var lambda = 1.0
  @Option(help: "μ, EMMET's ridge (n > 1 only).") var mu = 0.1
  @Option(help: "Skip EMMET rows with n above this (0 = run every size).") var skipEmmetAbove = 0
  @Flag(help: "Print rows as tab-separated values without the header lines.") var tsv = false

  @Option(help: .hidden) var rowDirectory: String?
  @Option(help: .hidden) var rowMethod: String?
  @Option(help: .hidden) var rowN: Int?

  static let dOut = 1600
  static let dIn = 6400

  func run() throws {
    if let directory = rowDirectory, let method = rowMethod, let n = rowN {
      try runRow(directory: directory, methodName: method, n: n)
      return
    }
    let methodList = methods.split(separator: ",").map(String.init)
    for name in methodList where EditMethod(rawValue: name) == nil {
      throw ValidationError("unknown method '\(name)' (rome, emmet, memit)")
    }
    let sizeList = try sizes.split(separator: ",").map { text -> Int in
      guard let n = Int(text), n > 0 else { throw ValidationError("bad size '\(text)'") }
      return n
    }

    let directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("mvc-bench-solvers-\(getpid())").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }

    let start = Date()
    var rng = SplitMix64(seed: 0, stream: 1)
    let w0 = (0..<(Self.dOut * Self.dIn)).map { _ in rng.nextGaussian() * 0.02 }
    let k0 = rng.gaussians(preservationKeys * Self.dIn)
    let c0 = try EditSolvers.secondMoment(ofKeys: k0, count: preservationKeys, dIn: Self.dIn)
    try Self.write(w0, to: directory + "/w0.f32")
    try Self.write(c0, to: directory + "/c0.f64")
    let setup = Date().timeIntervalSince(start)

    if !tsv {
      print(
        "Swift EditSolvers.solve; OpenBLAS core \(BLASRuntime.coreName), threads \(BLASRuntime.threadCount), "
          + "OPENBLAS_CORETYPE=\(ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)")")
      print(
        "W0 \(Self.dOut)x\(Self.dIn) float32, C0 \(Self.dIn)x\(Self.dIn) float64 from \(preservationKeys) keys, "
          + "lambda=\(lambda), mu=\(mu) (n>1 only); fixture setup \(String(format: "%.2f", setup)) s")
      print(
        "method      n   solve s   peak RSS MiB  rank")
    }
    for method in methodList {
      for n in sizeList {
        if method == "rome" && n != 1 { continue }
        if method == "emmet" && skipEmmetAbove > 0 && n > skipEmmetAbove {
          emit(method, n, "skipped (--skip-emmet-above \(skipEmmetAbove))")
          continue
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe")
        process.arguments = [
          "bench-solvers", "--row-directory", directory, "--row-method", method, "--row-n", "\(n)",
          "--lambda", "\(lambda)", "--mu", "\(mu)",
        ]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if process.terminationStatus != 0 {
          emit(method, n, "failed (exit \(process.terminationStatus)) \(text)")
          continue
        }
        let fields = text.split(separator: " ")
        guard fields.count == 3 else {
          emit(method, n, "unexpected output: \(text)")
          continue
        }
        if tsv {
          print("\(method)\t\(n)\t\(fields[0])\t\(fields[1])\t\(fields[2])")
        } else {
          print(
            Self.pad(method, 6, left: true) + " " + Self.pad("\(n)", 6) + " " + Self.pad(String(fields[0]), 9)
              + " " + Self.pad(String(fields[1]), 14) + " " + Self.pad(String(fields[2]), 5))
        }
        fflush(nil)  // every output stream: the C global `stdout` is shared mutable state to Swift 6
      }
    }
  }

  private func emit(_ method: String, _ n: Int, _ note: String) {
    if tsv {
      print("\(method)\t\(n)\t\(note)")
    } else {
      print(Self.pad(method, 6, left: true) + " " + Self.pad("\(n)", 6) + "  " + note)
    }
    fflush(nil)  // every output stream: the C global `stdout` is shared mutable state to Swift 6
  }

  /// One row, in its own process: load the fixtures, make n keys and targets, time `solve`.
  private func runRow(directory: String, methodName: String, n: Int) throws {
    guard let method = EditMethod(rawValue: methodName) else {
      throw ValidationError("unknown method '\(methodName)'")
    }
    let w0: [Float] = try Self.read(directory + "/w0.f32")
    let c0: [Double] = try Self.read(directory + "/c0.f64")
    var rng = SplitMix64(seed: 1, stream: UInt64(n), purpose: 9)
    let keys = rng.gaussians(n * Self.dIn)
    let values = rng.gaussians(n * Self.dOut)
    let problem = EditProblem(
      w0: .float32(w0), dOut: Self.dOut, dIn: Self.dIn, keys: keys, values: values,
      covariance: c0, lambda: lambda, mu: mu)
    let start = DispatchTime.now().uptimeNanoseconds
    let update = try EditSolvers.solve(problem, method: method)
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    let peakMiB = Double(usage.ru_maxrss) / 1024
    print(String(format: "%.3f %.0f %d", seconds, peakMiB, update.rank))
  }

  static func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return left ? text + fill : fill + text
  }

  static func write<T>(_ values: [T], to path: String) throws {
    let data = values.withUnsafeBufferPointer { Data(buffer: $0) }
    try data.write(to: URL(fileURLWithPath: path))
  }

  static func read<T>(_ path: String) throws -> [T] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let count = data.count / MemoryLayout<T>.stride
    return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
      _ = data.copyBytes(to: UnsafeMutableRawBufferPointer(buffer))
      initialized = count
    }
  }
}
