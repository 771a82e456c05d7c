import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The intent of a working-model move, written before its first byte: a crash mid-way is
/// completed by the next mvc command (everything it needs is already in the object database).
///
/// The file also holds, as trailing whitespace, the disk space that finishing the move needs in
/// `.mvc` (ref lock files, reflog lines, the stat cache); it is given back just before those
/// writes, so a full disk stops a move before the model is touched, not after.
struct Journal: Codable {
  var operation: String
  /// The commit whose state the working model is being given.
  var target: ObjectID
  /// Where HEAD goes: a branch name, or nil for detached at `target`.
  var branch: String?
  /// 2 for journals that record where the move starts; absent in the first format.
  var format: Int?
  /// The commit HEAD resolved to when the move started (nil: an unborn branch).
  var headFrom: ObjectID?
  /// `branch`'s tip when the move started (nil: the move creates the branch).
  var branchFrom: ObjectID?

  static let currentFormat = 2

  /// Whether the journal says where the move started (format 2, or a start field present).
  var recordsStart: Bool { (format ?? 1) >= 2 || headFrom != nil || branchFrom != nil }

  enum CodingKeys: String, CodingKey {
    case operation, target, branch, format
    case headFrom = "head_from"
    case branchFrom = "branch_from"
  }
}

public struct CheckoutSummary: Sendable {
  public var target: ObjectID
  /// Tensors whose bytes were rewritten.
  public var rewrittenTensors: [String]
  /// True when whole files were written (layout change or missing model), false for in-place.
  public var wroteWholeFiles: Bool
}

extension EditRepository {
  var bisectStartPath: String { (gitDirectory as NSString).appendingPathComponent("BISECT_START") }

  public var isBisecting: Bool { FileManager.default.fileExists(atPath: bisectStartPath) }

  func refuseDuringBisect() throws {
    if isBisecting { throw RepositoryError.bisectInProgress }
  }

  /// `mvc checkout REV`: the working model becomes REV's state; HEAD attaches to `branch` if
  /// given (creating it at REV when it does not exist), otherwise detaches at REV. Refuses to
  /// discard uncommitted changes unless `force`, which also rehashes the working model instead
  /// of trusting the stat cache.
  @discardableResult
  public func checkout(_ target: ObjectID, branch: String?, force: Bool) throws -> CheckoutSummary {
    let headState = try head()
    let attach: HeadState = branch.map { .branch(name: $0, commit: target) } ?? .detached(target)
    return try moveWorkingModel(
      to: target, attach: attach, force: force, expectedHead: nil,
      reflog: "checkout: moving to \(branch ?? target.hex)", current: headState, rehash: force)
  }

  /// Rewrites the working model to `target` and points HEAD as `attach` says, as one journaled
  /// step: a failure before the model is touched leaves the old state; one after it leaves the
  /// journal, which the next command completes (the error says so).
  /// - Parameters:
  ///   - expectedHead: for a commit that normalizes the working model: the branch must still be
  ///     at this commit; it moves from there to `target` (compare-and-swap).
  ///   - rehash: hash the working model even when the stat cache vouches for it.
  @discardableResult
  func moveWorkingModel(
    to target: ObjectID, attach: HeadState, force: Bool, expectedHead: ObjectID?, reflog: String,
    current: HeadState? = nil, rehash: Bool = false
  ) throws -> CheckoutSummary {
    let headState = try current ?? head()
    let targetContents = try contents(of: target)
    let targetHashes = try timed("target hashes") { try tensorHashes(at: target) }

    var working: WorkingModel?
    do {
      working = try WorkingModel(path: modelPath)
    } catch {
      // A missing or unreadable working model can be rewritten, but only on request.
      if !force { throw error }
    }
    var currentHashes: [String: String] = [:]
    var hashedStats: [FileStat] = []
    if let working {
      (currentHashes, hashedStats) = try timed("working hashes") {
        try hashedWorkingModel(working, trustCache: !rehash)
      }
      if !force, let headCommit = headState.commit {
        let status = try status(of: working, against: headCommit, head: headState, hashes: currentHashes)
        if !status.isClean {
          throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name))
        }
      }
    }
    // The branch moves from where it is now (compare-and-swap when HEAD moves).
    var branchTip: ObjectID?
    if let name = attach.branchName {
      let ref = "refs/heads/" + name
      branchTip = try RepositoryError.wrap("reading '\(ref)'") { try git.referenceTarget(ref) }
    }
    if let expectedHead, let name = attach.branchName, branchTip != expectedHead {
      throw RepositoryError.concurrentUpdate(ref: "refs/heads/" + name)
    }
    let inPlace = try working.map { try sameLayout($0, as: target) } ?? false
    let toRewrite =
      inPlace
      ? (working?.tensorNames ?? []).filter { currentHashes[$0] != targetHashes[$0] }
      : Array(targetContents.tensorTrees.keys).sorted()
    // Files rewritten in place are opened now, while nothing is changed, and must be the very
    // files hashed: an editor may have renamed another file over the model meanwhile.
    var writers: [Int: InPlaceFileWriter] = [:]
    if inPlace, let working {
      writers = try openForRewrite(working, holding: toRewrite, hashedAt: hashedStats)
    }

    // Everything is checked: record the intent (with the space finishing it needs), then write.
    let journal = Journal(
      operation: "checkout", target: target, branch: attach.branchName, format: Journal.currentFormat,
      headFrom: headState.commit, branchFrom: branchTip)
    try writeJournal(journal, reserving: finishingByteCount(hashes: targetHashes))
    // The old cache describes files about to change; a stale one must never outlive a crash.
    invalidateStatCache()
    var written: [FileStat] = []
    var replacedFiles = 0
    do {
      if inPlace, let working {
        try timed("rewrite \(toRewrite.count) tensors in place") {
          written = try rewriteInPlace(
            working, writers: writers, tensors: toRewrite, at: target, currentHashes: currentHashes,
            stats: hashedStats)
        }
      } else {
        try timed("write whole model") {
          written = try writeWholeModel(
            at: target, to: modelPath, previous: working, tensors: nil, previousHashes: currentHashes,
            replaced: { replacedFiles += 1 })
        }
      }
    } catch {
      // Put back what was written (the old state is committed), through the same descriptors,
      // so a failed command leaves the working model as it was; if even that fails, the journal
      // makes the next command finish the move instead.
      let headTensors = headState.commit.flatMap { try? tensorHashes(at: $0) } ?? [:]
      if case RepositoryError.fileReplaced = error {
        // Another program is writing the file: putting old bytes back would overwrite its work,
        // and finishing the move later would too. Leave both (status shows the file as it is).
        try? FileManager.default.removeItem(atPath: journalPath)
      } else if inPlace, let headCommit = headState.commit, let working,
        let unhooked = try? openForRewrite(working, holding: toRewrite, hashedAt: nil, hooked: false),
        (try? rewriteInPlace(
          working, writers: unhooked, tensors: toRewrite.filter { headTensors[$0] != nil }, at: headCommit,
          stats: hashedStats, checkingUnchanged: false)) != nil
      {
        try? FileManager.default.removeItem(atPath: journalPath)
      } else if !inPlace && replacedFiles == 0 {
        // Whole files go through temporary files: none of the model's was replaced yet.
        try? FileManager.default.removeItem(atPath: journalPath)
      } else {
        throw RepositoryError.moveIncomplete(
          journal: journalPath, target: target.shortHex,
          detail: "rewriting the working model failed and its old state could not be put back: "
            + Self.describe(error))
      }
      throw error
    }
    try timed("finish move") {
      try finishMove(journal, branchTip: branchTip, written: written, hashes: targetHashes, reflog: reflog)
    }
    return CheckoutSummary(target: target, rewrittenTensors: toRewrite, wroteWholeFiles: !inPlace)
  }

  /// What finishing a move writes in `.mvc`, generously: libgit2's lock files and reflog lines for
  /// the branch and HEAD (a block or two each, and a new directory block or two), and the stat
  /// cache of `hashes`.
  func finishingByteCount(hashes: [String: String]) -> Int {
    let cache = hashes.reduce(4096) { $0 + $1.key.utf8.count + $1.value.utf8.count + 16 }
    return (64 << 10) + 2 * cache
  }

  /// Writes the journal, followed by `reserving` bytes of whitespace that hold the space
  /// finishing the move needs (JSON allows trailing whitespace, so the file decodes the same).
  func writeJournal(_ journal: Journal, reserving reserve: Int = 0) throws {
    let json = try JSONCoding.encode(journal)
    var bytes = [UInt8](repeating: UInt8(ascii: " "), count: json.count + reserve)
    bytes.replaceSubrange(0..<json.count, with: json)
    let writer = try AtomicFileWriter(path: journalPath, byteCount: bytes.count, hook: environment.ioHook)
    do {
      try bytes.withUnsafeBytes { try writer.write($0, at: 0) }
      try writer.commit()
    } catch {
      writer.abandon()
      throw error
    }
  }

  /// Gives the journal's reserve back to the file system (truncating its trailing whitespace,
  /// which keeps the JSON the same even if torn), just before the writes it was kept for.
  func releaseJournalReserve() {
    guard let data = FileManager.default.contents(atPath: journalPath) else { return }
    var end = data.count
    while end > 0, data[data.startIndex + end - 1] == UInt8(ascii: " ") { end -= 1 }
    if end < data.count { _ = truncate(journalPath, off_t(end)) }
  }

  /// Points HEAD, records the stat cache and removes the journal: the last steps of a move.
  /// - Parameters:
  ///   - branchTip: where the journal's branch is now (checked against the journal); it moves
  ///     from there to the target, or is created when nil.
  ///   - written: what `fstat` said of the model files as mvc wrote them (see `recordStatCache`).
  ///   - hashes: the target's tensor hashes, verified as the files were written.
  /// - Throws: `RepositoryError.moveIncomplete` (the journal stays, for the next command).
  func finishMove(
    _ journal: Journal, branchTip: ObjectID?, written: [FileStat], hashes: [String: String], reflog: String
  ) throws {
    releaseJournalReserve()
    // libgit2 writes the refs; the hook still sees each write (fault injection, kill points).
    let headPath = (gitDirectory as NSString).appendingPathComponent("HEAD")
    do {
      if let branch = journal.branch {
        let ref = "refs/heads/" + branch
        if branchTip != journal.target {
          try environment.ioHook?(.willWrite(path: (gitDirectory as NSString).appendingPathComponent(ref)))
          do {
            try git.updateReference(ref, to: journal.target, expected: branchTip, message: reflog)
          } catch let error as GitError where error.isModified || error.code == -4 {
            throw RepositoryError.concurrentUpdate(ref: ref)
          }
        }
        if try head().branchName != branch {
          try environment.ioHook?(.willWrite(path: headPath))
          try git.setHead(branch: branch)
        }
      } else {
        try environment.ioHook?(.willWrite(path: headPath))
        try git.setHead(detachedAt: journal.target)
      }
    } catch {
      throw RepositoryError.moveIncomplete(
        journal: journalPath, target: journal.target.shortHex,
        detail: "the working model holds it, but HEAD could not be moved: " + Self.describe(error))
    }
    recordStatCache(written: written, hashes: hashes)
    try? FileManager.default.removeItem(atPath: journalPath)
  }

  /// Checks that the journal's move can be finished without losing anything and returns where
  /// its branch is now: the target must be a commit here, HEAD must be where the move started
  /// or went, and the branch where it started or went. A journal of the first format (no
  /// recorded start) may only move its branch forward (to a descendant), never orphan commits.
  /// - Throws: `RepositoryError.journalUnusable` naming the journal and why.
  func checkJournal(_ journal: Journal) throws -> ObjectID? {
    func unusable(_ reason: String) -> RepositoryError { .journalUnusable(path: journalPath, reason: reason) }
    guard (try? git.commit(journal.target)) != nil else {
      throw unusable("it names commit \(journal.target.hex), which is not in the repository")
    }
    let headState = try head()
    if journal.recordsStart, let now = headState.commit, now != journal.target, now != journal.headFrom {
      let from = journal.headFrom?.shortHex ?? "an unborn branch"
      throw unusable("HEAD is at \(now.shortHex), but the move went from \(from) to \(journal.target.shortHex)")
    }
    guard let branch = journal.branch else { return nil }
    guard GitRepository.isValidBranchName(branch) else { throw unusable("'\(branch)' is not a valid branch name") }
    let ref = "refs/heads/" + branch
    let tip = try RepositoryError.wrap("reading '\(ref)'") { try git.referenceTarget(ref) }
    guard let tip, tip != journal.target else { return tip }
    if journal.recordsStart {
      guard tip == journal.branchFrom else {
        let from = journal.branchFrom?.shortHex ?? "nothing (a new branch)"
        throw unusable(
          "'\(ref)' is at \(tip.shortHex), not at \(from) where the move to \(journal.target.shortHex) started; "
            + "finishing it could lose commits")
      }
      return tip
    }
    guard try RepositoryError.wrap("comparing histories", { try git.isAncestor(tip, of: journal.target) }) else {
      throw unusable(
        "it would move '\(ref)' from \(tip.shortHex) back to \(journal.target.shortHex), leaving commits unreachable")
    }
    return tip
  }

  /// Completes a working-model move that an interrupted mvc left half done.
  func recoverFromJournal() throws {
    guard let data = FileManager.default.contents(atPath: journalPath) else { return }
    guard let journal = try? JSONDecoder().decode(Journal.self, from: data) else {
      // A torn journal means the rewrite never started (the journal is renamed into place).
      try? FileManager.default.removeItem(atPath: journalPath)
      return
    }
    let branchTip = try checkJournal(journal)
    invalidateStatCache()
    let targetHashes = try tensorHashes(at: journal.target)
    let working = try? WorkingModel(path: modelPath)
    var written: [FileStat]
    if let working, try sameLayout(working, as: journal.target) {
      let stats = working.fileStats()
      let current = try working.hashAll()
      let changed = working.tensorNames.filter { current[$0] != targetHashes[$0] }
      written = try rewriteInPlace(
        working, writers: openForRewrite(working, holding: changed, hashedAt: stats), tensors: changed,
        at: journal.target, stats: stats)
    } else {
      written = try writeWholeModel(at: journal.target, to: modelPath, previous: working, tensors: nil)
    }
    try finishMove(
      journal, branchTip: branchTip, written: written, hashes: targetHashes,
      reflog: "recover: finish interrupted \(journal.operation)")
  }

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
  /// - Returns: `stats` with each shard written replaced by what `fstat` said of it after the
  ///   writes were synced: the records for the stat cache.
  /// - Throws: `RepositoryError.fileReplaced` when another program wrote to a shard meanwhile.
  @discardableResult
  func rewriteInPlace(
    _ working: WorkingModel, writers: [Int: InPlaceFileWriter], tensors: [String], at commit: ObjectID,
    currentHashes: [String: String] = [:], stats: [FileStat], checkingUnchanged: Bool = true
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
      try materializeInOrder(present, at: commit, current: { name in
        try working.currentBytes(of: name, hash: currentHashes[name])
      }) { name, fresh in
        guard let (shard, info) = working.location(of: name), let writer = writers[shard] else {
          preconditionFailure("no writer for the shard of '\(name)'")
        }
        // The working files are still read for the tensors not yet written: tell the reader
        // these writes are mvc's own.
        let file = working.shards[shard]
        try fresh.withUnsafeBytes { bytes in
          try file.file.absorbingChanges { try writer.write(bytes, at: file.fileOffset(of: info)) }
        }
        if checkingUnchanged { expected[shard] = FileStat(try writer.status(), path: writer.path) }
        done += 1
        report("writing tensors", done, present.count, bytes: fresh.count)
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

  /// Worker threads that rebuild tensors: both cores of a small machine, no more (each worker
  /// holds a tensor in memory).
  var materializationWidth: Int { max(1, min(2, ProcessInfo.processInfo.activeProcessorCount)) }

  /// Rebuilds `tensors` at `commit` on up to `materializationWidth` worker threads and hands each
  /// result to `write` on this thread in the given order, so writes, the journal and
  /// fault-injection hooks see the same sequence whatever the timing. Workers go on rebuilding
  /// while this thread writes, as long as what is held (tensors rebuilding or waiting to be
  /// written, and packed objects read for them) stays within twice the largest tensor.
  func materializeInOrder(
    _ tensors: [String], at commit: ObjectID,
    current: (String) throws -> CurrentBytes?,
    write: (String, [UInt8]) throws -> Void
  ) throws {
    final class Pending: @unchecked Sendable {
      let name: String
      let byteCount: Int
      let done = DispatchSemaphore(value: 0)
      var result: Result<[UInt8]?, Error> = .success(nil)
      init(name: String, byteCount: Int) {
        self.name = name
        self.byteCount = byteCount
      }
    }
    let workers = DispatchSemaphore(value: materializationWidth)
    var pending: [Pending] = []
    var heldBytes = 0
    func writeOldest() throws {
      let oldest = pending.removeFirst()
      oldest.done.wait()
      heldBytes -= oldest.byteCount
      let fresh: [UInt8]
      do {
        // nil: a damaged snapshot was dropped; rebuild from the object database alone.
        fresh = try oldest.result.get()
          ?? materialize(oldest.name, at: commit, current: try current(oldest.name), useSnapshots: false)
      } catch RepositoryError.hashMismatch where (try? current(oldest.name)) != nil {
        // The caller's bytes were not the state their hash (say, from a hand-edited stat cache)
        // claimed: rebuild from the object database alone, which is verified again.
        fresh = try materialize(oldest.name, at: commit, useSnapshots: false)
      }
      oldest.result = .success(nil)
      try write(oldest.name, fresh)
    }
    defer {
      // On an error, let running workers finish before their inputs go away.
      for item in pending { item.done.wait() }
    }
    let trees = try contents(of: commit).tensorTrees
    let sizes = try tensors.map { name -> Int in
      guard let tree = trees[name] else { return 0 }
      return try storedState(tree, tensor: name).state.byteCount
    }
    let budget = 2 * (sizes.max() ?? 0)
    for (name, size) in zip(tensors, sizes) {
      // Room first: planning may already read a packed object into memory.
      while !pending.isEmpty && heldBytes + size > budget { try writeOldest() }
      let plan = try planMaterialization(name, at: commit, current: try current(name))
      let held = plan.target.byteCount + plan.prereadByteCount
      while !pending.isEmpty && heldBytes + held > budget { try writeOldest() }
      let item = Pending(name: name, byteCount: held)
      heldBytes += held
      pending.append(item)
      workers.wait()
      DispatchQueue.global().async {
        item.result = Result { try self.runMaterialization(plan) }
        workers.signal()
        item.done.signal()
      }
    }
    while !pending.isEmpty { try writeOldest() }
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
      try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
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
      let writer = try AtomicFileWriter(path: shardPath, byteCount: totalBytes, hook: environment.ioHook)
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
          currentStates[info.name] = try hash.map { try CurrentBytes(hash: $0, bytes: source.read(sourceInfo)) }
          rebuild.append(info.name)
        }
        try materializeInOrder(rebuild, at: commit, current: { currentStates[$0] }) { name, fresh in
          try fresh.withUnsafeBytes { try writer.write($0, at: offsets[name] ?? 0) }
          done += 1
          report("writing tensors", done, total, bytes: fresh.count)
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
      let writer = try AtomicFileWriter(path: indexPath, byteCount: bytes.count, hook: environment.ioHook)
      do {
        try bytes.withUnsafeBytes { try writer.write($0, at: 0) }
        try writer.commit(durable: durable)
        replaced()
        if let status = writer.committedStatus { written.append(FileStat(status, path: indexPath)) }
      } catch {
        if writer.isRenamed { replaced() }
        writer.abandon()
        throw error
      }
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

  /// `mvc checkout REV -o PATH`: materializes REV somewhere else; HEAD and the working model
  /// are untouched. `tensors` (names) limits a partial checkout.
  /// - Parameters:
  ///   - tensors: only these tensors (names), in files listing just them.
  ///   - shards: only these shard files (0-based indices) of a sharded model.
  public func materialize(
    _ commit: ObjectID, to output: String, tensors: Set<String>? = nil, shards: Set<Int>? = nil, force: Bool = false
  ) throws {
    let working = try? WorkingModel(path: modelPath)
    let target = (output as NSString).standardizingPath
    if target == (modelPath as NSString).standardizingPath && !force {
      // That is the working model: rewriting it behind HEAD's back would lose changes silently.
      throw RepositoryError.invalidArgument(
        "'\(output)' is the working model; use 'mvc checkout REV' (or add --force to overwrite it and leave HEAD where it is)")
    }
    let layout = try layout(of: contents(of: commit)).0
    if let shards {
      guard layout.kind == "sharded" else {
        throw RepositoryError.invalidArgument("--shards needs a sharded model; this one is a single file")
      }
      if let bad = shards.first(where: { $0 < 0 || $0 >= layout.shards.count }) {
        throw RepositoryError.invalidArgument("shard \(bad + 1) does not exist: the model has \(layout.shards.count) shards")
      }
    }
    if let tensors, tensors.isEmpty {
      throw RepositoryError.invalidArgument("no tensor of \(commit.shortHex) matches the --tensors pattern")
    }
    try writeWholeModel(
      at: commit, to: output, previous: working, tensors: tensors, shards: shards,
      previousHashes: working.flatMap(cachedWorkingHashes) ?? [:], durable: false)
  }

  /// Tensor names at `commit` matching a shell glob (`*`, `?`, `[...]`), for partial checkouts.
  public func tensorNames(at commit: ObjectID, matching pattern: String) throws -> Set<String> {
    Set(try contents(of: commit).tensorTrees.keys.filter { fnmatch(pattern, $0, 0) == 0 })
  }
}
