import Foundation

/// Everything the repository layer can refuse, with the subject named and the next step given.
/// Errors from the tensor files (`DeltaStoreError`) and libgit2 (`GitError`) pass through
/// wrapped in `.git` or as they are.
public enum RepositoryError: Error, LocalizedError, Equatable {
  case notARepository(searchedFrom: String)
  case alreadyInitialized(path: String)
  case unsupportedFormat(found: Int, supported: Int)
  case missingWorkingModel(path: String)
  case unknownRevision(String, commitCount: Int?)
  case emptyHistory
  case corruptObject(what: String, reason: String)
  case git(GitError, context: String)
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
  case invalidArgument(String)
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
      return "\(context): \(error.function) failed: \(error.message)"
    case .locked(let path, let pid):
      return "another mvc is running\(pid.map { " (pid \($0))" } ?? "") on '\(path)'"
    case .uncommittedChanges(let tensors):
      let shown = tensors.prefix(3).map { "'\($0)'" }.joined(separator: ", ")
      return
        "the working model has uncommitted changes in \(tensors.count) tensor\(tensors.count == 1 ? "" : "s") (\(shown)\(tensors.count > 3 ? ", ..." : ""))"
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
    case .invalidArgument(let text):
      return text
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
    case .loraScaleUnknown(let file):
      return "'\(file)' holds LoRA factors but no adapter_config.json is beside it: their scale lora_alpha/r is unknown"
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
    case .invalidArgument:
      return nil
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
    case .loraScaleUnknown:
      return "give the scale ('mvc commit --delta FILE --scale ALPHA_OVER_R'), or put the adapter's "
        + "adapter_config.json beside the file"
    }
  }
}

extension RepositoryError {
  /// Wraps a libgit2 failure with what mvc was doing.
  static func wrap<T>(_ context: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let error as GitError {
      throw RepositoryError.git(error, context: context())
    }
  }
}
