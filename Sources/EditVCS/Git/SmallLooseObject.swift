internal import CCrypto
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
/// object through libgit2 instead, whose ``LooseObjectGuard`` reports the damage: this path only
/// ever returns what libgit2 would, for well-formed objects whose content hashes to their id.
/// Both parse the file with ``LooseObjectFile``.
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
    guard
      let object = try? LooseObjectFile.read(
        path: path, maximumFileByteCount: maximumFileByteCount,
        allocate: { byteCount in
          guard byteCount <= maximumObjectByteCount else {
            throw LooseObjectFile.Damage(reason: "is larger than a small object")
          }
          return UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 16)
        },
        release: { $0.deallocate() })
    else { return nil }
    defer { object.content.deallocate() }
    let content = UnsafeRawBufferPointer(start: object.content, count: object.byteCount)
    guard object.kind.rawValue == type, sha1(header: "\(type) \(object.byteCount)\0", content) == id.bytes else {
      return nil
    }
    return Array(content)
  }

  private static func sha1(header: String, _ content: UnsafeRawBufferPointer) -> [UInt8]? {
    guard let context = EVP_MD_CTX_new() else { return nil }
    defer { EVP_MD_CTX_free(context) }
    var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
    var length: UInt32 = 0
    let header = Array(header.utf8)
    guard EVP_DigestInit_ex(context, EVP_sha1(), nil) == 1, EVP_DigestUpdate(context, header, header.count) == 1,
      EVP_DigestUpdate(context, content.baseAddress, content.count) == 1,
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
