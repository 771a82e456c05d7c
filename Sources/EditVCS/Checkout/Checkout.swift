import DeltaStore
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

public struct CheckoutSummary: Sendable {
  package var target: ObjectID
  /// Tensors whose bytes were rewritten.
  public var rewrittenTensors: [String]
  /// True when whole files were written (layout change or missing model), false for in-place.
  public var wroteWholeFiles: Bool
}

extension EditRepository {
  /// `mvc checkout REV`: the working model becomes REV's state; HEAD attaches to `branch` if
  /// given (creating it at REV when it does not exist), otherwise detaches at REV. Refuses to
  /// discard uncommitted changes unless `force`, which also rehashes the working model instead
  /// of trusting the stat cache.
  @discardableResult
  public func checkout(_ target: ObjectID, branch: String?, force: Bool) throws -> CheckoutSummary {
    let headState = try head()
    let attach: HeadState = branch.map { .branch(name: $0, commit: target) } ?? .detached(target)
    let from = headState.branchName ?? headState.commit?.hex ?? "nothing"
    return try moveWorkingModel(
      to: target, attach: attach, force: force, expectedHead: nil,
      reflog: "checkout: moving from \(from) to \(branch ?? target.hex)", current: headState, rehash: force)
  }

  /// Rewrites the working model to `target` and points HEAD as `attach` says, as one journaled
  /// step: a failure before the model is touched leaves the old state; one after it leaves the
  /// journal, which the next command completes (the error says so).
  /// - Parameters:
  ///   - expectedHead: for a commit that normalizes the working model: the branch must still be
  ///     at this commit; it moves from there to `target` (compare-and-swap).
  ///   - rehash: hash the working model even when the stat cache vouches for it.
  ///   - origHead: written to `ORIG_HEAD` as the move finishes (git's record of where HEAD was
  ///     before a reset, merge, pull or rebase).
  ///   - prepared: target bytes the caller computed already (a commit that applied factors), by
  ///     tensor: written as they are, once checked against the target's hash, not rebuilt.
  @discardableResult
  func moveWorkingModel(
    to target: ObjectID, attach: HeadState, force: Bool, expectedHead: ObjectID?, reflog: String,
    current: HeadState? = nil, rehash: Bool = false, origHead: ObjectID? = nil,
    prepared: [String: CurrentBytes] = [:]
  ) throws -> CheckoutSummary {
    let headState = try current ?? head()
    let targetContents = try contents(of: target)
    let targetHashes = try timed("target hashes") { try tensorHashes(at: target) }

    let (working, currentHashes, hashedStats) = try hashedCleanWorkingModel(
      force: force, rehash: rehash, head: headState, target: target)
    // The branch moves from where it is now (compare-and-swap when HEAD moves).
    var branchTip: ObjectID?
    if let name = attach.branchName {
      let ref = "refs/heads/" + name
      branchTip = try RepositoryError.wrap("reading '\(ref)'") { try git.referenceTarget(ref) }
    }
    if let expectedHead, let name = attach.branchName, branchTip != expectedHead {
      throw RepositoryError.concurrentUpdate(ref: "refs/heads/" + name)
    }
    // Side files are read and checked before anything is written (a hostile commit writes nothing).
    let targetFiles = try sideFiles(at: target)
    let previousFiles = try headState.commit.map { Set(try sideFileBlobs(of: contents(of: $0)).keys) } ?? []
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
      headFrom: headState.commit, branchFrom: branchTip, origHead: origHead, reflog: reflog)
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
            stats: hashedStats, prepared: prepared)
        }
      } else {
        try timed("write whole model") {
          written = try writeWholeModel(
            at: target, to: modelPath, previous: working, tensors: nil, previousHashes: currentHashes,
            replaced: { replacedFiles += 1 })
        }
      }
      try writeSideFiles(
        targetFiles, into: SideFiles.folder(modelPath: modelPath, sharded: try isSharded(target)),
        removing: previousFiles, durable: true)
    } catch {
      try undoFailedRewrite(
        error, inPlace: inPlace, working: working, tensors: toRewrite, head: headState, stats: hashedStats,
        replacedFiles: replacedFiles, target: target)
      throw error
    }
    try timed("finish move") {
      try finishMove(journal, branchTip: branchTip, written: written, hashes: targetHashes, reflog: reflog)
    }
    return CheckoutSummary(target: target, rewrittenTensors: toRewrite, wroteWholeFiles: !inPlace)
  }

  /// The working model (nil when missing or unreadable, allowed only with `force`), its tensor
  /// hashes and the stats of the files hashed; without `force` it must be clean against HEAD.
  private func hashedCleanWorkingModel(
    force: Bool, rehash: Bool, head headState: HeadState, target: ObjectID? = nil
  ) throws -> (WorkingModel?, [String: String], [FileStat]) {
    var working: WorkingModel?
    do {
      working = try WorkingModel(path: modelPath)
    } catch {
      // A missing or unreadable working model can be rewritten, but only on request.
      if !force { throw error }
    }
    guard let working else { return (nil, [:], []) }
    let (currentHashes, hashedStats) = try timed("working hashes") {
      try hashedWorkingModel(working, trustCache: !rehash)
    }
    if !force, let headCommit = headState.commit {
      let status = try status(of: working, against: headCommit, head: headState, hashes: currentHashes)
      if !status.isCleanBesidesNewFiles {
        throw RepositoryError.uncommittedChanges(tensors: status.changedNames)
      }
      // A side file HEAD does not track is kept, unless the target would overwrite it with other bytes.
      if !status.newFiles.isEmpty, let target {
        let present = try working.sideFiles()
        let targetFiles = try sideFiles(at: target)
        let clobbered = status.newFiles.filter { targetFiles[$0] != nil && targetFiles[$0] != present[$0] }
        if !clobbered.isEmpty { throw RepositoryError.uncommittedChanges(tensors: clobbered.sorted()) }
      }
    }
    return (working, currentHashes, hashedStats)
  }

  /// After rewriting the working model failed with `error`: puts back what was written (the old
  /// state is committed), through the same descriptors, so a failed command leaves the working
  /// model as it was, and drops the journal; if even that fails, keeps the journal, so that the
  /// next command finishes the move instead, and throws `moveIncomplete`.
  private func undoFailedRewrite(
    _ error: Error, inPlace: Bool, working: WorkingModel?, tensors toRewrite: [String], head headState: HeadState,
    stats hashedStats: [FileStat], replacedFiles: Int, target: ObjectID
  ) throws {
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
  }

  /// `mvc checkout REV -o PATH`: materializes REV somewhere else; HEAD and the working model
  /// are untouched. `tensors` (names) limits a partial checkout.
  /// - Parameters:
  ///   - tensors: only these tensors (names), in files listing just them.
  ///   - shards: only these shard files (0-based indices) of a sharded model.
  ///   - intoFolder: for a single-file model, `output` is a folder that receives
  ///     `model.safetensors` and the side files (a sharded model's output is always a folder
  ///     holding its side files); false writes the one file `output`, without side files.
  public func materialize(
    _ commit: ObjectID, to output: String, tensors: Set<String>? = nil, shards: Set<Int>? = nil, force: Bool = false,
    intoFolder: Bool = false
  ) throws {
    let working = try? WorkingModel(path: modelPath)
    let target = (output as NSString).standardizingPath
    if target == (modelPath as NSString).standardizingPath && !force {
      // That is the working model: rewriting it behind HEAD's back would lose changes silently.
      throw RepositoryError.outputIsWorkingModel(path: output)
    }
    let layout = try layout(of: contents(of: commit)).0
    let files = try sideFiles(at: commit)
    if let shards {
      guard layout.kind == "sharded" else {
        throw RepositoryError.notSharded
      }
      if let bad = shards.first(where: { $0 < 0 || $0 >= layout.shards.count }) {
        throw RepositoryError.shardOutOfRange(shard: bad + 1, count: layout.shards.count)
      }
    }
    if let tensors, tensors.isEmpty {
      throw RepositoryError.noTensorMatches(revision: commit.shortHex)
    }
    let sharded = layout.kind == "sharded"
    let modelFile = sharded || !intoFolder ? output : (output as NSString).appendingPathComponent("model.safetensors")
    if intoFolder && !sharded {
      try RepositoryError.fileSystem("create", output) {
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
      }
    }
    try writeWholeModel(
      at: commit, to: modelFile, previous: working, tensors: tensors, shards: shards,
      previousHashes: working.flatMap(cachedWorkingHashes) ?? [:], durable: false)
    if sharded || intoFolder {
      try writeSideFiles(files, into: output, removing: [], durable: false)
    }
  }

  /// Whether `commit`'s model is a folder of shards.
  func isSharded(_ commit: ObjectID) throws -> Bool {
    try layout(of: contents(of: commit)).0.kind == "sharded"
  }

  /// Tensor names at `commit` matching a shell glob (`*`, `?`, `[...]`), for partial checkouts.
  public func tensorNames(at commit: ObjectID, matching pattern: String) throws -> Set<String> {
    Set(try contents(of: commit).tensorTrees.keys.filter { fnmatch(pattern, $0, 0) == 0 })
  }
}
