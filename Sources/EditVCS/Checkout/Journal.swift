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
  /// What `ORIG_HEAD` records when the move finishes (reset, merge, pull, rebase: where HEAD was,
  /// as git writes it before such a move); nil leaves `ORIG_HEAD` alone.
  var origHead: ObjectID?
  /// The reflog message of the move (`reset: moving to HEAD~3`), for the reference logs the
  /// next command writes if it has to finish the move.
  var reflog: String?

  static let currentFormat = 2

  /// Whether the journal says where the move started (format 2, or a start field present).
  var recordsStart: Bool { (format ?? 1) >= 2 || headFrom != nil || branchFrom != nil }

  enum CodingKeys: String, CodingKey {
    case operation, target, branch, format
    case headFrom = "head_from"
    case branchFrom = "branch_from"
    case origHead = "orig_head"
    case reflog
  }
}

extension EditRepository {
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
    _ = try bytes.withUnsafeBytes { try AtomicFileWriter.replace(journalPath, with: $0, hook: environment.ioHook) }
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
      if let origHead = journal.origHead {
        try environment.ioHook?(.willWrite(path: (gitDirectory as NSString).appendingPathComponent("ORIG_HEAD")))
        try git.forceReference("ORIG_HEAD", to: origHead, message: reflog)
      }
      if let branch = journal.branch {
        let ref = "refs/heads/" + branch
        if branchTip != journal.target {
          try environment.ioHook?(.willWrite(path: (gitDirectory as NSString).appendingPathComponent(ref)))
          do {
            try git.updateReference(ref, to: journal.target, expected: branchTip, message: reflog)
          } catch RepositoryError.git(let error, _) where error.isModified || error.isExists {
            throw RepositoryError.concurrentUpdate(ref: ref)
          }
        }
        if try head().branchName != branch {
          try environment.ioHook?(.willWrite(path: headPath))
          try git.setHead(branch: branch, message: reflog)
        }
      } else {
        try environment.ioHook?(.willWrite(path: headPath))
        try git.setHead(detachedAt: journal.target, message: reflog)
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
      let current = try working.hashAll(workers: environment.workerThreads)
      let changed = working.tensorNames.filter { current[$0] != targetHashes[$0] }
      written = try rewriteInPlace(
        working, writers: openForRewrite(working, holding: changed, hashedAt: stats), tensors: changed,
        at: journal.target, stats: stats)
    } else {
      written = try writeWholeModel(at: journal.target, to: modelPath, previous: working, tensors: nil)
    }
    let previousFiles = try journal.headFrom.map { Set(try sideFileBlobs(of: contents(of: $0)).keys) } ?? []
    try writeSideFiles(
      try sideFiles(at: journal.target),
      into: SideFiles.folder(modelPath: modelPath, sharded: try isSharded(journal.target)),
      removing: previousFiles, durable: true)
    try finishMove(
      journal, branchTip: branchTip, written: written, hashes: targetHashes,
      reflog: "recover: finish interrupted " + (journal.reflog ?? journal.operation))
  }
}
