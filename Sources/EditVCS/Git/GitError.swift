internal import CGit2

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

/// libgit2 needs one `git_libgit2_init` per process before any other call (platform notes G6).
let libgit2InitCount: Int32 = git_libgit2_init()

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
