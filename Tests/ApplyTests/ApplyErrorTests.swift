import Apply
import Foundation
import TestSupport
import Testing

/// `ApplyError` is Apply's one error type (the edit solvers' failures included); every case reads
/// as git's messages do and names a next step.
@Suite struct ApplyErrorTests {
  /// One value of every case; `caseIndex` is an exhaustive switch, so a new case needs a sample.
  static let samples: [ApplyError] = [
    .nonFinite(operation: "low-rank factorization", elementIndex: 5),
    .dimensionTooLarge(operation: "low-rank factorization", rows: 1 << 32, cols: 2),
    .lapackFailure(function: "LAPACKE_dgesdd", info: 3, meaning: "did not converge"),
    .shapeMismatch(input: "keys", expected: "[4, 8]", actual: "30 elements"),
    .invalidDimension(name: "d_in", value: 0),
    .invalidParameter(name: "lambda", value: -1, requirement: "a finite positive value"),
    .nonFiniteInput(input: "keys", index: 57, rowLength: 40),
    .covarianceNotPositiveDefinite(
      matrix: "C", dimension: 8, leadingMinor: 3, reciprocalCondition: nil, lambda: 20_000),
    .keysCollinear(keyIndex: 2, editCount: 3, reciprocalCondition: 1e-18),
    .romeDenominatorNotPositive(denominator: 0),
  ]

  static func caseIndex(_ error: ApplyError) -> Int {
    switch error {
    case .nonFinite: 0
    case .dimensionTooLarge: 1
    case .lapackFailure: 2
    case .shapeMismatch: 3
    case .invalidDimension: 4
    case .invalidParameter: 5
    case .nonFiniteInput: 6
    case .covarianceNotPositiveDefinite: 7
    case .keysCollinear: 8
    case .romeDenominatorNotPositive: 9
    }
  }
  static let caseCount = 10

  @Test func everyCaseHasASample() {
    #expect(Set(Self.samples.map(Self.caseIndex)) == Set(0..<Self.caseCount))
  }

  @Test(arguments: samples)
  func descriptionFollowsGitsGuidelinesAndHasAHint(_ error: ApplyError) {
    #expect(gitStyleProblems(error).isEmpty, "\(error.errorDescription ?? "")")
  }

  /// Representative failures of the factorization and of the solvers, matched on their cases.
  @Test func failuresAreTypedCases() {
    var delta: [Float] = Array(repeating: 1, count: 12)
    delta[7] = .infinity
    #expect(throws: ApplyError.nonFinite(operation: "low-rank factorization", elementIndex: 7)) {
      try delta.withUnsafeBufferPointer { buffer in
        guard let base = buffer.baseAddress else { return }
        _ = try Factorization.lowRank(of: base, rows: 3, cols: 4, noiseRMS: 0, maxRank: 2)
      }
    }
    #expect(throws: ApplyError.invalidDimension(name: "m", value: 0)) {
      _ = try EditSolvers.secondMoment(ofKeys: [], count: 0, dIn: 4)
    }
    #expect(
      throws: ApplyError.shapeMismatch(input: "preservation keys", expected: "[2, 4]", actual: "7 elements")
    ) {
      _ = try EditSolvers.secondMoment(ofKeys: Array(repeating: 1, count: 7), count: 2, dIn: 4)
    }
    #expect(throws: ApplyError.nonFiniteInput(input: "preservation keys", index: 5, rowLength: 4)) {
      var keys: [Double] = Array(repeating: 1, count: 8)
      keys[5] = .nan
      _ = try EditSolvers.secondMoment(ofKeys: keys, count: 2, dIn: 4)
    }
  }
}
