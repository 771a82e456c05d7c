internal import CGit2
import Foundation

/// A libgit2 call that failed: the function, its return code and libgit2's own message.
///
/// Not an `Error` of its own: `check` and every other failure in `Git/` throw it as the payload of
/// ``RepositoryError/git(_:context:)``, so a libgit2 failure reaches the user as a `RepositoryError`
/// with a hint by construction, whether or not the caller adds a context with `RepositoryError.wrap`.
public struct GitError: Equatable, Sendable, CustomStringConvertible {
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
  /// A reference that was to be created already exists (a compare-and-swap create lost a race).
  public var isExists: Bool { code == GIT_EEXISTS.rawValue }
  /// The remote refused a push that is not a fast-forward.
  public var isNonFastForward: Bool { code == GIT_ENONFASTFORWARD.rawValue }

  /// What libgit2 was asked to do, on what, and what it said.
  public var description: String {
    let on = subject.map { " on '\($0.prefix(200))'" } ?? ""
    return "\(function)\(on) failed: \(message)"
  }

  /// The next step for the user.
  public var recoverySuggestion: String {
    if isLocked {
      return "another git process may be writing to .mvc; wait for it, or remove the stale .lock file it names"
    }
    if isNotFound { return "an object or reference is missing: 'mvc fsck' checks the repository" }
    if isInvalidSpec || isAmbiguous { return "'mvc log --oneline' lists the commits; use a longer id or a branch name" }
    return "'mvc fsck' checks the repository"
  }
}

extension RepositoryError {
  /// A failure inside `Git/` that has no libgit2 return code of its own (a NULL handle, zlib, a
  /// system call), thrown like one; `code` defaults to `GIT_ERROR`.
  static func libgit2(
    code: Int32 = GIT_ERROR.rawValue, function: String, subject: String?, message: String
  ) -> RepositoryError {
    .git(GitError(code: code, function: function, subject: subject, message: message), context: nil)
  }
}

/// libgit2 needs one `git_libgit2_init` per process before any other call (platform notes G6).
///
/// Pack files are read through mmap windows whose touched pages stay resident until a window is
/// unmapped; libgit2's 64-bit defaults (1 GiB windows, 8 GiB mapped) would let a checkout from
/// a packed repository hold hundreds of MiB of pack. 4 MiB windows, at most 8 MiB mapped (an
/// object is inflated a window at a time; the limit is a target, a window in use is never
/// unmapped), keep that well within the memory budget: 8 MiB windows up to 32 MiB mapped kept
/// `mvc clone` of a model of 16 MiB tensors 25–30 MiB over its bound of 96 MiB.
let libgit2InitCount: Int32 = {
  let count = git_libgit2_init()
  _ = mvc_git_limit_pack_windows(4 << 20, 8 << 20)
  return count
}()

/// Throws `RepositoryError.git` for a negative libgit2 return code; positive values are counts, not errors.
/// Reads `git_error_last()` at once, on the same thread, as libgit2's threading notes require.
@discardableResult
func check(_ code: Int32, _ function: StaticString, _ subject: @autoclosure () -> String? = nil)
  throws -> Int32
{
  guard code < 0 else { return code }
  let message =
    git_error_last().flatMap { error in error.pointee.message.map { String(cString: $0) } }
    ?? "no message from libgit2"
  throw RepositoryError.libgit2(code: code, function: "\(function)", subject: subject(), message: message)
}
