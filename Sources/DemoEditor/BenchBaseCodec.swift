import ArgumentParser
import DeltaStore
import Foundation

/// `mvc-demo-editor bench-base-codec FILE...`: the base store's chunk encodings on every tensor
/// of real safetensors files, on one thread (zstd level 1, no workers, as each of init's
/// threads): stored bytes against the tensor bytes, and encode and decode speed in MB/s of
/// tensor bytes per CPU-second of the thread (best of `--repeats`). Checks every decode gives the bytes back.
struct BenchBaseCodec: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bench-base-codec", abstract: "Chunk encodings 1 and 2 on the tensors of safetensors files.")

  @Argument(help: "safetensors files") var files: [String] = []
  @Option(help: "Runs of each step; the fastest is printed.") var repeats = 3
  @Option(help: "Generated tensors instead of files: comma-separated dtypes (bf16, f16, f32).") var generated: String?
  @Option(help: "Elements of each generated tensor.") var elements = 256 << 20

  func run() throws {
    print("file encoding tensor_B stored_B ratio encode_MB/s decode_MB/s")
    var sources: [(String, () throws -> [(DType, [UInt8])])] = files.map { path in
      (
        (path as NSString).lastPathComponent,
        {
          let file = try SafetensorsFile(path: path)
          return try file.tensors.map { ($0.dtype, try file.read($0)) }
        }
      )
    }
    for name in generated?.split(separator: ",").map(String.init) ?? [] {
      guard let dtype = DType(rawValue: name.uppercased()), [.bf16, .f16, .f32].contains(dtype) else {
        throw ValidationError("--generated takes bf16, f16 or f32, not \(name)")
      }
      sources.append(
        ("generated-\(name)-\(elements)", { [elements] in [(dtype, Self.generate(dtype, count: elements))] }))
    }
    for (name, load) in sources {
      let tensors = try load()
      let total = tensors.map(\.1.count).reduce(0, +)
      for encoding in ChunkEncoding.allCases {
        let compressor = try ZstdCompressor(level: 1)
        var encoded: [[[UInt8]]] = []
        var encodeSeconds = Double.infinity
        var decodeSeconds = Double.infinity
        for _ in 0..<repeats {
          let start = Self.threadSeconds()
          encoded = try tensors.map { dtype, bytes in
            try bytes.withUnsafeBytes {
              try FullTensorCodec.encode($0, dtype: dtype, encoding: encoding, compressor: compressor)
            }
          }
          encodeSeconds = min(encodeSeconds, Self.threadSeconds() - start)
          var outs = tensors.map { [UInt8](repeating: 0, count: $0.1.count) }
          let decodeStart = Self.threadSeconds()
          for (i, (dtype, _)) in tensors.enumerated() {
            try outs[i].withUnsafeMutableBytes {
              try FullTensorCodec.decode(chunks: encoded[i], into: $0, dtype: dtype, encoding: encoding)
            }
          }
          decodeSeconds = min(decodeSeconds, Self.threadSeconds() - decodeStart)
          guard outs.elementsEqual(tensors.map(\.1)) else {
            throw ValidationError("encoding \(encoding.rawValue) did not round-trip")
          }
        }
        let stored = encoded.flatMap { $0 }.map(\.count).reduce(0, +)
        print(
          String(
            format: "%@ %d %d %d %.4f %.0f %.0f", name, encoding.rawValue, total,
            stored,
            Double(stored) / Double(total), Double(total) / encodeSeconds / 1e6, Double(total) / decodeSeconds / 1e6))
      }
    }
  }

  /// This thread's CPU seconds: the speeds are per thread and not inflated by other processes'
  /// load (a shared machine).
  static func threadSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
  }

  /// ~N(0, 0.02²) values in `dtype`'s bits, as `generate-llama` draws them (seed 0).
  static func generate(_ dtype: DType, count: Int) -> [UInt8] {
    let width = dtype.byteCount ?? 1
    var bytes = [UInt8](repeating: 0, count: count * width)
    var state: UInt64 = 0
    bytes.withUnsafeMutableBytes { out in
      for e in 0..<count {
        let value = llamaLikeWeight(&state)
        let bits = value.bitPattern
        switch dtype {
        case .f32: out.storeBytes(of: bits.littleEndian, toByteOffset: 4 * e, as: UInt32.self)
        case .f16: out.storeBytes(of: Float16(value).bitPattern.littleEndian, toByteOffset: 2 * e, as: UInt16.self)
        default:
          let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
          out.storeBytes(of: rounded.littleEndian, toByteOffset: 2 * e, as: UInt16.self)
        }
      }
    }
    return bytes
  }
}
