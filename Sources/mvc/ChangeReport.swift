import EditVCS
import Foundation

/// What a new commit stored, one line per changed tensor (commit, revert, cherry-pick, edit).
enum ChangeReport {
  static func print(_ result: CommitResult, repository: EditRepository) {
    let branch = (try? repository.head().branchName) ?? nil
    let summary = (try? repository.commitInfo(result.commit).summary) ?? ""
    output("[\(branch ?? "detached HEAD") \(result.commit.shortHex)] \(summary)")
    for change in result.record.changes {
      var line = " \(change.storage.padding(toLength: 8, withPad: " ", startingAt: 0)) \(change.name)"
      if let rank = change.rank { line += "  rank \(rank)" }
      if let norms = change.norms { line += String(format: "  ‖ΔW‖/‖W‖ %.3g", norms.relativeFrobenius) }
      if let residual = change.residualNonzeroCount, residual > 0 { line += "  residual \(residual) elements" }
      line += "  stored \(Format.bytes(change.storedByteCount))"
      output(line)
    }
  }
}
