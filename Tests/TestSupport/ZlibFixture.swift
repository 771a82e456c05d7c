/// Loose git objects written by hand, for tests that damage them byte by byte.

/// A zlib stream of `payload` cut into stored blocks of at most `blockSize` bytes (RFC 1950/1951),
/// optionally ended by an empty fixed-Huffman block (`03 00`: BFINAL, BTYPE 01, end-of-block),
/// so a compressed block follows stored ones.
public func storedZlib(_ payload: [UInt8], blockSize: Int, compressedEnd: Bool = false) -> [UInt8] {
  var out: [UInt8] = [0x78, 0x01]
  var offset = 0
  repeat {
    let length = min(blockSize, payload.count - offset)
    let final: UInt8 = offset + length == payload.count && !compressedEnd ? 1 : 0
    let n = UInt16(length)
    out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8(~n >> 8)]
    out += payload[offset..<offset + length]
    offset += length
  } while offset < payload.count
  if compressedEnd { out += [0x03, 0x00] }
  var a: UInt32 = 1
  var b: UInt32 = 0
  for byte in payload {
    a = (a + UInt32(byte)) % 65521
    b = (b + a) % 65521
  }
  let adler = b << 16 | a
  return out + [UInt8(adler >> 24), UInt8(adler >> 16 & 0xFF), UInt8(adler >> 8 & 0xFF), UInt8(adler & 0xFF)]
}
