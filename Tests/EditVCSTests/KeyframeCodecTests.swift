import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

// The keyframe payloads (docs/FORMAT.md "Snapshots: bounding the replay"): residuals round-trip
// every bit pattern, including elements thousands of ulps off (the exception list), and damaged
// payloads are refused rather than applied.

private func f32Bytes(_ values: [Float]) -> [UInt8] {
  values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

/// A state and a prediction a few ulps from it, with some elements near zero far off and a sign flip.
private func pair(count: Int, seed: UInt64) -> (actual: [UInt8], predicted: [UInt8]) {
  var rng = SplitMix64(seed: seed)
  var actual: [Float] = []
  var predicted: [Float] = []
  for i in 0..<count {
    let x = Float(Double(rng.next() % 2_000_001) / 1e6 - 1) * 0.02
    var p = x
    for _ in 0..<Int(rng.next() % 4) { p = rng.next() % 2 == 0 ? p.nextUp : p.nextDown }
    if i % 97 == 0 { p = x + 1e-3 }  // far off in ulps
    if i % 211 == 0 { p = -x }  // across zero
    actual.append(x)
    predicted.append(p)
  }
  return (f32Bytes(actual), f32Bytes(predicted))
}

@Test func keyframeResidualsRoundTripEveryElement() throws {
  for (count, seed) in [(1, 1), (1000, 2), (65_537, 3)] as [(Int, UInt64)] {
    let (actual, predicted) = pair(count: count, seed: seed)
    let payload = try actual.withUnsafeBytes { a in
      try predicted.withUnsafeBytes { try KeyframeCodec.encodeResidual(actual: a, predicted: $0, dtype: .f32) }
    }
    var rebuilt = predicted
    try payload.withUnsafeBytes { p in
      try rebuilt.withUnsafeMutableBytes { try KeyframeCodec.applyResidual(p, to: $0, dtype: .f32) }
    }
    #expect(rebuilt == actual, "\(count) elements: the residual did not give the state back")
  }
}

@Test func damagedKeyframeResidualsAreRefused() throws {
  let (actual, predicted) = pair(count: 4096, seed: 4)
  let payload = try actual.withUnsafeBytes { a in
    try predicted.withUnsafeBytes { try KeyframeCodec.encodeResidual(actual: a, predicted: $0, dtype: .f32) }
  }
  var damaged: [[UInt8]] = [Array(payload.prefix(payload.count / 2)), [0x7F] + payload.dropFirst()]
  var lengths = payload
  lengths[9] ^= 0xFF  // the dense frame's length
  damaged.append(lengths)
  for bad in damaged {
    var target = predicted
    #expect(throws: DeltaStoreError.self) {
      try bad.withUnsafeBytes { p in
        try target.withUnsafeMutableBytes { try KeyframeCodec.applyResidual(p, to: $0, dtype: .f32) }
      }
    }
  }
}

@Test func standaloneKeyframesRoundTripAndRefuseTruncation() throws {
  let (actual, _) = pair(count: 10_000, seed: 5)
  let payload = try actual.withUnsafeBytes { try KeyframeCodec.encodeStandalone($0, dtype: .f32) }
  var out = [UInt8](repeating: 0, count: actual.count)
  try payload.withUnsafeBytes { p in
    try out.withUnsafeMutableBytes { try KeyframeCodec.decodeStandalone(p, into: $0, dtype: .f32) }
  }
  #expect(out == actual)
  let truncated = Array(payload.prefix(payload.count - 7))
  #expect(throws: (any Error).self) {
    try truncated.withUnsafeBytes { p in
      try out.withUnsafeMutableBytes { try KeyframeCodec.decodeStandalone(p, into: $0, dtype: .f32) }
    }
  }
}

@Test func keyframeHeadersRoundTripAndRejectOtherFiles() {
  let header = KeyframeHeader(
    kind: .residual, hash: "xxh3-128:00112233445566778899aabbccddeeff", elementCount: 4_194_304, elementWidth: 4,
    anchor: "xxh3-128:ffeeddccbbaa99887766554433221100", stateCount: 41, payloadOffset: 0)
  let bytes = header.encoded()
  var parsed = KeyframeHeader.parse(bytes + [1, 2, 3])
  parsed?.payloadOffset = 0
  #expect(parsed == header)
  #expect(KeyframeHeader.parse(bytes).map(\.payloadOffset) == bytes.count)
  #expect(KeyframeHeader.parse(Array(bytes.prefix(bytes.count - 1))) == nil)
  #expect(KeyframeHeader.parse(Array("MVCKEYF2".utf8) + bytes.dropFirst(8)) == nil)
  #expect(KeyframeHeader.parse([]) == nil)
  #expect(EditRepository.parseByteCount("64k") == 65_536)
  #expect(EditRepository.parseByteCount("2G") == 2 << 30)
  #expect(EditRepository.parseByteCount("0") == 0)
  #expect(EditRepository.parseByteCount("-1") == nil)
  #expect(EditRepository.parseByteCount("lots") == nil)
}
