internal import CGit2
import Foundation

/// A libgit2 call that failed: the function, its return code and libgit2's own message.
public struct GitError: Error, Equatable, Sendable {
  public var code: Int32
  public var function: String
  public var subject: String?
  public var message: String

  public var isNotFound: Bool { code == GIT_ENOTFOUND.rawValue }
  public var isAmbiguous: Bool { code == GIT_EAMBIGUOUS.rawValue }
  public var isInvalidSpec: Bool { code == GIT_EINVALIDSPEC.rawValue }
  public var isLocked: Bool { code == GIT_ELOCKED.rawValue }
  /// A compare-and-swap ref update found another value than expected.
  public var isModified: Bool { code == GIT_EMODIFIED.rawValue }
}

extension GitError: LocalizedError {
  /// What libgit2 was asked to do, on what, and what it said.
  public var errorDescription: String? {
    let on = subject.map { " on '\($0.prefix(200))'" } ?? ""
    return "\(function)\(on) failed: \(message)"
  }

  public var recoverySuggestion: String? {
    if isLocked {
      return "another git process may be writing to .mvc; wait for it, or remove the stale .lock file it names"
    }
    if isNotFound { return "an object or reference is missing: 'mvc fsck' checks the repository" }
    if isInvalidSpec || isAmbiguous { return "'mvc log --oneline' lists the commits; use a longer id or a branch name" }
    return "'mvc fsck' checks the repository"
  }
}

/// libgit2 needs one `git_libgit2_init` per process before any other call (platform notes G6).
///
/// Pack files are read through mmap windows whose touched pages stay resident until a window is
/// unmapped; libgit2's 64-bit defaults (1 GiB windows, 8 GiB mapped) would let a checkout from
/// a packed repository hold hundreds of MiB of pack. 8 MiB windows, at most 32 MiB mapped,
/// keep that within the memory budget of a tensor or two.
let libgit2InitCount: Int32 = {
  let count = git_libgit2_init()
  _ = mvc_git_limit_pack_windows(8 << 20, 32 << 20)
  return count
}()

/// Throws a `GitError` for a negative libgit2 return code; positive values are counts, not errors.
/// Reads `git_error_last()` at once, on the same thread, as libgit2's threading notes require.
@discardableResult
func check(_ code: Int32, _ function: StaticString, _ subject: @autoclosure () -> String? = nil)
  throws -> Int32
{
  guard code < 0 else { return code }
  let message =
    git_error_last().flatMap { error in error.pointee.message.map { String(cString: $0) } }
    ?? "no message from libgit2"
  throw GitError(code: code, function: "\(function)", subject: subject(), message: message)
}
