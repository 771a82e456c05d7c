import DeltaStore
import EditVCS
import Foundation
import Synchronization
import TestSupport
import Testing

/// `LooseBlob` against libgit2's `readBlob`, on objects written by mvc, libgit2 and git itself.
@Suite struct LooseBlobTests {
  // MARK: Fixtures

  static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var random = SplitMix64(seed: seed)
    var out: [UInt8] = []
    out.reserveCapacity(count + 8)
    while out.count < count { withUnsafeBytes(of: random.next()) { out += $0 } }
    out.removeLast(out.count - count)
    return out
  }

  /// Bytes that deflate does compress: a short random alphabet, so git writes Huffman blocks.
  static func compressibleBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    randomBytes(count, seed: seed).map { UInt8(ascii: "a") + $0 % 4 }
  }

  static func withRepository<T>(_ body: (GitRepository, URL) throws -> T) throws -> T {
    try withTemporaryDirectory { dir in
      let path = dir.appendingPathComponent(".mvc")
      return try body(try GitRepository.create(at: path.path, initialBranch: "main"), path)
    }
  }

  static func objectPath(_ id: ObjectID, in repository: URL) -> URL {
    repository.appendingPathComponent("objects/\(id.hex.prefix(2))/\(id.hex.dropFirst(2))")
  }

  /// Replaces the loose file of `id` (written read-only by git) with `bytes`.
  static func overwrite(_ id: ObjectID, in repository: URL, with bytes: [UInt8]) throws {
    let url = objectPath(id, in: repository)
    try FileManager.default.removeItem(at: url)
    try Data(bytes).write(to: url)
  }

  static func loose(_ content: [UInt8], type: String = "blob") -> [UInt8] {
    Array("\(type) \(content.count)\0".utf8) + content
  }

  @discardableResult
  static func git(_ arguments: [String], input: [UInt8] = []) throws -> String {
    let git = try #require(gitExecutable, "no git on PATH")
    let result = runProcessOutcome(git, arguments, in: FileManager.default.temporaryDirectory, input: Data(input))
    guard result.status == 0 else {
      throw FixtureError("git \(arguments.joined(separator: " ")): \(result.summary)")
    }
    return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
  }

  static func contents(_ blob: LooseBlob) throws -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(blob.contentByteCount)
    try blob.forEachPiece { out += $0 }
    return out
  }

  /// `id`'s content through `forEachBlobPiece`, loose or not.
  static func pieces(_ id: ObjectID, in repository: GitRepository) throws -> [UInt8] {
    var out: [UInt8] = []
    try repository.forEachBlobPiece(id) { out += $0 }
    return out
  }

  /// Reads `id` through the loose reader and checks it against libgit2 and the expected bytes.
  static func expectReadsBack(
    _ id: ObjectID, _ expected: [UInt8], in repository: GitRepository, inPlace: Bool,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let blob = try #require(try repository.looseBlob(id), sourceLocation: sourceLocation)
    #expect(blob.readsInPlace == inPlace, sourceLocation: sourceLocation)
    #expect(blob.contentByteCount == expected.count, sourceLocation: sourceLocation)
    let read = try contents(blob)
    #expect(read == expected, sourceLocation: sourceLocation)
    #expect(read == (try repository.readBlob(id)), sourceLocation: sourceLocation)
  }

  /// Opening and reading `id` throws `RepositoryError.git` naming the object, its file and `reason`.
  static func expectCorrupt(
    _ id: ObjectID, in repository: GitRepository, _ reason: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    do {
      try repository.looseBlob(id)?.forEachPiece { _ in }
      Issue.record("no error for '\(reason)'", sourceLocation: sourceLocation)
    } catch RepositoryError.git(let error, _) {
      #expect(error.message.contains("object \(id.hex) ('"), sourceLocation: sourceLocation)
      #expect(error.message.contains("/objects/\(id.hex.prefix(2))/"), sourceLocation: sourceLocation)
      #expect(error.message.contains(reason), "\(error.message)", sourceLocation: sourceLocation)
    } catch {
      Issue.record("not a RepositoryError.git: \(error)", sourceLocation: sourceLocation)
    }
  }

  // MARK: (a) Stored blocks written by mvc

  @Test(arguments: [64 << 10, (64 << 10) + 1, (1 << 20) + 3, 20 << 20])
  func readsStoredBlobsInPlace(byteCount: Int) throws {
    try Self.withRepository { repository, _ in
      let bytes = Self.randomBytes(byteCount, seed: UInt64(byteCount))
      let id = try repository.writeBlob(bytes)
      try Self.expectReadsBack(id, bytes, in: repository, inPlace: true)
      #expect(try Self.pieces(id, in: repository) == bytes)
    }
  }

  @Test func anObjectHeaderStraddlingStoredBlocksIsSkipped() throws {
    try Self.withRepository { repository, path in
      let bytes = Self.randomBytes(70_000, seed: 3)
      let id = try repository.writeBlob(bytes)
      for blockSize in [1, 3, 7, 12, 13, 4096] {  // "blob 70000\0" is 11 bytes
        try Self.overwrite(id, in: path, with: storedZlib(Self.loose(bytes), blockSize: blockSize))
        try Self.expectReadsBack(id, bytes, in: repository, inPlace: true)
      }
    }
  }

  @Test func emptyBlobsAndEmptyStoredBlocksRead() throws {
    try Self.withRepository { repository, path in
      let empty = try repository.writeBlob([UInt8]())
      try Self.overwrite(empty, in: path, with: storedZlib(Self.loose([]), blockSize: 100))
      try Self.expectReadsBack(empty, [], in: repository, inPlace: true)
      // An empty non-final stored block, as a sync flush writes one.
      let bytes = Self.randomBytes(100, seed: 4)
      let id = try repository.writeBlob(bytes)
      var file = storedZlib(Self.loose(bytes), blockSize: 1000)
      file.insert(contentsOf: [0, 0, 0, 0xFF, 0xFF], at: 2)
      try Self.overwrite(id, in: path, with: file)
      try Self.expectReadsBack(id, bytes, in: repository, inPlace: true)
    }
  }

  // MARK: (b) Compressed objects written by libgit2 and git

  @Test(arguments: [1, 1000, (64 << 10) - 1])
  func inflatesBlobsLibgit2Compressed(byteCount: Int) throws {
    // Below `storedBlobThreshold`, writeBlob goes through libgit2's loose backend at level 1.
    try Self.withRepository { repository, _ in
      let bytes = Self.compressibleBytes(byteCount, seed: 5)
      let id = try repository.writeBlob(bytes)
      try Self.expectReadsBack(id, bytes, in: repository, inPlace: false)
    }
  }

  @Test func inflatesBlobsGitCompressed() throws {
    try Self.withRepository { repository, path in
      let compressible = Self.compressibleBytes(3 << 20, seed: 6)
      // Random bytes then zeros: zlib stores the first blocks and compresses the rest, so the
      // reader meets a compressed block after stored ones and must start over with inflate.
      let mixed = Self.randomBytes(1 << 20, seed: 7) + [UInt8](repeating: 0, count: 1 << 20)
      for bytes in [compressible, mixed, []] {
        let hex = try Self.git(["--git-dir=\(path.path)", "hash-object", "-w", "--stdin"], input: bytes)
        let id = try #require(ObjectID(hex: hex))
        try Self.expectReadsBack(id, bytes, in: repository, inPlace: false)
        let file = try Data(contentsOf: Self.objectPath(id, in: path))
        if bytes == mixed { #expect(file[2] >> 1 & 3 == 0, "the mixed object should begin with a stored block") }
      }
    }
  }

  @Test func aCompressedBlockAfterStoredOnesIsInflatedFromTheStart() throws {
    try Self.withRepository { repository, path in
      let bytes = Self.randomBytes(100_000, seed: 21)
      let id = try repository.writeBlob(bytes)
      let file = storedZlib(Self.loose(bytes), blockSize: 30_000, compressedEnd: true)
      try Self.overwrite(id, in: path, with: file)
      try Self.expectReadsBack(id, bytes, in: repository, inPlace: false)
    }
  }

  // MARK: (c) Packed objects

  @Test func packedObjectsAreNotLooseButStillRead() throws {
    try Self.withRepository { repository, path in
      let large = Self.randomBytes(200_000, seed: 8)
      let small = Self.compressibleBytes(500, seed: 9)
      let ids = [try repository.writeBlob(large), try repository.writeBlob(small)]
      let list = Array(ids.map { $0.hex + "\n" }.joined().utf8)
      try Self.git(["--git-dir=\(path.path)", "pack-objects", "-q", path.path + "/objects/pack/pack"], input: list)
      try Self.git(["--git-dir=\(path.path)", "prune-packed"])
      let reopened = try GitRepository.open(at: path.path)
      for (id, bytes) in zip(ids, [large, small]) {
        #expect(!FileManager.default.fileExists(atPath: Self.objectPath(id, in: path).path))
        #expect(try reopened.looseBlob(id) == nil)
        #expect(try Self.pieces(id, in: reopened) == bytes)
      }
    }
  }

  // MARK: (d) Damaged files

  @Test func truncatedFilesThrow() throws {
    try Self.withRepository { repository, path in
      let storedBytes = Self.randomBytes(150_000, seed: 10)
      let stored = try repository.writeBlob(storedBytes)
      let compressedBytes = Self.compressibleBytes(30_000, seed: 11)
      let compressed = try repository.writeBlob(compressedBytes)
      for id in [stored, compressed] {
        let file = Array(try Data(contentsOf: Self.objectPath(id, in: path)))
        for cut in [0, 1, 2, 3, 5, 6, 9, 20, file.count / 2, file.count - 5, file.count - 4, file.count - 1] {
          try Self.overwrite(id, in: path, with: Array(file[..<cut]))
          Self.expectCorrupt(id, in: repository, "truncated zlib stream")
        }
      }
    }
  }

  @Test func truncatedStoredFilesSayWhere() throws {
    try Self.withRepository { repository, path in
      let bytes = Self.randomBytes(150_000, seed: 12)
      let id = try repository.writeBlob(bytes)
      let file = storedZlib(Self.loose(bytes), blockSize: 65535)
      for (cut, reason) in [
        (1, "truncated zlib stream: 1 bytes"),
        (2, "truncated zlib stream: no final block"),
        (5, "stored block header at byte 2 is cut off"),
        (100, "stored block at byte 2 needs 65535 bytes"),
        (file.count - 4, "adler32 is cut off"),
        (file.count - 1, "adler32 is cut off"),
      ] {
        try Self.overwrite(id, in: path, with: Array(file[..<cut]))
        Self.expectCorrupt(id, in: repository, reason)
      }
      // Two blocks of 65535 and one more: cutting right after the second leaves no final block.
      try Self.overwrite(id, in: path, with: Array(file[..<(2 + 2 * (5 + 65535))]))
      Self.expectCorrupt(id, in: repository, "no final block")
    }
  }

  @Test func malformedStreamsAndHeadersThrow() throws {
    try Self.withRepository { repository, path in
      let bytes = Self.randomBytes(1000, seed: 13)
      let id = try repository.writeBlob(bytes)
      // A real tree, as libgit2 wrote it (compressed), checked at the end.
      let tree = try repository.writeTree([.init(name: "a", id: id, isTree: false)])
      var file = storedZlib(Self.loose(bytes), blockSize: 400)
      file[2 + 3] ^= 1
      let cases: [([UInt8], String)] = [
        (file, "LEN 400 does not match NLEN"),
        (storedZlib(Array("blob 999\0".utf8) + bytes, blockSize: 400), "declares 999 bytes, stream holds 1000"),
        (storedZlib(Array("blob 1001\0".utf8) + bytes, blockSize: 400), "declares 1001 bytes, stream holds 1000"),
        (storedZlib(Self.loose(bytes, type: "tree"), blockSize: 400), "is a tree, not a blob"),
        (storedZlib(Self.loose(bytes, type: "blub"), blockSize: 400), "malformed object header 'blub 1000'"),
        (storedZlib(Array("blob 01000\0".utf8) + bytes, blockSize: 400), "malformed object header"),
        (storedZlib(Array("blob\0".utf8) + bytes, blockSize: 400), "malformed object header 'blob'"),
        (storedZlib(Array("blob 1000 \0".utf8) + bytes, blockSize: 400), "malformed object header"),
        (storedZlib(Array("blob 99999999999999999999\0".utf8) + bytes, blockSize: 400), "malformed object header"),
        (storedZlib(Array(repeating: UInt8(ascii: "b"), count: 40), blockSize: 400), "has no NUL in its first 32"),
        (storedZlib(Array("blob 10".utf8), blockSize: 400), "stream ends inside the object header"),
        (storedZlib(Self.loose(bytes), blockSize: 400) + [0], "1 bytes of garbage after the zlib stream"),
        ([0x78, 0x02] + Array(file.dropFirst(2)), "not a zlib stream"),
        ([0x78, 0x01, 0x06, 0, 0, 0, 0], "corrupt zlib stream"),  // BTYPE 11 is reserved
      ]
      for (file, reason) in cases {
        try Self.overwrite(id, in: path, with: file)
        Self.expectCorrupt(id, in: repository, reason)
      }
      Self.expectCorrupt(tree, in: repository, "is a tree, not a blob")
    }
  }

  @Test func compressedStreamsOfTheWrongLengthThrow() throws {
    try Self.withRepository { repository, path in
      let bytes = Self.randomBytes(5000, seed: 14)
      let id = try repository.writeBlob(bytes)
      for (declared, reason) in [(4000, "stream holds more"), (6000, "stream holds 5000")] {
        let lie = Array("blob \(declared)\0".utf8) + bytes
        try Self.overwrite(id, in: path, with: storedZlib(lie, blockSize: 3, compressedEnd: true))
        Self.expectCorrupt(id, in: repository, "header declares \(declared) bytes, \(reason)")
      }
    }
  }

  /// Random damage to stored and compressed files: every read throws or returns, none traps.
  @Test func mutatedFilesNeverCrash() throws {
    try Self.withRepository { repository, path in
      let ids = [
        try repository.writeBlob(Self.randomBytes(70_000, seed: 15)),
        try repository.writeBlob(Self.compressibleBytes(20_000, seed: 16)),
      ]
      var random = SplitMix64(seed: 17)
      for id in ids {
        let original = Array(try Data(contentsOf: Self.objectPath(id, in: path)))
        for _ in 0..<150 {
          var file = original
          for _ in 0..<(1 + Int(random.next() % 3)) {
            let position = Int(random.next() % UInt64(min(file.count, 64)))  // where the framing is
            let anywhere = Int(random.next() % UInt64(file.count))
            file[random.next() % 2 == 0 ? position : anywhere] = UInt8(truncatingIfNeeded: random.next())
          }
          try Self.overwrite(id, in: path, with: file)
          guard let blob = try? repository.looseBlob(id) else { continue }
          var total = 0
          do {
            try blob.forEachPiece { total += $0.count }
            #expect(total == blob.contentByteCount)
          } catch {}
        }
      }
    }
  }

  // MARK: (e) Threads

  @Test func concurrentReadsAreCorrect() throws {
    try Self.withRepository { repository, path in
      let contents = [
        Self.randomBytes(3 << 20, seed: 18), Self.randomBytes(1 << 20, seed: 19),
        Self.compressibleBytes(2 << 20, seed: 20),
      ]
      let gitWritten = try Self.git(["--git-dir=\(path.path)", "hash-object", "-w", "--stdin"], input: contents[2])
      let ids = try contents.dropLast().map { try repository.writeBlob($0) } + [try #require(ObjectID(hex: gitWritten))]
      let expected = contents.map { bytes in bytes.withUnsafeBytes { ContentHash.of($0) } }
      let shared = try #require(try repository.looseBlob(ids[0]))
      let mismatches = Mutex<[String]>([])
      let repositoryPath = repository.path
      DispatchQueue.concurrentPerform(iterations: 24) { i in
        do {
          let which = i % 4 == 3 ? 0 : i % 3
          // One instance read on several threads at once, and fresh instances per thread.
          let blob = i % 4 == 3 ? shared : try LooseBlob(ids[which], repositoryPath: repositoryPath)
          let hasher = try ContentHasher()
          try blob?.forEachPiece { try hasher.update($0) }
          if hasher.finalize() != expected[which] {
            mismatches.withLock { $0.append("read \(i) of blob \(which) differs") }
          }
        } catch {
          mismatches.withLock { $0.append("read \(i): \(error)") }
        }
      }
      #expect(mismatches.withLock { $0 } == [])
    }
  }
}
