import Apply
import ArgumentParser
import DeltaStore
import Foundation

/// `mvc-demo-editor bench-codecs`: times DeltaStore's codecs on the inputs that dominate commit
/// and checkout: byte shuffling and full-state decoding of a 16 MiB F32 tensor, and the
/// exactness residual of a rank-one edit of a 1024×4096 F32 matrix.
///
/// Prints the best of `--repeats` runs of each step; figures only, nothing is asserted.
struct BenchCodecs: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-codecs",
    abstract: "Time byte shuffling, full-tensor decoding and the residual codec.")

  @Option(help: "Runs of each step; the fastest is printed.") var repeats = 10
  @Option(help: "Bytes per piece fed to the streaming decoder (a stored deflate block is 65535).")
  var pieceByteCount = 65535
  @Option(help: "Scale of the edit vectors u and v (sets how many elements differ).")
  var uvScale: Float = 0.033

  func run() throws {
    var rng = SplitMix64(seed: 7)
    let elementCount = 4 << 20  // 16 MiB of F32
    let floats = (0..<elementCount).map { _ in rng.nextGaussian() * 0.02 }
    let raw = floats.withUnsafeBytes { [UInt8]($0) }
    var out = [UInt8](repeating: 0, count: raw.count)

    let planes = raw.withUnsafeBytes { ByteShuffle.shuffle($0, elementByteCount: 4) }
    report("shuffle 16 MiB (width 4)") {
      raw.withUnsafeBytes { src in
        out.withUnsafeMutableBytes { ByteShuffle.shuffle(src, into: $0, elementByteCount: 4) }
      }
    }
    report("unshuffle 16 MiB (width 4)") {
      planes.withUnsafeBytes { src in
        out.withUnsafeMutableBytes { ByteShuffle.unshuffle(src, into: $0, elementByteCount: 4) }
      }
    }

    let compressor = try ZstdCompressor()
    let chunks = try raw.withUnsafeBytes {
      try FullTensorCodec.encode($0, dtype: .f32, compressor: compressor)
    }
    try reportThrowing("decode 16 MiB F32 full state (array API)") {
      try out.withUnsafeMutableBytes {
        try FullTensorCodec.decode(chunks: chunks, into: $0, dtype: .f32)
      }
    }
    precondition(out == raw, "array decode differs")
    try benchStreaming(chunks: chunks, raw: raw, out: &out)
    try benchResidual(&rng)
  }

  /// The streaming decoder fed `pieceByteCount`-byte pieces, as from a stored git object, for
  /// several output windows; then one whole-chunk piece.
  private func benchStreaming(chunks: [[UInt8]], raw: [UInt8], out: inout [UInt8]) throws {
    for window in [64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20] {
      let decoder = try ZstdStreamDecoder(windowByteCount: window)
      out = [UInt8](repeating: 0, count: raw.count)
      try reportThrowing("decode streaming, \(window >> 10) KiB window, \(pieceByteCount) B pieces") {
        try out.withUnsafeMutableBytes { destination in
          try FullTensorCodec.decode(
            chunkCount: chunks.count, dtype: .f32, into: destination, decoder: decoder
          ) { i, sink in
            try chunks[i].withUnsafeBytes { chunk in
              for start in stride(from: 0, to: chunk.count, by: pieceByteCount) {
                let end = min(chunk.count, start + pieceByteCount)
                try sink(UnsafeRawBufferPointer(rebasing: chunk[start..<end]))
              }
            }
          }
        }
      }
      precondition(out == raw, "streaming decode differs")
    }
    let decoder = try ZstdStreamDecoder()
    // The parts: zstd alone, streaming (output discarded) and one-shot.
    try reportThrowing("  zstd streaming alone, output discarded") {
      for chunk in chunks {
        try decoder.decompressFrame(
          expectedByteCount: raw.count, pieces: { try chunk.withUnsafeBytes($0) },
          output: { _, _ in })
      }
    }
    try reportThrowing("  zstd one-shot alone") {
      try out.withUnsafeMutableBytes { d in
        for chunk in chunks { try chunk.withUnsafeBytes { try Zstd.decompress($0, into: d) } }
      }
    }
    try reportThrowing("decode streaming, whole chunk as one piece") {
      try out.withUnsafeMutableBytes { destination in
        try FullTensorCodec.decode(
          chunkCount: chunks.count, dtype: .f32, into: destination, decoder: decoder
        ) { i, sink in try chunks[i].withUnsafeBytes { try sink($0) } }
      }
    }
    precondition(out == raw, "streaming decode differs")
  }

  /// A rank-one edit: `reconstructed` rounds `W + u·vᵀ` once from Float64, `committed` computes
  /// it in Float32, so a few percent of the elements differ by one ulp.
  private func benchResidual(_ rng: inout SplitMix64) throws {
    let rows = 1024
    let cols = 4096
    let w = (0..<(rows * cols)).map { _ in rng.nextGaussian() * 0.02 }
    let u = (0..<rows).map { _ in rng.nextGaussian() * uvScale }
    let v = (0..<cols).map { _ in rng.nextGaussian() * uvScale }
    var committed = [Float](repeating: 0, count: rows * cols)
    var reconstructed = committed
    for r in 0..<rows {
      for c in 0..<cols {
        let i = r * cols + c
        committed[i] = w[i] + u[r] * v[c]
        reconstructed[i] = Float(Double(w[i]) + Double(u[r]) * Double(v[c]))
      }
    }
    let differing = zip(committed, reconstructed).filter { $0.bitPattern != $1.bitPattern }.count
    print(
      "residual input: \(rows)×\(cols) F32, \(differing) elements differ "
        + String(format: "(%.2f%%)", 100 * Double(differing) / Double(rows * cols)))
    let compressor = try ZstdCompressor()
    var encoded: EncodedResidual?
    try reportThrowing("residual encode 1024×4096 F32") {
      encoded = try committed.withUnsafeBytes { c in
        try reconstructed.withUnsafeBytes {
          try ResidualCodec.encode(committed: c, reconstructed: $0, dtype: .f32, compressor: compressor)
        }
      }
    }
    guard let encoded else { return }
    print("  blob \(encoded.bytes.count) bytes, encoding \(encoded.bytes[1])")
    var work = reconstructed
    try reportThrowing("residual apply 1024×4096 F32 (includes a copy)") {
      work = reconstructed
      try work.withUnsafeMutableBytes {
        try ResidualCodec.apply(encoded.bytes, to: $0, dtype: .f32, elementCount: rows * cols)
      }
    }
    precondition(work.map(\.bitPattern) == committed.map(\.bitPattern), "apply differs")
    report("  of which the copy of the reconstruction") {
      work = reconstructed
      work.withUnsafeMutableBytes { _ in }
    }
  }

  private func report(_ label: String, _ body: () -> Void) {
    try? reportThrowing(label, body)
  }

  private func reportThrowing(_ label: String, _ body: () throws -> Void) throws {
    let clock = ContinuousClock()
    var best = Duration.seconds(1000)
    for _ in 0..<max(1, repeats) {
      let elapsed = try clock.measure(body)
      best = min(best, elapsed)
    }
    let ms = Double(best.components.seconds) * 1e3 + Double(best.components.attoseconds) * 1e-15
    print(label.padding(toLength: 54, withPad: " ", startingAt: 0) + String(format: "%8.2f ms", ms))
  }
}
