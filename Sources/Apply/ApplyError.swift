// `LocalizedError` lives in FoundationEssentials; this is the only file in Apply that needs it,
// and Foundation on Linux re-exports it, so callers that `import Foundation` see the same protocol.
import FoundationEssentials

/// Everything Apply can throw: input a file or a user can cause, and numerical failures reported by
/// LAPACK (`info > 0`). Programmer errors (mismatched buffer sizes, LAPACK `info < 0`) are
/// `precondition` failures instead.
///
/// Apply works on pointers and has no tensor names; the caller (EditVCS) wraps these cases with the
/// tensor name when it reports them.
public enum ApplyError: Error, LocalizedError, Equatable, Sendable {
  /// An input element is NaN or ±Inf, so no BLAS/LAPACK call was made.
  /// - `operation`: what was being computed, e.g. `"low-rank factorization"`.
  /// - `elementIndex`: the row-major index of the first non-finite element.
  case nonFinite(operation: String, elementIndex: Int)

  /// A dimension does not fit the 32-bit integers OpenBLAS and LAPACKE take (`Int32.max`).
  case dimensionTooLarge(operation: String, rows: Int, cols: Int)

  /// A LAPACK routine returned `info > 0`: a numerical failure, not a usage error.
  /// - `function`: the LAPACKE routine, e.g. `"LAPACKE_dgesdd"`.
  /// - `info`: its return code.
  /// - `meaning`: what that code means for this routine, in words.
  case lapackFailure(function: String, info: Int, meaning: String)

  /// One line, lowercase, no trailing period (git's CodingGuidelines).
  public var errorDescription: String? {
    switch self {
    case .nonFinite(let operation, let index):
      return "cannot run \(operation): element \(index) is NaN or infinite"
    case .dimensionTooLarge(let operation, let rows, let cols):
      return
        "cannot run \(operation): shape [\(rows), \(cols)] exceeds the BLAS limit of \(Int32.max)"
    case .lapackFailure(let function, let info, let meaning):
      return "'\(function)' failed with info \(info): \(meaning)"
    }
  }

  /// The next step for the user.
  public var recoverySuggestion: String? {
    switch self {
    case .nonFinite:
      return
        "the tensor holds NaN or Inf; check the edit that produced it, or store the tensor densely"
    case .dimensionTooLarge:
      return "store this tensor densely; it is too large to factorize"
    case .lapackFailure:
      return "store this tensor densely; the factorization did not converge on this input"
    }
  }
}
