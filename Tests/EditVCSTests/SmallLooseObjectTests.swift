import EditVCS
import Foundation
import TestSupport
import Testing

/// `SmallLooseObject` (the chain walk's reads without libgit2) against libgit2 on the same
/// objects, and its refusals: whatever it does not vouch for goes back to libgit2.
@Suite struct SmallLooseObjectTests {
  static func objects(_ repository: URL) -> String { repository.appendingPathComponent("objects").path }

  @Test func blobsTreesAndCommitsReadAsLibgit2ReadsThem() throws {
    try LooseBlobTests.withRepository { git, path in
      let blobs = try [Array("{\"name\": \"t\"}".utf8), [], LooseBlobTests.randomBytes(40_000, seed: 5)].map {
        try git.writeBlob($0)
      }
      for id in blobs {
        let fast = try #require(SmallLooseObject.read(id, type: "blob", objectsDirectory: Self.objects(path)))
        #expect(fast == (try git.withBlob(id) { Array($0) }), "blob \(id.hex)")
        #expect(try git.readBlob(id) == fast)
        // Another type, or a file past the size limit, is not read here.
        #expect(SmallLooseObject.read(id, type: "tree", objectsDirectory: Self.objects(path)) == nil)
      }
      let inner = try git.writeTree([.init(name: "meta.json", id: blobs[0], isTree: false)])
      let entries: [GitRepository.TreeEntry] = [
        .init(name: "a.zst", id: blobs[1], isTree: false), .init(name: "b", id: inner, isTree: true),
        .init(name: "c d\u{e9}", id: blobs[2], isTree: false),
      ]
      let tree = try git.writeTree(entries)
      let content = try #require(SmallLooseObject.read(tree, type: "tree", objectsDirectory: Self.objects(path)))
      #expect(SmallLooseObject.treeEntries(content) == entries)
      #expect(try git.readTree(tree) == entries)

      let signature = GitRepository.Signature(name: "t", email: "t@example.com", time: 1_700_000_000)
      let first = try git.createCommit(tree: tree, parents: [], message: "one", author: signature)
      let second = try git.createCommit(tree: inner, parents: [first], message: "two", author: signature)
      let merge = try git.createCommit(tree: tree, parents: [second, first], message: "merge\n", author: signature)
      for id in [first, second, merge] {
        let links = try git.commitLinks(id)
        let info = try git.commit(id)  // libgit2
        #expect(links.tree == info.tree && links.parents == info.parents, "commit \(id.hex)")
        let raw = try #require(SmallLooseObject.read(id, type: "commit", objectsDirectory: Self.objects(path)))
        #expect(SmallLooseObject.commitLinks(raw).map { [$0.tree] + $0.parents } == [info.tree] + info.parents)
      }
    }
  }

  /// A loose file whose content does not hash to its name, a damaged stream, or a malformed tree
  /// is refused here (nil), so libgit2 reads it and reports what it always did.
  @Test func damagedOrForgedObjectsAreLeftToLibgit2() throws {
    try LooseBlobTests.withRepository { git, path in
      let id = try git.writeBlob(Array("the real content".utf8))
      let forged = LooseBlobTests.storedZlib(LooseBlobTests.loose(Array("forged content!!".utf8)), blockSize: 100)
      try LooseBlobTests.overwrite(id, in: path, with: forged)
      #expect(SmallLooseObject.read(id, type: "blob", objectsDirectory: Self.objects(path)) == nil)
      #expect((try? git.readBlob(id)) != Array("forged content!!".utf8), "libgit2 checks the SHA-1 too")

      let other = try git.writeBlob(Array("another".utf8))
      var truncated = LooseBlobTests.storedZlib(LooseBlobTests.loose(Array("another".utf8)), blockSize: 100)
      truncated.removeLast(3)
      try LooseBlobTests.overwrite(other, in: path, with: truncated)
      // (Not read through libgit2 here: libgit2 1.5 loops forever on a stream cut before its checksum.)
      #expect(SmallLooseObject.read(other, type: "blob", objectsDirectory: Self.objects(path)) == nil)

      // Tree bodies that are not `<octal mode> <name>\0<20 bytes>` entries.
      let twenty = [UInt8](repeating: 7, count: 20)
      #expect(SmallLooseObject.treeEntries(Array("100644 a\0".utf8) + twenty) != nil)
      for bad in [
        Array("100644 a\0".utf8) + twenty.dropLast(), Array("10x644 a\0".utf8) + twenty,
        Array("100644 \0".utf8) + twenty, Array("100644 a/b\0".utf8) + twenty, Array("100644a\0".utf8) + twenty,
      ] {
        #expect(SmallLooseObject.treeEntries(bad) == nil, "\(bad)")
      }
      #expect(SmallLooseObject.commitLinks(Array("parent \(id.hex)\ntree \(id.hex)\n".utf8)) == nil)
    }
  }
}
