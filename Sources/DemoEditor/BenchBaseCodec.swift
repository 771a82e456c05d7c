import ArgumentParser
import DeltaStore
import Foundation

/// `mvc-demo-editor bench-base-codec FILE...`: the base store's chunk encodings on every tensor
/// of real safetensors files, on one thread (zstd level 1, no workers, as each of init's
/// threads): stored bytes against the tensor bytes, and encode and decode speed in MB/s of
/// tensor bytes (best of `--repeats`). Checks every decode gives the bytes back.
struct BenchBaseCodec: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-base-codec", abstract: "Chunk encodings 1 and 2 on the tensors of safetensors files.")

  @Argument(help: "safetensors files") var files: [String]
  @Option(help: "Runs of each step; the fastest is printed.") var repeats = 3

  func run() throws {
    print("file encoding tensor_B stored_B ratio encode_MB/s decode_MB/s")
    for path in files {
      let file = try SafetensorsFile(path: path)
      let tensors = try file.tensors.map { ($0.dtype, try file.read($0)) }
      let total = tensors.map(\.1.count).reduce(0, +)
      for encoding in ChunkEncoding.allCases {
        let compressor = try ZstdCompressor(level: 1)
        var encoded: [[[UInt8]]] = []
        var encodeSeconds = Double.infinity
        var decodeSeconds = Double.infinity
        for _ in 0..<repeats {
          let start = Date()
          encoded = try tensors.map { dtype, bytes in
            try bytes.withUnsafeBytes {
              try FullTensorCodec.encode($0, dtype: dtype, encoding: encoding, compressor: compressor)
            }
          }
          encodeSeconds = min(encodeSeconds, Date().timeIntervalSince(start))
          var outs = tensors.map { [UInt8](repeating: 0, count: $0.1.count) }
          let decodeStart = Date()
          for (i, (dtype, _)) in tensors.enumerated() {
            try outs[i].withUnsafeMutableBytes {
              try FullTensorCodec.decode(chunks: encoded[i], into: $0, dtype: dtype, encoding: encoding)
            }
          }
          decodeSeconds = min(decodeSeconds, Date().timeIntervalSince(decodeStart))
          guard outs.elementsEqual(tensors.map(\.1)) else {
            throw ValidationError("encoding \(encoding.rawValue) did not round-trip")
          }
        }
        let stored = encoded.flatMap { $0 }.map(\.count).reduce(0, +)
        print(
          String(
            format: "%@ %d %d %d %.4f %.0f %.0f", (path as NSString).lastPathComponent, encoding.rawValue, total,
            stored,
            Double(stored) / Double(total), Double(total) / encodeSeconds / 1e6, Double(total) / decodeSeconds / 1e6))
      }
    }
  }
}
