import Foundation

/// The weight-only early warning for disabling edits.
///
/// A disabling edit's update norm is orders of magnitude above the others (ROME's
/// `k_sᵀC⁻¹k̄ → 0`: ‖ΔW‖_F ≈ 3,100 against tens for healthy edits; editing-science §2.3, §4.5).
/// A change is flagged when its ‖ΔW‖_F exceeds `factor` (10) times the median of the earlier
/// changes of the same tensor, once at least `minimumHistory` (3) of them exist; a tensor with
/// fewer earlier changes is compared with the median over all tensors' earlier changes.
public enum NormOutliers {
  package static let factor = 10.0
  package static let minimumHistory = 3

  public struct Flag: Hashable, Sendable {
    public var commit: ObjectID
    public var tensor: String
    /// The change's ‖ΔW‖_F divided by the median it was compared with.
    public var ratioToMedian: Double
  }

  /// Flags over `history`, given oldest first.
  public static func flags(_ history: [CommitSummary]) -> [Flag] {
    var perTensor: [String: [Double]] = [:]
    var all: [Double] = []
    var flags: [Flag] = []
    for summary in history {
      // A revert of a disabling edit is as large as the edit itself; it is the cure, not a warning.
      if summary.record?.method == "revert" { continue }
      for change in summary.record?.changes ?? [] {
        guard change.storage == "low_rank", let norm = change.norms?.frobenius, norm.isFinite else { continue }
        let earlier = perTensor[change.name] ?? []
        let reference = earlier.count >= minimumHistory ? earlier : (all.count >= minimumHistory ? all : [])
        if !reference.isEmpty {
          let median = Self.median(reference)
          if median > 0, norm > factor * median {
            flags.append(Flag(commit: summary.commit.id, tensor: change.name, ratioToMedian: norm / median))
          }
        }
        perTensor[change.name, default: []].append(norm)
        all.append(norm)
      }
    }
    return flags
  }

  static func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let mid = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  }
}
