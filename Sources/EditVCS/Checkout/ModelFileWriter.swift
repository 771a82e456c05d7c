import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

extension EditRepository {
  /// Opens the shards of `working` that hold `tensors` for writing in place, each checked to be
  /// the file mapped (and, given `hashedAt`, unchanged since those stat records were taken
  /// before hashing), keyed by shard index.
  /// - Throws: `RepositoryError.fileReplaced` when another program replaced or rewrote one.
  func openForRewrite(
    _ working: WorkingModel, holding tensors: [String], hashedAt stats: [FileStat]?, hooked: Bool = true
  ) throws -> [Int: InPlaceFileWriter] {
    var writers: [Int: InPlaceFileWriter] = [:]
    for index in Set(tensors.compactMap { working.location(of: $0)?.shard }).sorted() {
      let path = working.shardPath(index)
      let writer = try InPlaceFileWriter(path: path, hook: hooked ? environment.ioHook : nil)
      let now = FileStat(try writer.status(), path: path)
      let unchanged = stats.map { index < $0.count && $0[index] == now } ?? true
      guard now.inode == working.shards[index].file.inode, unchanged else {
        throw RepositoryError.fileReplaced(path: path)
      }
      writers[index] = writer
    }
    return writers
  }

  /// Overwrites the named tensors' bytes in the working files with their state at `commit`,
  /// through `writers` (from `openForRewrite` for the same tensors).
  /// - Parameters:
  ///   - currentHashes: the working tensors' hashes when the caller has them.
  ///   - stats: the model files' stat records (shards, then the index) taken before hashing.
  ///   - checkingUnchanged: before each write, `fstat` must still say what it said after mvc's
  ///     previous write (at first: `stats`), or another program is writing the file too.
  ///   - prepared: bytes of target states the caller holds already (their hash is the target's):
  ///     the rebuild starts, and ends, there (the bytes are still verified).
  /// - Returns: `stats` with each shard written replaced by what `fstat` said of it after the
  ///   writes were synced: the records for the stat cache.
  /// - Throws: `RepositoryError.fileReplaced` when another program wrote to a shard meanwhile.
  @discardableResult
  func rewriteInPlace(
    _ working: WorkingModel, writers: [Int: InPlaceFileWriter], tensors: [String], at commit: ObjectID,
    currentHashes: [String: String] = [:], stats: [FileStat], checkingUnchanged: Bool = true,
    prepared: [String: CurrentBytes] = [:]
  ) throws -> [FileStat] {
    // Size and times after mvc's own last write; an editor's write (or truncation) changes them.
    // Writes within one tick of the file-time clock are not seen: this narrows the race, as
    // git's racy checks do, and the stat cache is keyed by the records taken after mvc's writes.
    var expected: [Int: FileStat] = [:]
    if checkingUnchanged {
      for (shard, writer) in writers where shard < stats.count {
        expected[shard] = stats[shard]
        writer.check = { info in
          guard FileStat(info, path: writer.path) == expected[shard] else {
            throw RepositoryError.fileReplaced(path: writer.path)
          }
        }
      }
    }
    defer { for writer in writers.values { writer.check = nil } }
    var done = 0
    let present = tensors.filter { working.location(of: $0) != nil }
    do {
      try materializeInOrder(
        present, at: commit,
        current: { name in
          try prepared[name] ?? working.currentBytes(of: name, hash: currentHashes[name])
        }
      ) { name, _, bytes, _ in
        // Not streamed: each tensor comes whole and verified (a working file is never given
        // bytes whose hash is not checked yet).
        guard let (shard, info) = working.location(of: name), let writer = writers[shard] else {
          preconditionFailure("no writer for the shard of '\(name)'")
        }
        // The working files are still read for the tensors not yet written: tell the reader
        // these writes are mvc's own.
        let file = working.shards[shard]
        try file.file.absorbingChanges { try writer.write(bytes, at: file.fileOffset(of: info)) }
        if checkingUnchanged { expected[shard] = FileStat(try writer.status(), path: writer.path) }
        done += 1
        report("writing tensors", done, present.count, bytes: bytes.count)
      }
    } catch DeltaStoreError.fileChanged(let path) {
      // The reader saw the file change between mvc's own writes: another program is writing it
      // (or renamed a file over it), which the caller must treat like a replaced file.
      throw RepositoryError.fileReplaced(path: path)
    }
    var written = stats
    for (shard, writer) in writers.sorted(by: { $0.key < $1.key }) {
      try writer.sync()
      let synced = FileStat(try writer.status(), path: writer.path)
      // fsync changes no time: a difference is another program's write during it.
      if let last = expected[shard], synced != last { throw RepositoryError.fileReplaced(path: writer.path) }
      if shard < written.count { written[shard] = synced }
    }
    return written
  }

  /// Writes the model of `commit` to `path` (a file, or a folder for sharded models), each file
  /// through a temporary file and a rename.
  /// - Parameters:
  ///   - tensors: when set, only these tensors are written, in files whose headers list just
  ///     them (metadata kept); shards left without tensors are not written.
  ///   - shards: when set (sharded models), only these shard files (0-based) are written,
  ///     byte-exact, plus the index, so each node of a multi-node job writes just its part.
  ///   - previousHashes: hashes of `previous`'s tensors when known (copies are verified anyway).
  ///   - replaced: called after each file is renamed into place.
  ///   - durable: fsync each file (and its folder) before and after its rename: the working
  ///     model, whose state the journal and HEAD vouch for. A copy elsewhere (`-o`) is not synced,
  ///     as git does not sync the files it checks out; its rename is still atomic.
  /// - Returns: what `fstat` said of each file written (shards in layout order, then the index),
  ///   through the descriptor its bytes went through, after its rename.
  @discardableResult
  func writeWholeModel(
    at commit: ObjectID, to path: String, previous: WorkingModel?, tensors: Set<String>?, shards: Set<Int>? = nil,
    previousHashes: [String: String] = [:], replaced: () -> Void = {}, durable: Bool = true
  ) throws -> [FileStat] {
    var written: [FileStat] = []
    let contents = try contents(of: commit)
    let (layout, blobs) = try layout(of: contents)
    let sharded = layout.kind == "sharded"
    if sharded {
      try RepositoryError.fileSystem("create", path) {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
      }
    }
    try checkFreeSpace(
      forWriting: try declaredByteCount(of: contents, layout: layout, tensors: tensors, shards: shards), at: path,
      what: "the model of \(commit.shortHex)")
    var done = 0
    let total = tensors?.count ?? contents.tensorTrees.count
    for (shardIndex, shard) in layout.shards.enumerated() {
      if let shards, !shards.contains(shardIndex) { continue }
      guard let headerID = blobs[shard.headerBlob] else {
        throw RepositoryError.corruptObject(what: "layout of \(commit.shortHex)", reason: "missing \(shard.headerBlob)")
      }
      let shardPath = sharded ? (path as NSString).appendingPathComponent(shard.file) : path
      var states: [String: TensorState] = [:]
      for name in shard.tensors {
        guard let tree = contents.tensorTrees[name] else {
          throw RepositoryError.corruptObject(what: "layout of \(commit.shortHex)", reason: "no state for '\(name)'")
        }
        states[name] = try storedState(tree, tensor: name).state
      }
      let storedHeader = try git.readBlob(headerID)
      let dataByteCount = states.values.map(\.byteCount).reduce(0, +)
      var parsed = try storedHeader.withUnsafeBytes {
        try SafetensorsFile.parseHeader($0, fileByteCount: storedHeader.count + dataByteCount, path: shardPath)
      }
      try checkHeader(parsed.tensors, matches: states, shard: shard.file, commit: commit)
      var header = storedHeader
      if let tensors {
        // A subset: a fresh header listing the chosen tensors in their original order.
        let chosen = parsed.tensors.filter { tensors.contains($0.name) }
        if chosen.isEmpty { continue }
        header = SafetensorsHeader.serialize(
          tensors: chosen.map { ($0.name, $0.dtype, $0.shape) }, metadata: parsed.metadata)
        let subsetBytes = chosen.map(\.byteCount).reduce(0, +)
        parsed = try header.withUnsafeBytes {
          try SafetensorsFile.parseHeader($0, fileByteCount: header.count + subsetBytes, path: shardPath)
        }
      }
      let dataStart = header.count
      let totalBytes = dataStart + (parsed.tensors.map(\.dataOffsets.upperBound).max() ?? 0)
      // Written behind (sent to the disk as it goes, a window of pages reused): a model file is
      // large and written once, and fresh page-cache pages were most of a checkout's kernel time.
      let writer = try AtomicFileWriter(
        path: shardPath, byteCount: totalBytes, hook: environment.ioHook, writeBehind: Self.writeBehindByteCount)
      do {
        try header.withUnsafeBytes { try writer.write($0, at: 0) }
        var currentStates: [String: CurrentBytes] = [:]
        var rebuild: [String] = []
        var offsets: [String: Int] = [:]
        for info in parsed.tensors {
          offsets[info.name] = dataStart + info.dataOffsets.lowerBound
          guard let previous, let (sourceShard, sourceInfo) = previous.location(of: info.name),
            sourceInfo.byteCount == info.byteCount, let expected = states[info.name]?.hash
          else {
            rebuild.append(info.name)
            continue
          }
          // Unchanged tensors are copied from the working model (the very file that was read,
          // not whatever its path names now), hashed as they are copied: the copy is kept only
          // when its bytes are the state's. Others are rebuilt (from these bytes when their hash
          // is on the state's chain).
          let source = previous.shards[sourceShard]
          var hash = previousHashes[info.name]
          if hash == nil || hash == expected {
            let copied = try copyVerified(
              from: source.file, at: source.fileOffset(of: sourceInfo), count: info.byteCount, to: writer,
              at: dataStart + info.dataOffsets.lowerBound)
            if copied == expected {
              done += 1
              report("writing tensors", done, total, bytes: info.byteCount)
              continue
            }
            hash = copied
          }
          // Read only if its rebuild starts from them (on the rebuilding thread): held for every
          // tensor at once, they were the whole model in memory (256 MiB of bench256 going back).
          currentStates[info.name] = hash.map { CurrentBytes(hash: $0) { try source.read(sourceInfo) } }
          rebuild.append(info.name)
        }
        // Complete states stream a chunk at a time: the file is renamed into place only once
        // every tensor was verified.
        try materializeInOrder(rebuild, at: commit, current: { currentStates[$0] }, streaming: true) {
          name, offset, bytes, complete in
          try writer.write(bytes, at: (offsets[name] ?? 0) + offset)
          if complete {
            done += 1
            report("writing tensors", done, total, bytes: offset + bytes.count)
          }
        }
        try writer.commit(durable: durable)
        replaced()
        if let status = writer.committedStatus { written.append(FileStat(status, path: shardPath)) }
      } catch {
        if writer.isRenamed { replaced() }
        writer.abandon()
        throw error
      }
    }
    if sharded, tensors == nil, let indexFile = layout.indexFile, let indexID = blobs[TreeEntryName.index] {
      let bytes = try git.readBlob(indexID)
      let indexPath = (path as NSString).appendingPathComponent(indexFile)
      let status = try bytes.withUnsafeBytes {
        try AtomicFileWriter.replace(
          indexPath, with: $0, hook: environment.ioHook, durable: durable, renamed: replaced)
      }
      if let status { written.append(FileStat(status, path: indexPath)) }
      // Shards of the old layout that the new one does not name would confuse loaders.
      if shards == nil, let previous, previous.isSharded, previous.path == path {
        let keep = Set(layout.shards.map(\.file))
        for file in previous.shardFiles where !keep.contains(file) {
          try? FileManager.default.removeItem(atPath: (path as NSString).appendingPathComponent(file))
        }
      }
    }
    return written
  }

  /// The bytes of a model file written and not yet waited for (`AtomicFileWriter`'s write-behind).
  static let writeBehindByteCount = 128 << 20

  /// Copies `count` bytes at `sourceOffset` of `source` to `offset` of `writer` a slice at a
  /// time through a private buffer (`pread`), hashing each slice as it goes out: what is hashed
  /// is exactly what is written, and a source that changes meanwhile is reported.
  /// - Returns: the hash of the bytes written.
  func copyVerified(
    from source: ReadOnlyFile, at sourceOffset: Int, count: Int, to writer: AtomicFileWriter, at offset: Int
  ) throws -> String {
    let hasher = try ContentHasher()
    // 1 MiB stays in cache between the read, the hash and the write.
    var buffer = [UInt8](repeating: 0, count: min(count, 1 << 20))
    var start = 0
    while start < count {
      let end = min(count, start + buffer.count)
      try buffer.withUnsafeMutableBytes { slice in
        let piece = UnsafeMutableRawBufferPointer(rebasing: slice[0..<(end - start)])
        try source.read(into: piece, at: sourceOffset + start)
        try hasher.update(UnsafeRawBufferPointer(piece))
        try writer.write(UnsafeRawBufferPointer(piece), at: offset + start)
      }
      start = end
    }
    return hasher.finalize().description
  }
}
