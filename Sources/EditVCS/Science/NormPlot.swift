import Foundation

/// One tensor's relative update norms across the history.
package struct NormPlotSeries: Sendable, Equatable {
  /// The tensor name, as in the safetensors header.
  package var tensor: String
  /// Per commit index, oldest first: the relative update norm ‖ΔW‖_F / ‖W‖_F, or `nil` when that
  /// commit did not touch the tensor. Entries past the last commit label are ignored, as are
  /// negative and non-finite values.
  package var values: [Double?]

  package init(tensor: String, values: [Double?]) {
    self.tensor = tensor
    self.values = values
  }
}

/// Everything a norm plot shows.
public struct NormPlotInput: Sendable, Equatable {
  /// Short commit ids, oldest first; their count is the number of commits plotted.
  public var commitLabels: [String]
  /// One series per tensor.
  package var series: [NormPlotSeries]
  /// The first bad commit, when a bisection found one.
  package var culpritIndex: Int?
  /// Commits that were reverted.
  package var revertedIndices: Set<Int>
  /// Commits whose norms are outliers.
  package var flaggedIndices: Set<Int>
  /// The plot's heading.
  package var title: String

  package init(
    commitLabels: [String], series: [NormPlotSeries], culpritIndex: Int? = nil,
    revertedIndices: Set<Int> = [], flaggedIndices: Set<Int> = [],
    title: String = "relative update norm per commit"
  ) {
    self.commitLabels = commitLabels
    self.series = series
    self.culpritIndex = culpritIndex
    self.revertedIndices = revertedIndices
    self.flaggedIndices = flaggedIndices
    self.title = title
  }
}

/// Renders relative update norms per commit as a self-contained SVG document.
///
/// The y axis is logarithmic (relative norms span orders of magnitude), from the decade below the
/// smallest positive value to the decade above the largest; zero values sit on the bottom edge as
/// hollow markers and are left out of the line. The x axis is the commit index, oldest on the left.
/// Each tensor gets a coloured polyline through the commits that touched it, with markers whose
/// `<title>` tooltip names the commit, the tensor and the value. The first bad commit is a red band
/// labelled "first bad commit <id>", reverted commits are grey dashed lines, and norm outliers are
/// orange rings. The legend lists at most ``legendLimit`` tensors, then "+N more".
///
/// The output has no external references (no fonts, scripts or images), is deterministic for a
/// given input, and escapes every piece of text for XML, so it opens in any browser.
public enum NormPlot {
  /// The most tensors the legend names before "+N more".
  package static let legendLimit = 12

  /// The SVG document for `input`; a small document saying "no data" when there is nothing to draw.
  public static func svg(_ input: NormPlotInput) -> String {
    var renderer = Renderer(input: input)
    return renderer.render()
  }

  /// `text` with XML's five special characters escaped. Characters XML 1.0 forbids (C0 controls
  /// other than tab, line feed and carriage return) become U+FFFD so the document always parses.
  static func escape(_ text: String) -> String {
    var escaped = ""
    escaped.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
      switch scalar {
      case "&": escaped += "&amp;"
      case "<": escaped += "&lt;"
      case ">": escaped += "&gt;"
      case "\"": escaped += "&quot;"
      case "'": escaped += "&apos;"
      case "\t", "\n", "\r": escaped.unicodeScalars.append(scalar)
      default:
        if scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF {
          escaped += "\u{FFFD}"
        } else {
          escaped.unicodeScalars.append(scalar)
        }
      }
    }
    return escaped
  }
}

// Colours avoid red (culprit), grey (reverted) and orange (outliers).
private let palette = [
  "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd",
]

private let culpritColour = "#d62728"
private let revertedColour = "#888888"
private let flaggedColour = "#ff7f0e"

/// A coordinate with two decimals: short, and the same on every platform.
private func coordinate(_ value: Double) -> String { String(format: "%.2f", value) }

/// A norm for people: three significant digits.
private func normText(_ value: Double) -> String { String(format: "%.3g", value) }

private struct Renderer {
  let input: NormPlotInput
  let width = 960.0
  let height = 540.0
  let left = 80.0
  let top = 60.0
  let right = 960.0 - 240.0
  let bottom = 540.0 - 100.0
  var out = ""

  init(input: NormPlotInput) { self.input = input }

  var commitCount: Int { input.commitLabels.count }

  /// The plottable points of a series: (commit index, value ≥ 0 and finite).
  func points(_ series: NormPlotSeries) -> [(index: Int, value: Double)] {
    var points: [(index: Int, value: Double)] = []
    for (index, value) in series.values.prefix(commitCount).enumerated() {
      if let value, value.isFinite, value >= 0 { points.append((index, value)) }
    }
    return points
  }

  func x(_ index: Int) -> Double {
    if commitCount <= 1 { return (left + right) / 2 }
    return left + Double(index) / Double(commitCount - 1) * (right - left)
  }

  /// The spacing between two commits on the x axis.
  var slotWidth: Double {
    commitCount <= 1 ? (right - left) : (right - left) / Double(commitCount - 1)
  }

  func label(_ index: Int) -> String {
    input.commitLabels.indices.contains(index) ? input.commitLabels[index] : "#\(index)"
  }

  mutating func line(_ text: String) {
    out += text
    out += "\n"
  }

  mutating func openDocument() {
    let size = "width=\"\(Int(width))\" height=\"\(Int(height))\""
    line(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" \(size) viewBox=\"0 0 \(Int(width)) \(Int(height))\""
        + " font-family=\"sans-serif\" font-size=\"12\">")
    line("<title>\(NormPlot.escape(input.title))</title>")
    line(
      "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>")
    line(
      "<text x=\"\(coordinate(width / 2))\" y=\"28\" text-anchor=\"middle\" font-size=\"16\""
        + " font-weight=\"bold\">\(NormPlot.escape(input.title))</text>")
  }

  mutating func render() -> String {
    let allPoints = input.series.map(points)
    let positives = allPoints.joined().map(\.value).filter { $0 > 0 }
    openDocument()
    guard commitCount > 0, !allPoints.joined().isEmpty else {
      line(
        "<text x=\"\(coordinate(width / 2))\" y=\"\(coordinate(height / 2))\""
          + " text-anchor=\"middle\" font-size=\"18\" fill=\"#666666\">no data</text>")
      line("</svg>")
      return out
    }

    // Decades spanning every positive value; one decade either side when they all share one.
    var lowDecade = -3
    var highDecade = 0
    if let smallest = positives.min(), let largest = positives.max() {
      lowDecade = Int(log10(smallest).rounded(.down))
      highDecade = Int(log10(largest).rounded(.up))
      if highDecade <= lowDecade {
        lowDecade -= 1
        highDecade += 1
      }
    }
    let decadeSpan = Double(highDecade - lowDecade)
    // Copies, so the closure does not capture `self` while the drawing methods mutate it.
    let (plotTop, plotBottom) = (top, bottom)
    let y = { (value: Double) -> Double in
      guard value > 0 else { return plotBottom }
      let fraction = (log10(value) - Double(lowDecade)) / decadeSpan
      return plotBottom - min(max(fraction, 0), 1) * (plotBottom - plotTop)
    }

    drawAxes(lowDecade: lowDecade, highDecade: highDecade, y: y)
    drawReverted()
    drawCulprit()

    for (seriesIndex, series) in input.series.enumerated() {
      let colour = palette[seriesIndex % palette.count]
      let seriesPoints = allPoints[seriesIndex]
      let linePoints = seriesPoints.filter { $0.value > 0 }
        .map { "\(coordinate(x($0.index))),\(coordinate(y($0.value)))" }
        .joined(separator: " ")
      let name = NormPlot.escape(series.tensor)
      line("<g class=\"series\">")
      line("<title>\(name)</title>")
      line(
        "<polyline points=\"\(linePoints)\" fill=\"none\" stroke=\"\(colour)\""
          + " stroke-width=\"1.5\" stroke-linejoin=\"round\"/>")
      for point in seriesPoints {
        let tooltip =
          "commit \(label(point.index)) · \(series.tensor) · "
          + (point.value > 0 ? normText(point.value) : "0 (below the log axis)")
        let fill = point.value > 0 ? colour : "#ffffff"
        line(
          "<circle cx=\"\(coordinate(x(point.index)))\" cy=\"\(coordinate(y(point.value)))\""
            + " r=\"3\" fill=\"\(fill)\" stroke=\"\(colour)\"><title>"
            + NormPlot.escape(tooltip) + "</title></circle>")
      }
      line("</g>")
    }

    drawFlagged(allPoints: allPoints, y: y)
    drawLegend()
    line("</svg>")
    return out
  }

  mutating func drawAxes(lowDecade: Int, highDecade: Int, y: (Double) -> Double) {
    line("<g class=\"axes\" stroke=\"#000000\">")
    line(
      "<line x1=\"\(coordinate(left))\" y1=\"\(coordinate(bottom))\" x2=\"\(coordinate(right))\""
        + " y2=\"\(coordinate(bottom))\"/>")
    line(
      "<line x1=\"\(coordinate(left))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(left))\""
        + " y2=\"\(coordinate(bottom))\"/>")
    line("</g>")

    // y: one tick per decade, thinned to at most ~10 labels.
    let decadeStep = max(1, (highDecade - lowDecade + 9) / 10)
    for decade in stride(from: lowDecade, through: highDecade, by: decadeStep) {
      let position = coordinate(y(pow(10, Double(decade))))
      line(
        "<line x1=\"\(coordinate(left))\" y1=\"\(position)\" x2=\"\(coordinate(right))\""
          + " y2=\"\(position)\" stroke=\"#e5e5e5\"/>")
      line(
        "<line x1=\"\(coordinate(left - 5))\" y1=\"\(position)\" x2=\"\(coordinate(left))\""
          + " y2=\"\(position)\" stroke=\"#000000\"/>")
      line(
        "<text x=\"\(coordinate(left - 8))\" y=\"\(position)\" text-anchor=\"end\""
          + " dominant-baseline=\"middle\">1e\(decade)</text>")
    }
    line(
      "<text transform=\"translate(20 \(coordinate((top + bottom) / 2))) rotate(-90)\""
        + " text-anchor=\"middle\">‖ΔW‖_F / ‖W‖_F (log scale)</text>")

    // x: commit ids, at most ~20 labels.
    let indexStep = max(1, (commitCount + 19) / 20)
    for index in stride(from: 0, to: commitCount, by: indexStep) {
      let position = coordinate(x(index))
      line(
        "<line x1=\"\(position)\" y1=\"\(coordinate(bottom))\" x2=\"\(position)\""
          + " y2=\"\(coordinate(bottom + 5))\" stroke=\"#000000\"/>")
      line(
        "<text transform=\"translate(\(position) \(coordinate(bottom + 12))) rotate(-45)\""
          + " text-anchor=\"end\" font-family=\"monospace\" font-size=\"10\">"
          + NormPlot.escape(label(index)) + "</text>")
    }
    line(
      "<text x=\"\(coordinate((left + right) / 2))\" y=\"\(coordinate(height - 12))\""
        + " text-anchor=\"middle\">commit (oldest → newest)</text>")
  }

  mutating func drawReverted() {
    for index in input.revertedIndices.sorted() where (0..<commitCount).contains(index) {
      let position = coordinate(x(index))
      line(
        "<line class=\"reverted\" x1=\"\(position)\" y1=\"\(coordinate(top))\" x2=\"\(position)\""
          + " y2=\"\(coordinate(bottom))\" stroke=\"\(revertedColour)\" stroke-width=\"1.5\""
          + " stroke-dasharray=\"4 3\"><title>reverted "
          + NormPlot.escape(label(index)) + "</title></line>")
    }
  }

  mutating func drawCulprit() {
    guard let index = input.culpritIndex, (0..<commitCount).contains(index) else { return }
    let centre = x(index)
    let bandWidth = max(6, min(slotWidth, 40))
    let bandLeft = max(left, centre - bandWidth / 2)
    let bandRight = min(right, centre + bandWidth / 2)
    let text = "first bad commit \(label(index))"
    line("<g class=\"culprit\">")
    line("<title>\(NormPlot.escape(text))</title>")
    line(
      "<rect x=\"\(coordinate(bandLeft))\" y=\"\(coordinate(top))\""
        + " width=\"\(coordinate(max(bandRight - bandLeft, 1)))\""
        + " height=\"\(coordinate(bottom - top))\" fill=\"\(culpritColour)\" fill-opacity=\"0.12\"/>"
    )
    line(
      "<line x1=\"\(coordinate(centre))\" y1=\"\(coordinate(top))\" x2=\"\(coordinate(centre))\""
        + " y2=\"\(coordinate(bottom))\" stroke=\"\(culpritColour)\" stroke-width=\"2\"/>")
    let anchor = centre < left + 120 ? "start" : (centre > right - 120 ? "end" : "middle")
    line(
      "<text x=\"\(coordinate(centre))\" y=\"\(coordinate(top - 8))\" text-anchor=\"\(anchor)\""
        + " fill=\"\(culpritColour)\" font-weight=\"bold\">\(NormPlot.escape(text))</text>")
    line("</g>")
  }

  mutating func drawFlagged(allPoints: [[(index: Int, value: Double)]], y: (Double) -> Double) {
    for index in input.flaggedIndices.sorted() where (0..<commitCount).contains(index) {
      var ringed = false
      for (seriesIndex, series) in input.series.enumerated() {
        guard let point = allPoints[seriesIndex].first(where: { $0.index == index }) else {
          continue
        }
        ringed = true
        let tooltip =
          "norm outlier · commit \(label(index)) · \(series.tensor) · \(normText(point.value))"
        line(
          "<circle class=\"flagged\" cx=\"\(coordinate(x(index)))\""
            + " cy=\"\(coordinate(y(point.value)))\" r=\"7\" fill=\"none\""
            + " stroke=\"\(flaggedColour)\" stroke-width=\"2\"><title>"
            + NormPlot.escape(tooltip) + "</title></circle>")
      }
      if !ringed {
        line(
          "<circle class=\"flagged\" cx=\"\(coordinate(x(index)))\" cy=\"\(coordinate(bottom))\""
            + " r=\"7\" fill=\"none\" stroke=\"\(flaggedColour)\" stroke-width=\"2\"><title>"
            + NormPlot.escape("norm outlier · commit \(label(index))") + "</title></circle>")
      }
    }
  }

  mutating func drawLegend() {
    let legendLeft = right + 24
    var rowY = top + 4
    line("<g class=\"legend\">")
    for (seriesIndex, series) in input.series.prefix(NormPlot.legendLimit).enumerated() {
      let colour = palette[seriesIndex % palette.count]
      let name =
        series.tensor.count > 28 ? String(series.tensor.prefix(27)) + "…" : series.tensor
      line(
        "<line x1=\"\(coordinate(legendLeft))\" y1=\"\(coordinate(rowY))\""
          + " x2=\"\(coordinate(legendLeft + 18))\" y2=\"\(coordinate(rowY))\""
          + " stroke=\"\(colour)\" stroke-width=\"2\"/>")
      line(
        "<text x=\"\(coordinate(legendLeft + 24))\" y=\"\(coordinate(rowY))\""
          + " dominant-baseline=\"middle\"><title>\(NormPlot.escape(series.tensor))</title>"
          + NormPlot.escape(name) + "</text>")
      rowY += 18
    }
    let hidden = input.series.count - NormPlot.legendLimit
    if hidden > 0 {
      line(
        "<text x=\"\(coordinate(legendLeft + 24))\" y=\"\(coordinate(rowY))\""
          + " dominant-baseline=\"middle\" fill=\"#666666\">+\(hidden) more</text>")
      rowY += 18
    }
    // Marker key.
    rowY += 8
    let keys: [(String, String)] = [
      (
        "<rect x=\"\(coordinate(legendLeft))\" y=\"\(coordinate(rowY - 6))\" width=\"18\""
          + " height=\"12\" fill=\"\(culpritColour)\" fill-opacity=\"0.3\"/>", "first bad commit"
      ),
      (
        "<line x1=\"\(coordinate(legendLeft + 9))\" y1=\"\(coordinate(rowY + 18 - 7))\""
          + " x2=\"\(coordinate(legendLeft + 9))\" y2=\"\(coordinate(rowY + 18 + 7))\""
          + " stroke=\"\(revertedColour)\" stroke-dasharray=\"4 3\" stroke-width=\"1.5\"/>",
        "reverted"
      ),
      (
        "<circle cx=\"\(coordinate(legendLeft + 9))\" cy=\"\(coordinate(rowY + 36))\" r=\"6\""
          + " fill=\"none\" stroke=\"\(flaggedColour)\" stroke-width=\"2\"/>", "norm outlier"
      ),
    ]
    for (offset, key) in keys.enumerated() {
      line(key.0)
      line(
        "<text x=\"\(coordinate(legendLeft + 24))\" y=\"\(coordinate(rowY + Double(offset) * 18))\""
          + " dominant-baseline=\"middle\">\(key.1)</text>")
    }
    line("</g>")
  }
}
