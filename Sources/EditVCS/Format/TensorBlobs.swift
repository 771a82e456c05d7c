import Apply
import DeltaStore
import Foundation

/// The blob formats of tensor states, on top of DeltaStore's codecs.
enum TensorBlobs {
  static let chunkByteCount = 64 << 20

  static func encodeFactor(_ values: [Float], compressor: ZstdCompressor) throws -> [UInt8] {
    try values.withUnsafeBufferPointer { try FactorCodec.encode($0, compressor: compressor) }
  }

  static func decodeFactor(_ blob: [UInt8], elementCount: Int) throws -> [Float] {
    try blob.withUnsafeBytes { try FactorCodec.decode($0, elementCount: elementCount) }
  }
}
