import Foundation

extension EditRepository {
  /// The input of `mvc plot`: along the first-parent history ending at `tip`, each commit's
  /// relative update norm per tensor, the norm outliers, reverted commits, and the culprit
  /// (given, or the first bad commit of the current bisection's log).
  public func normPlotInput(tip: ObjectID, culprit: ObjectID?) throws -> NormPlotInput {
    let history = Array(try log(from: tip, firstParentOnly: true).reversed())
    let index = Dictionary(uniqueKeysWithValues: history.enumerated().map { ($1.commit.id, $0) })
    var series: [String: [Double?]] = [:]
    for (i, summary) in history.enumerated() {
      for change in summary.record?.changes ?? [] {
        guard let norms = change.norms else { continue }
        series[change.name, default: Array(repeating: nil, count: history.count)][i] = norms.relativeFrobenius
      }
    }
    var reverted = Set<Int>()
    for summary in history where summary.record?.method == "revert" {
      if let source = summary.record?.details?["source"].flatMap(ObjectID.init(hex:)), let i = index[source] {
        reverted.insert(i)
      }
    }
    let flagged = Set(NormOutliers.flags(history).compactMap { index[$0.commit] })
    var culpritIndex = culprit.flatMap { index[$0] }
    if culpritIndex == nil, let log = try? bisectLog(),
      let line = log.split(separator: "\n").last(where: { $0.hasPrefix("# first bad commit: [") })
    {
      let hex = line.dropFirst("# first bad commit: [".count).prefix(40)
      culpritIndex = ObjectID(hex: String(hex)).flatMap { index[$0] }
    }
    return NormPlotInput(
      commitLabels: history.map(\.commit.id.shortHex),
      series: series.keys.sorted().map { NormPlotSeries(tensor: $0, values: series[$0] ?? []) },
      culpritIndex: culpritIndex, revertedIndices: reverted, flaggedIndices: flagged,
      title: "‖ΔW‖_F / ‖W‖_F per commit (first-parent history of \(tip.shortHex))")
  }
}
