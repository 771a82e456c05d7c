import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// The intent of a working-model rewrite, written before its first byte: a crash mid-way is
/// completed by the next mvc command (everything it needs is already in the object database).
struct Journal: Codable {
  var operation: String
  /// The commit whose state the working model is being given.
  var target: ObjectID
  /// Where HEAD goes: a branch name, or nil for detached at `target`.
  var branch: String?

  enum CodingKeys: String, CodingKey { case operation, target, branch }
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
  /// given, otherwise detaches at REV. Refuses to discard uncommitted changes unless `force`.
  @discardableResult
  public func checkout(_ target: ObjectID, branch: String?, force: Bool) throws -> CheckoutSummary {
    let headState = try head()
    let attach: HeadState = branch.map { .branch(name: $0, commit: target) } ?? .detached(target)
    return try moveWorkingModel(
      to: target, attach: attach, force: force, expectedHead: nil,
      reflog: "checkout: moving to \(branch ?? target.hex)", current: headState)
  }

  /// Rewrites the working model to `target` and points HEAD as `attach` says, under the journal.
  /// - Parameter expectedHead: for a commit that normalizes the working model: the branch moves
  ///   from this commit to `target` (compare-and-swap) instead of HEAD being re-pointed.
  @discardableResult
  func moveWorkingModel(
    to target: ObjectID, attach: HeadState, force: Bool, expectedHead: ObjectID?, reflog: String,
    current: HeadState? = nil
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
    if let working {
      currentHashes = try timed("working hashes") { try workingHashes(working) }
      if !force, let headCommit = headState.commit {
        let status = try status(of: working, against: headCommit, head: headState, hashes: currentHashes)
        if !status.isClean {
          throw RepositoryError.uncommittedChanges(tensors: status.entries.map(\.name))
        }
      }
    }
    let inPlace = try working.map { try sameLayout($0, as: target) } ?? false
    let toRewrite =
      inPlace
      ? (working?.tensorNames ?? []).filter { currentHashes[$0] != targetHashes[$0] }
      : Array(targetContents.tensorTrees.keys).sorted()

    // Everything is checked: record the intent, then write.
    let journal = Journal(operation: "checkout", target: target, branch: attach.branchName)
    try writeJournal(journal)
    do {
      if inPlace, let working {
        try timed("rewrite \(toRewrite.count) tensors in place") {
          try rewriteInPlace(working, tensors: toRewrite, at: target, currentHashes: currentHashes)
        }
      } else {
        try timed("write whole model") {
          try writeWholeModel(at: target, to: modelPath, previous: working, tensors: nil, previousHashes: currentHashes)
        }
      }
    } catch {
      // Put back what was written (the old state is committed), so a failed command leaves
      // the working model as it was; if even that fails, the journal makes the next command
      // finish the move instead.
      let headTensors = headState.commit.flatMap { try? tensorHashes(at: $0) } ?? [:]
      if inPlace, let headCommit = headState.commit, let reopened = try? WorkingModel(path: modelPath),
        (try? rewriteInPlace(
          reopened, tensors: toRewrite.filter { headTensors[$0] != nil }, at: headCommit, hooked: false)) != nil
      {
        try? FileManager.default.removeItem(atPath: journalPath)
        invalidateStatCache()
      } else if !inPlace {
        // Whole files go through temporary files: nothing of the model was replaced.
        try? FileManager.default.removeItem(atPath: journalPath)
      }
      throw error
    }
    try timed("finish move") { try finishMove(journal, expectedHead: expectedHead, reflog: reflog) }
    return CheckoutSummary(target: target, rewrittenTensors: toRewrite, wroteWholeFiles: !inPlace)
  }

  func writeJournal(_ journal: Journal) throws {
    let bytes = try JSONCoding.encode(journal)
    let writer = try AtomicFileWriter(path: journalPath, byteCount: bytes.count, hook: environment.ioHook)
    do {
      try bytes.withUnsafeBytes { try writer.write($0, at: 0) }
      try writer.commit()
    } catch {
      writer.abandon()
      throw error
    }
  }

  /// Points HEAD, refreshes the stat cache and removes the journal: the last steps of a move.
  func finishMove(_ journal: Journal, expectedHead: ObjectID?, reflog: String) throws {
    if let branch = journal.branch {
      let ref = "refs/heads/" + branch
      let existing = try RepositoryError.wrap("reading '\(ref)'") { try git.referenceTarget(ref) }
      if existing != journal.target {
        if let expectedHead, existing == expectedHead {
          try RepositoryError.wrap("moving '\(ref)'") {
            try git.updateReference(ref, to: journal.target, expected: expectedHead, message: reflog)
          }
        } else {
          try RepositoryError.wrap("moving '\(ref)'") { try git.forceReference(ref, to: journal.target, message: reflog) }
        }
      }
      if try head().branchName != branch {
        try RepositoryError.wrap("moving HEAD") { try git.setHead(branch: branch) }
      }
    } else {
      try RepositoryError.wrap("moving HEAD") { try git.setHead(detachedAt: journal.target) }
    }
    if let working = try? WorkingModel(path: modelPath) {
      saveStatCache(working: working, hashes: try tensorHashes(at: journal.target))
    } else {
      invalidateStatCache()
    }
    try? FileManager.default.removeItem(atPath: journalPath)
  }

  /// Completes a working-model rewrite that a killed mvc left half done.
  func recoverFromJournal() throws {
    guard let data = FileManager.default.contents(atPath: journalPath) else { return }
    guard let journal = try? JSONDecoder().decode(Journal.self, from: data) else {
      // A torn journal means the rewrite never started (the journal is renamed into place).
      try? FileManager.default.removeItem(atPath: journalPath)
      return
    }
    invalidateStatCache()
    let working = try? WorkingModel(path: modelPath)
    if let working, try sameLayout(working, as: journal.target) {
      let target = try tensorHashes(at: journal.target)
      let current = try working.hashAll()
      try rewriteInPlace(working, tensors: working.tensorNames.filter { current[$0] != target[$0] }, at: journal.target)
    } else {
      try writeWholeModel(at: journal.target, to: modelPath, previous: working, tensors: nil)
    }
    try finishMove(journal, expectedHead: nil, reflog: "recover: finish interrupted \(journal.operation)")
  }

  /// Overwrites the named tensors' bytes in the working files with their state at `commit`.
  /// - Parameter currentHashes: the working tensors' hashes when the caller has them.
  func rewriteInPlace(
    _ working: WorkingModel, tensors: [String], at commit: ObjectID, hooked: Bool = true,
    currentHashes: [String: String] = [:]
  ) throws {
    var writers: [Int: InPlaceFileWriter] = [:]
    var done = 0
    let present = tensors.filter { working.location(of: $0) != nil }
    try materializeInOrder(present, at: commit, current: { name in
      try working.currentBytes(of: name, hash: currentHashes[name])
    }) { name, fresh in
      guard let (shard, info) = working.location(of: name) else { return }
      let writer = try writers[shard] ?? InPlaceFileWriter(path: working.shardPath(shard), hook: hooked ? environment.ioHook : nil)
      writers[shard] = writer
      // The working files are still read for the tensors not yet written: tell the reader
      // these writes are mvc's own.
      let file = working.shards[shard]
      try fresh.withUnsafeBytes { bytes in
        try file.file.absorbingChanges { try writer.write(bytes, at: file.fileOffset(of: info)) }
      }
      done += 1
      report("writing tensors", done, present.count, bytes: fresh.count)
    }
    for writer in writers.values { try writer.sync() }
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
      // nil: a damaged snapshot was dropped; rebuild from the object database alone.
      let fresh = try oldest.result.get()
        ?? materialize(oldest.name, at: commit, current: try current(oldest.name), useSnapshots: false)
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
  func writeWholeModel(
    at commit: ObjectID, to path: String, previous: WorkingModel?, tensors: Set<String>?, shards: Set<Int>? = nil,
    previousHashes: [String: String] = [:]
  ) throws {
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
          var current: CurrentBytes?
          if let previous, let (_, previousInfo) = previous.location(of: info.name),
            previousInfo.byteCount == info.byteCount
          {
            current = try previous.currentBytes(of: info.name, hash: previousHashes[info.name])
          }
          // Unchanged tensors are copied inside the kernel, as `cp` would.
          if let current, current.hash == states[info.name]?.hash, let previous,
            let (sourceShard, sourceInfo) = previous.location(of: info.name)
          {
            try writer.copy(
              from: previous.shards[sourceShard].file,
              sourceOffset: previous.shards[sourceShard].fileOffset(of: sourceInfo),
              count: info.byteCount, to: dataStart + info.dataOffsets.lowerBound)
            done += 1
            report("writing tensors", done, total, bytes: info.byteCount)
            continue
          }
          currentStates[info.name] = current
          rebuild.append(info.name)
        }
        try materializeInOrder(rebuild, at: commit, current: { currentStates[$0] }) { name, fresh in
          try fresh.withUnsafeBytes { try writer.write($0, at: offsets[name] ?? 0) }
          done += 1
          report("writing tensors", done, total, bytes: fresh.count)
        }
        try writer.commit()
      } catch {
        writer.abandon()
        throw error
      }
    }
    if sharded, tensors == nil, let indexFile = layout.indexFile, let indexID = blobs[TreeEntryName.index] {
      let bytes = try git.readBlob(indexID)
      let writer = try AtomicFileWriter(
        path: (path as NSString).appendingPathComponent(indexFile), byteCount: bytes.count, hook: environment.ioHook)
      do {
        try bytes.withUnsafeBytes { try writer.write($0, at: 0) }
        try writer.commit()
      } catch {
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
      previousHashes: working.flatMap(cachedWorkingHashes) ?? [:])
  }

  /// Tensor names at `commit` matching a shell glob (`*`, `?`, `[...]`), for partial checkouts.
  public func tensorNames(at commit: ObjectID, matching pattern: String) throws -> Set<String> {
    Set(try contents(of: commit).tensorTrees.keys.filter { fnmatch(pattern, $0, 0) == 0 })
  }
}
