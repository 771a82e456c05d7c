internal import CCrypto
internal import CZlib
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// Small loose objects (commits, trees, `meta.json`, factor blobs) read with one `open`, `read`
/// and `close`, inflated and checked against their id's SHA-1, without libgit2.
///
/// A chain walk reads a few thousand of them (each commit, its trees, each state's metadata and
/// factors): through libgit2 each costs an `access`, an `open`, an `fstat`, a `read` and a
/// `close` plus its collision-detecting SHA-1, about half of a deep checkout of a small model.
/// Anything out of the ordinary (not loose, larger than `maximumFileByteCount`, another type, a
/// damaged stream, a header or SHA-1 that does not match) returns nil, and the caller reads the
/// object through libgit2 instead, which reports the error as it always did: this path only ever
/// returns what libgit2 would, for well-formed objects whose content hashes to their id.
package enum SmallLooseObject {
  /// Files larger than this go through libgit2 (large blobs have `LooseBlob`).
  package static let maximumFileByteCount = 64 << 10

  /// Inflated objects larger than this go through libgit2 too.
  static let maximumObjectByteCount = 1 << 20

  /// The content of loose object `id` of type `type` ("commit", "tree", "blob") under
  /// `objectsDirectory`, or nil (see the type's note: the caller then asks libgit2).
  package static func read(_ id: ObjectID, type: String, objectsDirectory: String) -> [UInt8]? {
    let hex = id.hex
    let path = objectsDirectory + "/" + hex.prefix(2) + "/" + hex.dropFirst(2)
    guard let file = readFile(path), let object = inflated(file),
      let headerEnd = object.prefix(32).firstIndex(of: 0)
    else { return nil }
    let header = object[0..<headerEnd]
    guard let space = header.firstIndex(of: UInt8(ascii: " ")),
      header[..<space].elementsEqual(type.utf8),
      let declared = Int(String(decoding: header[(space + 1)...], as: UTF8.self)),
      declared == object.count - headerEnd - 1,
      sha1(object) == id.bytes
    else { return nil }
    return Array(object[(headerEnd + 1)...])
  }

  /// The whole file, when it opens and holds at most `maximumFileByteCount` bytes.
  private static func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var count = 0
    var complete = false
    let bytes = [UInt8](unsafeUninitializedCapacity: maximumFileByteCount + 1) { buffer, initialized in
      guard let base = buffer.baseAddress else { return }
      while count < buffer.count {
        let n = Glibc.read(fd, base + count, buffer.count - count)
        if n < 0 && errno == EINTR { continue }
        if n < 0 { break }
        if n == 0 {
          complete = true
          break
        }
        count += n
      }
      initialized = count
    }
    guard complete, count > 0 else { return nil }
    return bytes
  }

  /// The zlib stream `file` inflated whole (it must end exactly at the file's end).
  private static func inflated(_ file: [UInt8]) -> [UInt8]? {
    var stream = z_stream()
    guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var out = [UInt8](repeating: 0, count: max(256, 2 * file.count))
    var produced = 0
    return file.withUnsafeBufferPointer { input -> [UInt8]? in
      stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
      stream.avail_in = uInt(input.count)
      while true {
        if produced == out.count {
          guard out.count < maximumObjectByteCount else { return nil }
          out += [UInt8](repeating: 0, count: min(out.count, maximumObjectByteCount - out.count))
        }
        let code = out.withUnsafeMutableBufferPointer { output -> Int32 in
          guard let base = output.baseAddress else { return Z_STREAM_ERROR }
          stream.next_out = base + produced
          stream.avail_out = uInt(output.count - produced)
          let code = inflate(&stream, Z_NO_FLUSH)
          produced = output.count - Int(stream.avail_out)
          return code
        }
        switch code {
        case Z_STREAM_END:
          guard stream.avail_in == 0 else { return nil }
          return Array(out[0..<produced])
        case Z_OK, Z_BUF_ERROR:
          // No progress with input left and room to write: a damaged or truncated stream.
          if code == Z_BUF_ERROR && produced < out.count { return nil }
          if stream.avail_in == 0 && produced < out.count { return nil }
        default:
          return nil
        }
      }
    }
  }

  private static func sha1(_ bytes: [UInt8]) -> [UInt8]? {
    guard let context = EVP_MD_CTX_new() else { return nil }
    defer { EVP_MD_CTX_free(context) }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    guard EVP_DigestInit_ex(context, EVP_sha1(), nil) == 1, EVP_DigestUpdate(context, bytes, bytes.count) == 1,
      EVP_DigestFinal_ex(context, &digest, &length) == 1, length == 20
    else { return nil }
    return Array(digest[0..<20])
  }

  /// A tree's entries in stored order, or nil when any is not `<octal mode> <name>\0<20 bytes>`
  /// with a name libgit2 would accept here (non-empty, no `/`).
  package static func treeEntries(_ content: [UInt8]) -> [GitRepository.TreeEntry]? {
    var entries: [GitRepository.TreeEntry] = []
    var i = 0
    while i < content.count {
      guard let space = content[i...].firstIndex(of: UInt8(ascii: " ")), space > i,
        content[i..<space].allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "7") }),
        let nul = content[(space + 1)...].firstIndex(of: 0), nul > space + 1, nul + 21 <= content.count
      else { return nil }
      let name = content[(space + 1)..<nul]
      guard !name.contains(UInt8(ascii: "/")) else { return nil }
      let mode = String(decoding: content[i..<space], as: UTF8.self)
      entries.append(
        .init(
          name: String(decoding: name, as: UTF8.self), id: ObjectID(rawBytes: Array(content[(nul + 1)..<(nul + 21)])),
          isTree: mode == "40000"))
      i = nul + 21
    }
    return entries
  }

  /// A commit's tree and parents, or nil when its first lines are not `tree <hex>` then
  /// `parent <hex>` lines as git writes them.
  package static func commitLinks(_ content: [UInt8]) -> (tree: ObjectID, parents: [ObjectID])? {
    var lines = content.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).makeIterator()
    func id(after prefix: String, in line: ArraySlice<UInt8>) -> ObjectID? {
      guard line.count == prefix.utf8.count + 40, line.starts(with: prefix.utf8) else { return nil }
      return ObjectID(hex: String(decoding: line.dropFirst(prefix.utf8.count), as: UTF8.self))
    }
    guard let first = lines.next(), let tree = id(after: "tree ", in: first) else { return nil }
    var parents: [ObjectID] = []
    while let line = lines.next() {
      if let parent = id(after: "parent ", in: line) {
        parents.append(parent)
        continue
      }
      guard line.starts(with: "author ".utf8) else { return nil }
      return (tree, parents)
    }
    return nil
  }
}
