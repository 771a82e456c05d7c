import Foundation

/// What breaks git's CodingGuidelines in an error's message, and whether it lacks a hint: the
/// description is one line, starts lowercase and has no trailing period; the hint
/// (`recoverySuggestion`) is one non-empty line. Empty when the error reads as it should.
public func gitStyleProblems(_ error: some LocalizedError) -> [String] {
  var problems: [String] = []
  let description = error.errorDescription ?? ""
  if description.isEmpty { problems.append("no description") }
  if description.contains("\n") { problems.append("description has more than one line") }
  if description.first?.isUppercase == true { problems.append("description starts uppercase") }
  if description.hasSuffix(".") { problems.append("description ends with a period") }
  let hint = error.recoverySuggestion ?? ""
  if hint.isEmpty { problems.append("no hint") }
  if hint.contains("\n") { problems.append("hint has more than one line") }
  return problems
}
