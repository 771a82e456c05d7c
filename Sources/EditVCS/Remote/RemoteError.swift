import Foundation

/// Failures of remote operations (remote, push, fetch, pull, clone), naming the remote or URL.
public enum RemoteError: Error, LocalizedError, Equatable {
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

  public var errorDescription: String? {
    switch self {
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
    case .destinationExists(let path): return "destination path '\(path)' already exists and is not an empty directory"
    case .emptyRemote(let url): return "'\(url)' has no branches to clone"
    }
  }

  public var recoverySuggestion: String? {
    switch self {
    case .remoteNotFound: return "'mvc remote -v' lists the configured remotes"
    case .remoteExists: return "remove it first with 'mvc remote remove NAME'"
    case .pushRejected:
      return "the remote has commits you do not have; 'mvc pull' first, then push again"
    case .diverged: return "combine the histories with 'mvc merge' (or 'mvc pull --rebase'), then push"
    case .detachedHead: return "switch to a branch, or name the branch explicitly"
    default: return nil
    }
  }
}
