import Apply
import DeltaStore
import Foundation

/// Everything the repository layer can refuse, with the subject named and the next step given.
///
/// Every case has a one-line `errorDescription` in git's style and a `recoverySuggestion` (the
/// hint). A libgit2 failure is always `.git` (thrown so by `check` in `Git/`); a failure of Apply or
/// of a stored object's codec is carried whole (`.apply`, `.storedData`) with its own hint; the
/// remaining `DeltaStoreError`s (the working model's files) pass through as they are.
public enum RepositoryError: Error, LocalizedError, Equatable {
  case notARepository(searchedFrom: String)
  case alreadyInitialized(path: String)
  case unsupportedFormat(found: Int, supported: Int)
  case missingWorkingModel(path: String)
  case unknownRevision(String, commitCount: Int?)
  case emptyHistory
  case corruptObject(what: String, reason: String)
  /// libgit2 (or a C call inside `Git/`) failed; `context` says what mvc was doing when a caller
  /// added it with `RepositoryError.wrap`.
  case git(GitError, context: String?)
  case locked(path: String, pid: Int32?)
  case uncommittedChanges(tensors: [String])
  case nothingToCommit
  case layoutMismatch(file: String, tensor: String, detail: String)
  case deltaMismatch(file: String, tensor: String, detail: String)
  case hashMismatch(tensor: String, revision: String, expected: String, actual: String)
  case branchExists(String)
  case branchNotFound(String)
  case invalidRefName(String)
  case tagExists(String)
  case cannotDeleteCurrentBranch(String)
  case bisectInProgress
  case noBisectInProgress
  case concurrentUpdate(ref: String)
  case referenceBaseChanged(path: String, tensor: String)
  /// Data read from the repository (or a remote) breaks a rule of the trust boundary.
  case untrustedData(what: String, reason: String)
  /// A tensor is stored by reference to a file the user has not named as this repository's base.
  case untrustedReferenceBase(path: String, tensor: String, trusted: String?)
  /// A command would need more memory or disk than there is.
  case insufficientResources(what: String, needed: UInt64, available: UInt64, resource: String)
  /// A setting in `.mvc/config` that mvc refuses to act on.
  case invalidConfig(key: String, file: String, reason: String)
  /// The journal of an interrupted working-model move cannot be completed as it stands.
  case journalUnusable(path: String, reason: String)
  /// A move of the working model and HEAD stopped half done; the journal finishes it.
  case moveIncomplete(journal: String, target: String, detail: String)
  /// `.mvc/HEAD` cannot be read as a reference.
  case unreadableHead(path: String, detail: String)
  /// Another program replaced (renamed a file over) or wrote to a working file mvc was rewriting.
  case fileReplaced(path: String)
  /// A delta file holds LoRA factors but nothing says their scale `lora_alpha/r`.
  case loraScaleUnknown(file: String)

  // MARK: Remotes (remote, push, fetch, pull, clone), naming the remote or URL

  case remoteNotFound(String)
  case remoteExists(String)
  case invalidRemoteName(String)
  /// The transport or the other side failed: what we tried, where, and libgit2's message.
  case transport(operation: String, url: String, message: String)
  case pushRejected(remote: String, refs: [String])
  case diverged(remote: String, branch: String)
  case noRemoteBranch(remote: String, branch: String)
  case detachedHead(operation: String)
  case destinationExists(path: String)
  case emptyRemote(url: String)

  // MARK: Failures of the modules below, carried whole (their description and hint are forwarded)

  /// Apply refused or failed on `tensor` (a factorization, a truncation, an edit solve).
  case apply(ApplyError, tensor: String?)
  /// A stored object of `tensor` at `revision` could not be decoded.
  case storedData(DeltaStoreError, tensor: String, revision: String)

  // MARK: Inputs that do not fit the repository or each other

  /// A file or folder named by the user (or the lock file) cannot be opened, read, written or created.
  case cannotAccess(path: String, operation: String, reason: String?)
  /// `tensor` is not in `revision` (a commit id, or "HEAD").
  case tensorNotInCommit(tensor: String, revision: String)
  /// `tensor` is not a floating-point tensor; `operation` is what needs one ("replayed", "exported as deltas").
  case notAFloatTensor(tensor: String, dtype: String, operation: String)
  /// `tensor` is not a 2-D float matrix, as `operation` needs ("a closed-form edit", "a LoRA adapter").
  case notAMatrix(tensor: String, dtype: String, shape: [Int], operation: String, revisions: String?)
  /// `tensor` is added or removed in `revisions`; `operation` ("a merge", "a replayed commit", "an
  /// adapter") can only change existing tensors.
  case tensorAddedOrRemoved(tensor: String, change: String, revisions: String, operation: String)
  /// `operation` ("revert", "cherry-pick") was asked to replay the root commit, which is the base model.
  case rootCommit(operation: String, commit: String)
  /// `revision` and HEAD have no common ancestor.
  case unrelatedHistories(revision: String, operation: String)
  /// `commit` in the range of `operation` is a merge.
  case mergeCommitInRange(commit: String, operation: String)
  /// `merge --strategy resolve` cannot re-solve: `reason` says which side lacks what.
  case cannotResolve(reason: String)
  /// The bisection's marks contradict each other (`good == bad`, or good is not an ancestor of bad).
  case contradictoryBisectMarks(good: String, bad: String)
  /// `bisect run` needs a bad and a good commit marked.
  case bisectRunNeedsMarks
  /// `bisect run`'s program cannot be started.
  case programNotRunnable(path: String, reason: String)
  /// `bisect run`'s program ended so that the run must stop (a signal, or an exit code ≥ 128).
  case bisectRunAborted(program: String, reason: String)
  /// `mvc init`'s model is not inside the folder that is to hold `.mvc`.
  case modelOutsideRepository(model: String, root: String)
  /// `checkout -o PATH` names the working model itself.
  case outputIsWorkingModel(path: String)
  /// `--shards` on a model that is a single file.
  case notSharded
  /// `--shards N` with N (1-based) beyond the model's `count` shards.
  case shardOutOfRange(shard: Int, count: Int)
  /// `--tensors` selects no tensor of `revision`.
  case noTensorMatches(revision: String)
  /// The export range changes no tensor.
  case nothingToExport
  /// `export FROM..TO` with FROM not on TO's first-parent history.
  case notAnAncestor(from: String, to: String)
  /// The difference over `revisions` is not low-rank, so it cannot be exported as factors.
  case notLowRank(tensor: String, revisions: String, maxRank: Int, rows: Int, cols: Int)
  /// A `.npy` input (`keys`, `values`, `covariance`, probe keys) has the wrong shape.
  case inputShapeMismatch(input: String, shape: [Int], expected: String)
  /// A knowledge edit needs a covariance and was given neither `--cov` nor `--cov-keys`.
  case missingCovariance
  /// `commit-factors --method`: a name that cannot go into a commit record.
  case invalidMethodName(String)
  /// Provenance given to `commit-factors` (hyper-parameters, keys, values) that cannot be recorded.
  case invalidProvenance(what: String, reason: String)
  /// `--scale` given beside an adapter_config.json that says otherwise.
  case scaleDisagreesWithConfig(scale: Double, configScale: Double, file: String)
  /// A tracked side file (`config.json`, `tokenizer.json`, ...) of the working model is larger than mvc tracks.
  case sideFileTooLarge(path: String, byteCount: Int, limit: Int)
  /// A model folder whose files no longer match its shard index (re-saved with another shard
  /// count, or as one file beside a stale index).
  case resavedModelFolder(folder: String, detail: String)
  /// The accumulator Σ KKᵀ of a tensor (AlphaEdit's cache_c, ENCORE's SEQ_CACHE) cannot be known
  /// from what the history recorded: `commit` (present in the state) changed the tensor without keys.
  case accumulatorUnknown(tensor: String, commit: String, reason: String)

  public var errorDescription: String? {
    switch self {
    case .notARepository(let dir):
      return "not an mvc repository (or any parent up to /): '\(dir)'"
    case .alreadyInitialized(let path):
      return "'\(path)' already holds an mvc repository"
    case .unsupportedFormat(let found, let supported):
      return "repository format \(found) is newer than this mvc understands (\(supported))"
    case .missingWorkingModel(let path):
      return "working model '\(path)' does not exist"
    case .unknownRevision(let rev, let count):
      if let count { return "unknown revision '\(rev)' (history has \(count) commit\(count == 1 ? "" : "s"))" }
      return "unknown revision '\(rev)'"
    case .emptyHistory:
      return "the repository has no commits"
    case .corruptObject(let what, let reason):
      return "corrupt \(what): \(reason)"
    case .git(let error, let context):
      guard let context else { return error.description }
      return "\(context): \(error.function) failed: \(error.message)"
    case .locked(let path, let pid):
      return "another mvc is running\(pid.map { " (pid \($0))" } ?? "") on '\(path)'"
    case .uncommittedChanges(let tensors):
      let shown = tensors.prefix(3).map { "'\($0)'" }.joined(separator: ", ")
      return
        "the working model has uncommitted changes in \(tensors.count) tensor\(tensors.count == 1 ? "" : "s") or file\(tensors.count == 1 ? "" : "s") (\(shown)\(tensors.count > 3 ? ", ..." : ""))"
    case .nothingToCommit:
      return "nothing to commit: the working model equals HEAD"
    case .layoutMismatch(let file, let tensor, let detail):
      return "'\(file)': tensor '\(tensor)' \(detail)"
    case .deltaMismatch(let file, let tensor, let detail):
      return "delta '\(file)': tensor '\(tensor)': \(detail)"
    case .hashMismatch(let tensor, let revision, let expected, let actual):
      return "tensor '\(tensor)' at \(revision) materialized to \(actual), manifest says \(expected)"
    case .branchExists(let name): return "a branch named '\(name)' already exists"
    case .branchNotFound(let name): return "branch '\(name)' not found"
    case .invalidRefName(let name): return "'\(name)' is not a valid branch or tag name"
    case .tagExists(let name): return "tag '\(name)' already exists"
    case .cannotDeleteCurrentBranch(let name): return "cannot delete branch '\(name)': HEAD is on it"
    case .bisectInProgress:
      return "a bisection is in progress"
    case .noBisectInProgress:
      return "no bisection is in progress"
    case .concurrentUpdate(let ref):
      return "'\(ref)' moved while this command ran"
    case .referenceBaseChanged(let path, let tensor):
      return "reference base '\(path)' changed: tensor '\(tensor)' no longer matches its recorded hash"
    case .untrustedData(let what, let reason):
      return "refusing \(what): \(reason)"
    case .invalidConfig(let key, let file, let reason):
      return "refusing \(key) in '\(file)': \(reason)"
    case .insufficientResources(let what, let needed, let available, let resource):
      return "\(what) needs \(needed) bytes, more than the \(available) bytes of \(resource)"
    case .untrustedReferenceBase(let path, let tensor, let trusted):
      return "tensor '\(tensor)' is stored by reference to '\(path)', "
        + (trusted.map { "which is not this repository's reference base '\($0)'" }
          ?? "and this repository has no reference base")
    case .journalUnusable(let path, let reason):
      return "cannot finish the interrupted move recorded in '\(path)': \(reason)"
    case .moveIncomplete(_, let target, let detail):
      return "the move to \(target) did not finish: \(detail)"
    case .unreadableHead(let path, let detail):
      return "cannot read HEAD '\(path)': \(detail)"
    case .fileReplaced(let path):
      return
        "'\(path)' was replaced or rewritten by another program while mvc was writing the model; "
        + "HEAD was not moved"
    case .remoteNotFound(let name): return "no such remote '\(name)'"
    case .remoteExists(let name): return "remote '\(name)' already exists"
    case .invalidRemoteName(let name): return "'\(name)' is not a valid remote name"
    case .transport(let operation, let url, let message): return "cannot \(operation) '\(url)': \(message)"
    case .pushRejected(let remote, let refs):
      return "failed to push some refs to '\(remote)': " + refs.joined(separator: ", ")
    case .diverged(let remote, let branch):
      return "'\(remote)/\(branch)' and the current branch have diverged"
    case .noRemoteBranch(let remote, let branch): return "remote '\(remote)' has no branch '\(branch)'"
    case .detachedHead(let operation): return "cannot \(operation) with a detached HEAD"
    case .destinationExists(let path):
      return "destination path '\(path)' already exists and is not an empty directory"
    case .emptyRemote(let url): return "'\(url)' has no branches to clone"
    case .apply(let error, let tensor):
      let text = error.errorDescription ?? "\(error)"
      return tensor.map { "tensor '\($0)': \(text)" } ?? text
    case .storedData(let error, let tensor, let revision):
      return "corrupt stored data of tensor '\(tensor)' at \(revision): \(error.errorDescription ?? "\(error)")"
    case .cannotAccess(let path, let operation, let reason):
      return "cannot \(operation) '\(path)'" + (reason.map { ": \($0)" } ?? "")
    case .tensorNotInCommit(let tensor, let revision):
      return "tensor '\(tensor)' is not in \(revision)"
    case .notAFloatTensor(let tensor, let dtype, let operation):
      return "tensor '\(tensor)' is \(dtype): only float tensors can be \(operation)"
    case .notAMatrix(let tensor, let dtype, let shape, let operation, let revisions):
      let changed = revisions.map { " and changed in \($0)" } ?? ""
      return "tensor '\(tensor)' is \(dtype) \(shape)\(changed): \(operation) needs a 2-D float matrix"
    case .tensorAddedOrRemoved(let tensor, let change, let revisions, let operation):
      return "tensor '\(tensor)' is \(change) in \(revisions); \(operation) can only change existing tensors"
    case .rootCommit(let operation, let commit):
      return "cannot \(operation) the root commit \(commit): it is the base model"
    case .unrelatedHistories(let revision, let operation):
      return "cannot \(operation): '\(revision)' shares no history with HEAD"
    case .mergeCommitInRange(let commit, let operation):
      return "commit \(commit) is a merge; \(operation) cannot replay merges"
    case .cannotResolve(let reason):
      return "cannot re-solve: \(reason)"
    case .contradictoryBisectMarks(let good, let bad):
      if good == bad { return "commit \(good) was marked both good and bad" }
      return "good commit \(good) is not an ancestor of bad commit \(bad): the marks contradict each other"
    case .bisectRunNeedsMarks:
      return "'bisect run' needs a bad and a good commit"
    case .programNotRunnable(let path, let reason):
      return "cannot run '\(path)': \(reason)"
    case .bisectRunAborted(let program, let reason):
      return "bisect run failed: '\(program)' \(reason)"
    case .modelOutsideRepository(let model, let root):
      return "the model '\(model)' must be inside '\(root)'"
    case .outputIsWorkingModel(let path):
      return "'\(path)' is the working model"
    case .notSharded:
      return "--shards needs a sharded model; this one is a single file"
    case .shardOutOfRange(let shard, let count):
      return "shard \(shard) does not exist: the model has \(count) shard\(count == 1 ? "" : "s")"
    case .noTensorMatches(let revision):
      return "no tensor of \(revision) matches the --tensors pattern"
    case .nothingToExport:
      return "the range changes no tensor; there is nothing to export"
    case .notAnAncestor(let from, let to):
      return "'\(from)' is not on the first-parent history of '\(to)'"
    case .notLowRank(let tensor, let revisions, let maxRank, let rows, let cols):
      return "tensor '\(tensor)': the difference \(revisions) is not low-rank "
        + "(rank above \(maxRank) of [\(rows), \(cols)]), so it cannot be exported as factors"
    case .inputShapeMismatch(let input, let shape, let expected):
      return "\(input) has shape \(shape), expected \(expected)"
    case .missingCovariance:
      return "a closed-form edit needs the covariance of the layer's keys"
    case .invalidMethodName(let method):
      return "method '\(method)' is not 1-64 of the characters a-z 0-9 . _ -"
    case .invalidProvenance(let what, let reason):
      return "cannot record the \(what): \(reason)"
    case .scaleDisagreesWithConfig(let scale, let configScale, let file):
      return "--scale \(scale) disagrees with lora_alpha/r = \(configScale) of the adapter_config.json beside '\(file)'"
    case .loraScaleUnknown(let file):
      return "'\(file)' holds LoRA factors but no adapter_config.json is beside it: their scale lora_alpha/r is unknown"
    case .sideFileTooLarge(let path, let byteCount, let limit):
      return "'\(path)' is \(byteCount) bytes, more than the \(limit) mvc tracks beside the weights"
    case .accumulatorUnknown(let tensor, let commit, let reason):
      return "cannot sum the recorded keys of '\(tensor)': commit \(commit) \(reason)"
    case .resavedModelFolder(let folder, let detail):
      return "the model folder '\(folder)' does not match its shard index: \(detail)"
    }
  }

  public var recoverySuggestion: String? {
    switch self {
    case .notARepository:
      return "run 'mvc init <model.safetensors>' to start one, or pass -C <dir>"
    case .alreadyInitialized:
      return "use the existing repository, or remove its .mvc folder to start over"
    case .unsupportedFormat:
      return "upgrade mvc"
    case .missingWorkingModel:
      return "'mvc checkout --force HEAD' writes it again from the repository"
    case .unknownRevision:
      return "'mvc log --oneline' lists the commits; revisions are ids, branches, tags, HEAD~N, REV^"
    case .emptyHistory:
      return "run 'mvc init' again"
    case .corruptObject:
      return "run 'git --git-dir=.mvc fsck'; restore .mvc from a clone or backup"
    case .git(let error, _):
      return error.recoverySuggestion
    case .locked:
      return "wait for it to finish; the lock is released when that process exits"
    case .uncommittedChanges:
      return "commit them ('mvc commit -m ...'), or pass --force to discard them"
    case .nothingToCommit:
      return "rewrite the working model with your editor first, or pass --delta FILE"
    case .layoutMismatch:
      return "a commit may add or remove tensors but not change a tensor's dtype or shape"
    case .deltaMismatch:
      return "delta tensors are named like the model's (dense, same shape) or as PEFT LoRA pairs"
    case .hashMismatch:
      return "run 'mvc fsck'; the repository may be damaged"
    case .branchExists:
      return "choose another name, or 'mvc switch' to it"
    case .branchNotFound:
      return "'mvc branch' lists the branches; 'mvc switch -c NAME' creates one"
    case .invalidRefName:
      return "names follow git's rules: no spaces, '..', '~', '^', ':' or leading '-'"
    case .tagExists:
      return "choose another name"
    case .cannotDeleteCurrentBranch:
      return "switch to another branch first"
    case .bisectInProgress:
      return "finish it with 'mvc bisect good|bad' or end it with 'mvc bisect reset'"
    case .noBisectInProgress:
      return "start one with 'mvc bisect start [BAD [GOOD...]]'"
    case .concurrentUpdate:
      return "run the command again"
    case .referenceBaseChanged:
      return "restore the base file the repository was initialized with (--reference-base)"
    case .invalidConfig(let key, _, _):
      return key == "mvc.model"
        ? "the working model must be a path inside the repository's folder, outside .mvc: "
          + "'git --git-dir=.mvc config mvc.model PATH' sets it"
        : "'git --git-dir=.mvc config \(key) VALUE' sets it"
    case .insufficientResources:
      return "nothing was written; free some space (or use a machine with more memory), then run the command again"
    case .untrustedReferenceBase:
      return "a repository never reads a file outside it because a commit names it; if that file is "
        + "your copy of the base model, clone with 'mvc clone --reference-base PATH URL', or in an existing "
        + "repository run 'git --git-dir=.mvc config mvc.referencebase PATH'"
    case .untrustedData:
      return "the repository (or the remote it came from) holds data mvc will not use; nothing was written. "
        + "'mvc fsck' lists every such object; if it came from a remote, tell its owner"
    case .journalUnusable(let path, _):
      return
        "'mvc fsck' shows the repository's state; to abandon the move, delete '\(path)' and run "
        + "'mvc checkout --force HEAD'"
    case .moveIncomplete(let journal, _, _):
      return
        "the move is recorded in '\(journal)': fix the cause (free space on the disk of .mvc) and run any mvc "
        + "command, e.g. 'mvc status', to finish it"
    case .unreadableHead:
      return
        "HEAD must hold 'ref: refs/heads/<branch>' (e.g. 'ref: refs/heads/main') or a 40-hex commit id; "
        + "'git --git-dir=.mvc branch' lists the branches"
    case .fileReplaced:
      return
        "'mvc status' shows how the model now differs from HEAD; run the command again once the other "
        + "program is done"
    case .remoteNotFound: return "'mvc remote -v' lists the configured remotes"
    case .remoteExists: return "remove it first with 'mvc remote remove NAME'"
    case .invalidRemoteName:
      return "remote names follow git's rules: no spaces, '..', '~', '^', ':', '/' at either end or leading '-'"
    case .transport:
      return "check the URL ('mvc remote -v') and that the remote is reachable, then try again; nothing was changed"
    case .pushRejected:
      return "the remote has commits you do not have; 'mvc pull' first, then push again"
    case .diverged: return "combine the histories with 'mvc merge' (or 'mvc pull --rebase'), then push"
    case .noRemoteBranch(let remote, _):
      return "'mvc fetch \(remote)' updates what is known of it; name one of its branches"
    case .detachedHead: return "switch to a branch, or name the branch explicitly"
    case .destinationExists: return "clone into a new or empty directory"
    case .emptyRemote: return "push a branch to it first, or check the URL"
    case .apply(let error, _):
      return error.recoverySuggestion
    case .storedData(let error, _, _):
      return error.recoverySuggestion ?? "run 'mvc fsck'; the repository may be damaged"
    case .cannotAccess:
      return "check the path and its permissions, then try again"
    case .tensorNotInCommit(_, let revision):
      return "tensor names are those of the model file; 'mvc show \(revision)' lists the tensors a commit changes"
    case .notAFloatTensor:
      return "only F64, F32, F16 and BF16 tensors have deltas; leave this tensor out"
    case .notAMatrix:
      return "pick a 2-D weight (a Linear or Conv1D layer); 'mvc export --delta FILE --dense' exports any tensor"
    case .tensorAddedOrRemoved:
      return "add or remove tensors with 'mvc commit' on the branch itself; 'mvc log --stat' shows where it happened"
    case .rootCommit:
      return "pick a later commit; 'mvc log --oneline' lists them"
    case .unrelatedHistories:
      return "both histories must start from the same base model; 'mvc log --oneline REV' shows the other one"
    case .mergeCommitInRange:
      return "use 'mvc merge' to combine the histories instead"
    case .cannotResolve:
      return "use --strategy sum, which adds the deltas without re-solving"
    case .contradictoryBisectMarks:
      return "'mvc bisect log' shows the marks; 'mvc bisect reset' and start again with the right ones"
    case .bisectRunNeedsMarks:
      return "mark them first with 'mvc bisect bad [REV]' and 'mvc bisect good REV'"
    case .programNotRunnable:
      return "the bisection is unchanged; name an executable file (a script needs 'chmod +x' and a '#!' line)"
    case .bisectRunAborted:
      return "the bisection is kept ('mvc bisect log' shows it); exit 125 skips a commit, 1-127 marks it bad"
    case .modelOutsideRepository:
      return "run 'mvc init' in a folder that holds the model, or pass -C <dir>"
    case .outputIsWorkingModel:
      return "use 'mvc checkout REV' (or add --force to overwrite it and leave HEAD where it is)"
    case .notSharded:
      return "leave out --shards; the whole file is written"
    case .shardOutOfRange(_, let count):
      return "shards are numbered 1 to \(count)"
    case .noTensorMatches:
      return "--tensors takes a glob over the model's tensor names, e.g. '*.mlp.*'"
    case .nothingToExport:
      return "'mvc log --stat' shows which commits change tensors; export a range that holds one"
    case .notAnAncestor:
      return "export takes FROM..TO with FROM an ancestor of TO; 'mvc log --oneline TO' lists them"
    case .notLowRank:
      return "use 'mvc export --delta FILE --dense'"
    case .inputShapeMismatch:
      return "keys are n×d_in, values n×d_out and the covariance d_in×d_in .npy arrays, "
        + "with d_in and d_out of the tensor (a Linear [d_out, d_in] or a Conv1D [d_in, d_out])"
    case .missingCovariance:
      return "give the covariance (--cov) or keys to estimate it from (--cov-keys)"
    case .invalidMethodName:
      return "name the editor in lowercase, e.g. --method rome, memit or emmet"
    case .invalidProvenance:
      return "keys are n×d_in and values n×d_out for the one 2-D tensor edited, the covariance d_in×d_in, "
        + "hyper-parameters a JSON object; nothing was committed"
    case .scaleDisagreesWithConfig:
      return "leave out --scale to use the adapter's own, or move the file away from that adapter_config.json"
    case .loraScaleUnknown:
      return "give the scale ('mvc commit --delta FILE --scale ALPHA_OVER_R'), or put the adapter's "
        + "adapter_config.json beside the file"
    case .sideFileTooLarge:
      return "move the file out of the model's folder; nothing was changed"
    case .accumulatorUnknown:
      return "alphaedit and encore need the keys of every edit present in the state; edit from a state "
        + "without that commit ('mvc switch -c NAME REV'), or record its keys ('mvc commit-factors --keys')"
    case .resavedModelFolder:
      return "keep one layout: delete the stale index or the stale model.safetensors; a repository tracks "
        + "one layout, so a folder saved the other way is tracked by a new 'mvc init' (nothing was changed)"
    }
  }
}

extension RepositoryError {
  /// Runs Apply's work on one tensor; an `ApplyError` is carried as `.apply` naming the tensor.
  static func applying<T>(to tensor: String, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let error as ApplyError {
      throw RepositoryError.apply(error, tensor: tensor)
    }
  }

  /// Runs a Foundation file operation (`FileManager`, `Data.write`, `FileHandle`) on `path`; what it
  /// throws (a `CocoaError`, which has no hint) becomes `.cannotAccess` naming the operation and path.
  static func fileSystem<T>(_ operation: String, _ path: String, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let error as RepositoryError {
      throw error
    } catch {
      throw RepositoryError.cannotAccess(path: path, operation: operation, reason: error.localizedDescription)
    }
  }

  /// Adds what mvc was doing to a libgit2 failure that has no context yet. Optional: without it
  /// the failure still reaches the user as `.git` with libgit2's function, subject and message.
  static func wrap<T>(_ context: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch RepositoryError.git(let error, nil) {
      throw RepositoryError.git(error, context: context())
    }
  }
}
