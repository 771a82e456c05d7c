import Foundation

/// Everything `mvc report` shows, gathered from the repository.
public struct HistoryReportInput: Sendable {
  public struct Row: Sendable {
    public var summary: CommitSummary
    /// Facts recorded with the edit (`edit-data/facts.jsonl`), at most 2 KiB of them.
    public var facts: String?
    /// Short flags: norm outliers, drift, reverted, bisection marks, culprit.
    public var flags: [String]
  }

  public var title: String
  /// The tip whose first-parent history the charts follow.
  public var head: ObjectID
  /// Every commit reachable from a branch, tag or HEAD, newest first (topological).
  public var rows: [Row]
  /// Signals along the first-parent history of HEAD.
  public var signals: SignalReport
  /// Mean and minimum retention of the recorded edits at sampled commits of that history:
  /// (position in `signals.commits`, mean, minimum).
  public var retention: [(position: Int, mean: Double, minimum: Double)]
  /// The relative-norm plot (`mvc plot`) of that history.
  public var normPlotSVG: String
  /// The bisection: in progress (its state and log), or nil.
  public var bisectLog: String?
  public var bisectState: BisectState?
  /// The first bad commit: given, or found by the bisection.
  public var culprit: ObjectID?
}

extension EditRepository {
  /// Gathers ``HistoryReportInput`` for `mvc report` (retention at ≤ `retentionSamples` commits).
  public func historyReportInput(
    tip head: ObjectID, culprit given: ObjectID?, retentionSamples: Int = 40
  ) throws -> HistoryReportInput {
    let commits = try log(from: try allTips() + [head], limit: nil, firstParentOnly: false, topoOrder: true)
    let chronological = Array(commits.reversed())
    var flags: [ObjectID: [String]] = [:]
    for flag in NormOutliers.flags(chronological) {
      flags[flag.commit, default: []].append(String(format: "outlier %.0f× (%@)", flag.ratioToMedian, flag.tensor))
    }
    let signals = try self.signals(at: head)
    for p in signals.flags {
      flags[p.commit, default: []].append(String(format: "drift %.2f× (%@)", p.driftRatio ?? 0, p.tensor))
    }
    for summary in commits where summary.record?.method == "revert" {
      if let source = summary.record?.details?["source"].flatMap(ObjectID.init(hex:)) {
        flags[source, default: []].append("reverted by \(summary.commit.id.shortHex)")
      }
    }
    let bisectLog = try? self.bisectLog()
    let bisectState = try self.bisectState()
    var culprit = given
    if culprit == nil, let bisectLog,
      let line = bisectLog.split(separator: "\n").last(where: { $0.hasPrefix("# first bad commit: [") })
    {
      culprit = ObjectID(hex: String(line.dropFirst("# first bad commit: [".count).prefix(40)))
    }
    if let bisectState {
      if let bad = bisectState.bad { flags[bad, default: []].append("bisect: bad") }
      for good in bisectState.good { flags[good, default: []].append("bisect: good") }
      for skipped in bisectState.skipped { flags[skipped, default: []].append("bisect: skip") }
    }
    if let culprit { flags[culprit, default: []].insert("first bad commit", at: 0) }
    let rows = try commits.map { summary in
      HistoryReportInput.Row(
        summary: summary, facts: try facts(of: summary.commit.id), flags: flags[summary.commit.id] ?? [])
    }
    // Retention at evenly spaced commits of the first-parent history that have recorded edits.
    var retention: [(Int, Double, Double)] = []
    let count = signals.commits.count
    if count > 1 {
      let step = max(1, (count - 1 + retentionSamples - 1) / retentionSamples)
      var positions = Array(stride(from: 1, to: count, by: step))
      if positions.last != count - 1 { positions.append(count - 1) }
      for position in positions {
        let score = try self.score(at: signals.commits[position].id)
        if let mean = score.meanRetention, let minimum = score.minimumRetention {
          retention.append((position, mean, minimum))
        }
      }
    }
    let plot = NormPlot.svg(try normPlotInput(tip: head, culprit: culprit))
    let name = ((gitDirectory as NSString).deletingLastPathComponent as NSString).lastPathComponent
    return HistoryReportInput(
      title: "mvc history of \(name)", head: head, rows: rows, signals: signals, retention: retention,
      normPlotSVG: plot, bisectLog: bisectLog, bisectState: bisectState, culprit: culprit)
  }

  func facts(of commit: ObjectID) throws -> String? {
    let root = try git.readTree(try commitInfo(commit).tree)
    guard let data = root.first(where: { $0.name == TreeEntryName.editData && $0.isTree }),
      let facts = try git.readTree(data.id).first(where: { $0.name == EditDataName.facts && !$0.isTree })
    else { return nil }
    let bytes = try git.readBlob(facts.id)
    return String(decoding: bytes.prefix(2048), as: UTF8.self) + (bytes.count > 2048 ? "…" : "")
  }
}

/// Renders ``HistoryReportInput`` as one self-contained HTML page: inline CSS and SVG, no
/// script, no external reference, deterministic for a given repository state.
public enum HistoryReport {
  public static func html(_ input: HistoryReportInput) -> String {
    let e = NormPlot.escape
    var out = """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8">
      <meta name="viewport" content="width=device-width, initial-scale=1">
      <title>\(e(input.title))</title>
      <style>
      body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
      h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
      table{border-collapse:collapse;width:100%;font-size:13px} th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;vertical-align:top}
      th{background:#f6f6f6;position:sticky;top:0} code,.mono{font-family:ui-monospace,monospace;font-size:12px}
      .flag{display:inline-block;background:#fff3e0;border:1px solid #ff7f0e;border-radius:3px;padding:0 4px;margin:1px;font-size:12px}
      .culprit{background:#fde0e0;border-color:#d62728} .ref{display:inline-block;background:#e8f0fe;border-radius:3px;padding:0 4px;margin-right:3px;font-size:12px}
      .charts{display:flex;flex-wrap:wrap;gap:12px} .charts svg{border:1px solid #eee;background:#fff}
      tr.culprit td{background:#fde0e0} pre{background:#f8f8f8;padding:8px;overflow:auto;font-size:12px}
      details summary{cursor:pointer}
      </style></head><body>
      <h1>\(e(input.title))</h1>
      <p>tip <code>\(input.head.hex)</code> · \(input.rows.count) commits · signals over \(input.signals.commits.count) \
      first-parent commits, \(input.signals.tensors.count) edited tensors</p>

      """
    out += "<h2 id=\"bisection\">Bisection</h2>\n"
    if let culprit = input.culprit {
      let summary = input.rows.first { $0.summary.commit.id == culprit }?.summary.commit.summary ?? ""
      out +=
        "<p id=\"culprit\"><span class=\"flag culprit\">first bad commit</span> <code>\(culprit.hex)</code> \(e(summary))</p>\n"
    } else if input.bisectState != nil {
      out += "<p>running: no first bad commit yet</p>\n"
    } else {
      out += "<p>no bisection in progress</p>\n"
    }
    if let state = input.bisectState {
      out += "<p>bad: <code>\(state.bad?.shortHex ?? "-")</code> · good: "
      out += state.good.map { "<code>\($0.shortHex)</code>" }.joined(separator: " ")
      out +=
        state.skipped.isEmpty
        ? "" : " · skipped: " + state.skipped.map { "<code>\($0.shortHex)</code>" }.joined(separator: " ")
      out += "</p>\n"
    }
    if let log = input.bisectLog, !log.isEmpty {
      out += "<details><summary>bisect log</summary><pre>\(e(log))</pre></details>\n"
    }
    out += "<h2 id=\"graph\">Commit graph</h2>\n" + graphSVG(input) + "\n"
    out += "<h2 id=\"plots\">Signals and retention along the history of HEAD</h2>\n<div class=\"charts\">\n"
    out += chartsSVG(input) + "</div>\n"
    out += "<h2 id=\"commits\">Commits</h2>\n<table><thead><tr><th>commit</th><th>message</th><th>method</th>"
    out += "<th>tensors · rank · ‖ΔW‖/‖W‖ · stored</th><th>facts</th><th>flags</th></tr></thead><tbody>\n"
    for row in input.rows {
      let c = row.summary.commit
      let isCulprit = c.id == input.culprit
      out += "<tr class=\"commit\(isCulprit ? " culprit" : "")\" id=\"c-\(c.id.hex)\"><td><code>\(c.id.shortHex)</code>"
      for ref in row.summary.decorations { out += "<br><span class=\"ref\">\(e(ref))</span>" }
      out += "</td><td>\(e(c.summary))"
      let rest = c.message.split(separator: "\n", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
      if !rest.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
        out += "<details><summary>more</summary><pre>\(e(rest))</pre></details>"
      }
      out += "</td><td>\(e(row.summary.record?.method ?? "-"))</td><td>"
      var total = 0
      for change in row.summary.record?.changes ?? [] {
        total += change.storedByteCount
        var line = "<span class=\"mono\">\(e(change.name))</span> \(e(change.storage))"
        if let rank = change.rank { line += " r\(rank)" }
        if let n = change.norms { line += String(format: " %.3g", n.relativeFrobenius) }
        out += line + "<br>"
      }
      if total > 0 { out += "stored \(byteText(total))" }
      out += "</td><td>"
      if let facts = row.facts { out += "<pre>\(e(facts))</pre>" }
      out += "</td><td>"
      for flag in row.flags {
        out += "<span class=\"flag\(flag == "first bad commit" ? " culprit" : "")\">\(e(flag))</span> "
      }
      out += "</td></tr>\n"
    }
    out += "</tbody></table>\n</body></html>\n"
    return out
  }

  static func byteText(_ count: Int) -> String {
    count < 1024
      ? "\(count) B"
      : count < 1 << 20
        ? String(format: "%.1f KiB", Double(count) / 1024)
        : String(format: "%.1f MiB", Double(count) / 1_048_576)
  }

  /// Lanes as `git log --graph` draws them: a commit takes the lane that expects it, its first
  /// parent inherits the lane, further parents open new lanes.
  static func graphSVG(_ input: HistoryReportInput) -> String {
    let e = NormPlot.escape
    var lanes: [ObjectID?] = []
    var position: [ObjectID: (lane: Int, row: Int)] = [:]
    for (row, r) in input.rows.enumerated() {
      let c = r.summary.commit
      var lane = lanes.firstIndex(of: c.id) ?? lanes.firstIndex(of: nil) ?? lanes.count
      if lane == lanes.count { lanes.append(nil) }
      if let first = lanes.firstIndex(of: c.id) { lane = first }
      for i in lanes.indices where lanes[i] == c.id { lanes[i] = nil }
      position[c.id] = (lane, row)
      lanes[lane] = c.parents.first
      for p in c.parents.dropFirst() where !lanes.contains(p) {
        if let free = lanes.firstIndex(of: nil) { lanes[free] = p } else { lanes.append(p) }
      }
    }
    let laneCount = max(1, (position.values.map(\.lane).max() ?? 0) + 1)
    let rowHeight = 24.0
    let laneWidth = 16.0
    let textX = 16 + Double(laneCount) * laneWidth
    let height = Double(input.rows.count) * rowHeight + 16
    func x(_ lane: Int) -> Double { 12 + Double(lane) * laneWidth }
    func y(_ row: Int) -> Double { 16 + Double(row) * rowHeight }
    var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"commit-graph\" width=\"1100\" height=\"\(Int(height))\" "
    svg += "font-family=\"ui-monospace,monospace\" font-size=\"12\">\n"
    let colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    for r in input.rows {
      guard let from = position[r.summary.commit.id] else { continue }
      for parent in r.summary.commit.parents {
        guard let to = position[parent] else { continue }
        let colour = colours[to.lane % colours.count]
        let (x1, y1, x2, y2) = (x(from.lane), y(from.row), x(to.lane), y(to.row))
        svg += String(
          format:
            "<path d=\"M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f L%.1f %.1f\" stroke=\"%@\" fill=\"none\" stroke-width=\"2\"/>\n",
          x1, y1, x1, y1 + rowHeight * 0.8, x2, y1 + rowHeight * 0.2, x2, y1 + rowHeight, x2, y2, colour)
      }
    }
    for r in input.rows {
      let c = r.summary.commit
      guard let p = position[c.id] else { continue }
      let isCulprit = c.id == input.culprit
      let isHead = c.id == input.head
      svg += String(
        format:
          "<circle class=\"node\" cx=\"%.1f\" cy=\"%.1f\" r=\"%@\" fill=\"%@\" stroke=\"#333\"><title>%@</title></circle>\n",
        x(p.lane), y(p.row), isCulprit || isHead ? "6" : "4.5", isCulprit ? "#d62728" : (isHead ? "#ffd54f" : "#fff"),
        e(c.id.hex))
      var label = "<tspan fill=\"#666\">\(c.id.shortHex)</tspan> "
      for ref in r.summary.decorations {
        label += "<tspan fill=\"#1a56c4\" font-weight=\"bold\">(\(e(ref)))</tspan> "
      }
      label += e(c.summary)
      if isCulprit { label += " <tspan fill=\"#d62728\" font-weight=\"bold\">← first bad commit</tspan>" }
      if !r.flags.filter({ $0.hasPrefix("outlier") || $0.hasPrefix("drift") }).isEmpty {
        label += " <tspan fill=\"#ff7f0e\">⚑</tspan>"
      }
      svg += String(format: "<text x=\"%.1f\" y=\"%.1f\">", textX, y(p.row) + 4) + label + "</text>\n"
    }
    return svg + "</svg>"
  }

  /// The charts: norm growth, drift ratio, top-direction energy, retention, relative norms.
  static func chartsSVG(_ input: HistoryReportInput) -> String {
    let s = input.signals
    let labels = s.commits.map(\.id.shortHex)
    let culprit = input.culprit.flatMap { c in s.commits.firstIndex { $0.id == c } }
    func series(_ value: (SignalReport.Point) -> Double?) -> [(String, [Double?])] {
      s.tensors.map { tensor in
        var values = [Double?](repeating: nil, count: labels.count)
        for p in s.points where p.tensor == tensor { values[p.position] = value(p) }
        return (tensor, values)
      }
    }
    var out = LineChart.svg(
      id: "chart-norm-growth", title: "‖W_t‖_F / ‖W_0‖_F (norm growth)", labels: labels,
      series: series { $0.measure.normGrowth }, culprit: culprit)
    out += LineChart.svg(
      id: "chart-drift", title: "‖W_t − W_0‖_F/√edits over its early value (flag above 1.5)", labels: labels,
      series: series { $0.driftRatio }, culprit: culprit, guide: SignalFlags.driftFactor)
    out += LineChart.svg(
      id: "chart-spectral", title: "σ₁ of W_t − W_0 (spectral norm)", labels: labels,
      series: series { $0.measure.spectral }, culprit: culprit)
    out += LineChart.svg(
      id: "chart-top-energy", title: "σ₁² / ‖W_t − W_0‖_F² (top-direction energy)", labels: labels,
      series: series { $0.measure.topEnergy }, culprit: culprit)
    var mean = [Double?](repeating: nil, count: labels.count)
    var minimum = [Double?](repeating: nil, count: labels.count)
    for r in input.retention {
      mean[r.position] = r.mean
      minimum[r.position] = r.minimum
    }
    out += LineChart.svg(
      id: "chart-retention", title: "retention of the recorded edits (mean, min)", labels: labels,
      series: [("mean retention", mean), ("min retention", minimum)], culprit: culprit)
    var plot = input.normPlotSVG
    if let start = plot.range(of: "<svg") { plot = String(plot[start.lowerBound...]) }
    return out + "<div id=\"chart-relative-norm\">" + plot + "</div>\n"
  }
}

/// A small linear line chart as inline SVG: x the commit position, one polyline per series
/// through the positions that have a value.
enum LineChart {
  static let palette = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79"]

  static func svg(
    id: String, title: String, labels: [String], series: [(String, [Double?])], culprit: Int?,
    guide: Double? = nil
  ) -> String {
    let e = NormPlot.escape
    let legendRows = (min(series.count, 6) + 1) / 2
    let height = 300.0 + 14 * Double(legendRows)
    let (left, right, top, bottom) = (64.0, 620.0, 34.0, 250.0)
    let values = series.flatMap { $0.1.compactMap { $0 } }.filter(\.isFinite) + (guide.map { [$0] } ?? [])
    var out =
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"\(id)\" width=\"640\" height=\"\(Int(height))\" "
    out += "font-family=\"system-ui,sans-serif\" font-size=\"11\">\n"
    out += "<text x=\"10\" y=\"18\" font-size=\"13\" font-weight=\"bold\">\(e(title))</text>\n"
    guard let low = values.min(), let high = values.max(), labels.count > 0 else {
      return out + "<text x=\"\(left)\" y=\"140\">no data</text></svg>\n"
    }
    let pad = high > low ? (high - low) * 0.08 : max(abs(high) * 0.05, 1e-12)
    // Norms and energies are ≥ 0: the axis does not go below 0 for them.
    let (y0, y1) = (low >= 0 ? max(0, low - pad) : low - pad, high + pad)
    func x(_ i: Int) -> Double {
      labels.count <= 1 ? (left + right) / 2 : left + Double(i) / Double(labels.count - 1) * (right - left)
    }
    func y(_ v: Double) -> Double { bottom - (v - y0) / (y1 - y0) * (bottom - top) }
    out += String(
      format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#ccc\"/>\n",
      left, top, right - left, bottom - top)
    for k in 0...4 {
      let v = y0 + (y1 - y0) * Double(k) / 4
      out += String(
        format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%@</text>\n", left - 4, y(v) + 4,
        String(format: "%.4g", v))
    }
    let tick = max(1, (labels.count + 5) / 6)
    for i in stride(from: 0, to: labels.count, by: tick) {
      out += String(
        format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#666\">%@</text>\n", x(i),
        bottom + 14, e(labels[i]))
    }
    out += String(
      format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#666\">commit (oldest left)</text>\n",
      (left + right) / 2, bottom + 30)
    if let culprit, culprit < labels.count {
      out += String(
        format:
          "<line class=\"culprit\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\"><title>first bad commit %@</title></line>\n",
        x(culprit), x(culprit), top, bottom, e(labels[culprit]))
    }
    if let guide {
      out += String(
        format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" stroke-dasharray=\"4 3\"/>\n",
        left, right, y(guide), y(guide))
    }
    for (index, (name, data)) in series.enumerated() {
      let colour = palette[index % palette.count]
      let points = data.enumerated().compactMap { i, v in v.flatMap { $0.isFinite ? (i, $0) : nil } }
      guard !points.isEmpty else { continue }
      let path = points.map { String(format: "%.1f,%.1f", x($0.0), y($0.1)) }.joined(separator: " ")
      out +=
        "<polyline class=\"series\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.6\" points=\"\(path)\"><title>\(e(name))</title></polyline>\n"
      for (i, v) in points where points.count <= 60 {
        out += String(
          format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"><title>%@ %@: %@</title></circle>\n", x(i),
          y(v), colour, e(labels[i]), e(name), String(format: "%.6g", v))
      }
      if index < 6 {
        out += String(
          format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"%@\">● %@</text>\n", left + Double(index % 2) * 280,
          bottom + 48 + Double(index / 2) * 14, colour, e(String(name.suffix(44))))
      } else if index == 6 {
        out += String(
          format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"#666\">+%d more</text>\n", right - 60, bottom + 48,
          series.count - 6)
      }
    }
    return out + "</svg>\n"
  }
}
