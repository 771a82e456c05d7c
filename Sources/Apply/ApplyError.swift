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

  // Why an edit could not be solved (`EditSolvers`): caused by the inputs, never by the code.

  /// `input` does not have the shape the others imply.
  case shapeMismatch(input: String, expected: String, actual: String)
  /// A dimension is not positive or exceeds what BLAS can index (Int32).
  case invalidDimension(name: String, value: Int)
  /// λ or μ is out of range.
  case invalidParameter(name: String, value: Double, requirement: String)
  /// `input` holds NaN or ±Inf; `index` is the first such element, `rowLength` its row width.
  case nonFiniteInput(input: String, index: Int, rowLength: Int)
  /// The d_in×d_in matrix `matrix` is not (numerically) positive definite. `leadingMinor` is the
  /// 1-based order of the first non-positive leading minor (`dpotrf` info), `nil` when Cholesky
  /// succeeded but the condition estimate `reciprocalCondition` is below the limit.
  case covarianceNotPositiveDefinite(
    matrix: String, dimension: Int, leadingMinor: Int?, reciprocalCondition: Double?,
    lambda: Double)
  /// EMMET's K_EᵀC⁻¹K_E + μI is singular: key `keyIndex` (0-based) is (nearly) a linear combination
  /// of keys 0..<keyIndex in the C⁻¹ inner product.
  case keysCollinear(keyIndex: Int, editCount: Int, reciprocalCondition: Double)
  /// ROME's kᵀC⁻¹k is not positive (a zero key, or C lost definiteness in rounding).
  case romeDenominatorNotPositive(denominator: Double)

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
    case .shapeMismatch(let input, let expected, let actual):
      return "input '\(input)' has shape \(actual), expected \(expected)"
    case .invalidDimension(let name, let value):
      return "dimension '\(name)' is \(value), expected 1...\(Int32.max)"
    case .invalidParameter(let name, let value, let requirement):
      return "parameter '\(name)' is \(value), expected \(requirement)"
    case .nonFiniteInput(let input, let index, let rowLength):
      let width = max(rowLength, 1)
      return "input '\(input)' has a non-finite value at element \(index)"
        + " (row \(index / width), column \(index % width))"
    case .covarianceNotPositiveDefinite(let matrix, let dimension, let minor, let rcond, _):
      if let minor {
        return "'\(matrix)' (\(dimension)×\(dimension)) is not positive definite:"
          + " leading minor \(minor) is not positive"
      }
      return "'\(matrix)' (\(dimension)×\(dimension)) is numerically singular:"
        + " reciprocal condition \(rcond ?? 0)"
    case .keysCollinear(let keyIndex, let editCount, let rcond):
      return "edit key \(keyIndex) of \(editCount) is (nearly) a linear combination of keys"
        + " 0..<\(keyIndex): K_Eᵀ·C⁻¹·K_E is singular (reciprocal condition \(rcond))"
    case .romeDenominatorNotPositive(let denominator):
      return "rome denominator kᵀ·C⁻¹·k is \(denominator), expected a positive value"
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
    case .shapeMismatch:
      return "keys are n×d_in rows, values n×d_out rows, the covariance d_in×d_in and the weight"
        + " d_out×d_in (d_in×d_out when transposed), all row-major"
    case .invalidDimension:
      return "check the tensor's shape in the model file"
    case .invalidParameter(let name, _, _):
      return name == "lambda"
        ? "λ is mom2_update_weight from the edit's hparams (e.g. 20000 for MEMIT on GPT-2 XL)"
        : "μ is emmet_lambda from the edit's hparams (0.1 in the authors' code)"
    case .nonFiniteInput(let input, _, _):
      return "the '\(input)' data is corrupt or overflowed when it was computed; recompute it"
    case .covarianceNotPositiveDefinite(_, let dimension, _, _, let lambda):
      return "λ (\(lambda)) may be too small, or the preservation keys too few: fewer than"
        + " \(dimension) linearly independent keys make C₀ singular"
    case .keysCollinear(let keyIndex, _, _):
      return "drop or merge edit \(keyIndex) (duplicate subject?), or use a ridge μ > 0"
    case .romeDenominatorNotPositive:
      return "the edit key is zero or C is not positive definite; check the key and the covariance"
    }
  }
}
