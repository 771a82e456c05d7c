import Foundation
import TestSupport
import Testing

@testable import EditVCS

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// What `XMLParser` saw in a document.
private final class ParsedSVG: NSObject, XMLParserDelegate {
  var root: String?
  var elementCounts: [String: Int] = [:]
  var text = ""
  var classes: [String: Int] = [:]

  func parser(
    _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]
  ) {
    if root == nil { root = elementName }
    elementCounts[elementName, default: 0] += 1
    if let name = attributeDict["class"] { classes[name, default: 0] += 1 }
  }

  func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }
}

/// Parses `svg`, recording an issue (at the caller's line) when it is not well-formed XML.
private func parse(_ svg: String, sourceLocation: SourceLocation = #_sourceLocation) -> ParsedSVG {
  let parser = XMLParser(data: Data(svg.utf8))
  let parsed = ParsedSVG()
  parser.delegate = parsed
  let ok = parser.parse()
  #expect(
    ok, "not well-formed XML: \(String(describing: parser.parserError))",
    sourceLocation: sourceLocation)
  return parsed
}

/// Twelve commits, three tensors spanning five decades, with gaps, a zero and a culprit.
private func sampleInput(seriesCount: Int = 3) -> NormPlotInput {
  var random = SplitMix64(seed: 7)
  let labels = (0..<12).map { String(format: "%07x", $0 * 0x1_1111 + 0xa0) }
  let series = (0..<seriesCount).map { tensorIndex in
    NormPlotSeries(
      tensor: "model.layers.\(tensorIndex).mlp.down_proj.weight",
      values: (0..<12).map { commit -> Double? in
        if (commit + tensorIndex) % 4 == 3 { return nil }
        if commit == 2 && tensorIndex == 0 { return 0 }
        let exponent = -5 + 4 * Double(random.nextUnitFloat())
        return pow(10, exponent)
      })
  }
  return NormPlotInput(
    commitLabels: labels, series: series, culpritIndex: 7, revertedIndices: [4, 9],
    flaggedIndices: [7, 10], title: "norms of 12 commits")
}

@Suite struct NormPlotTests {
  @Test func outputIsSVGWithOnePolylinePerSeries() throws {
    let input = sampleInput()
    let svg = NormPlot.svg(input)
    let parsed = parse(svg)
    #expect(parsed.root == "svg")
    #expect(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    #expect(parsed.elementCounts["polyline"] == 3)
    #expect(parsed.elementCounts["title"] ?? 0 > 20)  // tooltips on markers
    #expect(parsed.text.contains("first bad commit \(input.commitLabels[7])"))
    #expect(parsed.text.contains("norms of 12 commits"))
    #expect(parsed.text.contains("reverted \(input.commitLabels[4])"))
    #expect(parsed.classes["reverted"] == 2)
    #expect(parsed.classes["flagged"] ?? 0 >= 2)
    #expect(parsed.classes["culprit"] == 1)
    #expect(parsed.text.contains("0 (below the log axis)"))
    #expect(
      parsed.text.contains("commit \(input.commitLabels[0]) · model.layers.0.mlp.down_proj.weight"))
    #expect(!svg.contains("href"))  // self-contained: nothing to fetch
  }

  @Test func logAxisCoversEveryDecade() {
    let input = NormPlotInput(
      commitLabels: ["a", "b", "c"],
      series: [NormPlotSeries(tensor: "w", values: [2e-6, 3e-2, nil])])
    let parsed = parse(NormPlot.svg(input))
    for decade in -6...(-1) { #expect(parsed.text.contains("1e\(decade)"), "1e\(decade)") }
    #expect(!parsed.text.contains("1e-7"))
    #expect(!parsed.text.contains("1e0"))
  }

  @Test func specialCharactersAreEscaped() {
    let nasty = "attn.<q&k>\"proj\"'s\u{1}weight"
    let input = NormPlotInput(
      commitLabels: ["<c0>", "c&1"],
      series: [NormPlotSeries(tensor: nasty, values: [0.5, 0.25])], culpritIndex: 1,
      title: "a < b & \"c\"")
    let svg = NormPlot.svg(input)
    let parsed = parse(svg)
    #expect(parsed.root == "svg")
    #expect(svg.contains("attn.&lt;q&amp;k&gt;&quot;proj&quot;&apos;s\u{FFFD}weight"))
    #expect(!svg.contains("<q&k>"))
    #expect(parsed.text.contains("attn.<q&k>\"proj\"'s\u{FFFD}weight"))
    #expect(parsed.text.contains("first bad commit c&1"))
    #expect(parsed.text.contains("a < b & \"c\""))
  }

  @Test func legendStopsAtTwelve() {
    let parsed = parse(NormPlot.svg(sampleInput(seriesCount: 20)))
    #expect(parsed.elementCounts["polyline"] == 20)
    #expect(parsed.text.contains("+8 more"))
    #expect(parsed.text.contains("model.layers.11.mlp.down_pr"))
    #expect(!parsed.text.contains("model.layers.12.mlp.down_pr…"))
  }

  @Test(arguments: [
    NormPlotInput(commitLabels: [], series: [], title: "empty"),
    NormPlotInput(commitLabels: ["a", "b"], series: [], title: "empty"),
    NormPlotInput(
      commitLabels: ["a", "b"],
      series: [NormPlotSeries(tensor: "w", values: [nil, .nan])], title: "empty"),
  ])
  func emptyInputSaysNoData(input: NormPlotInput) {
    let parsed = parse(NormPlot.svg(input))
    #expect(parsed.root == "svg")
    #expect(parsed.text.contains("no data"))
    #expect(parsed.elementCounts["polyline"] == nil)
  }

  @Test func singleValueAndAllZerosStillDraw() {
    for values in [[0.01], [0.0], [Double.infinity]] as [[Double?]] {
      let input = NormPlotInput(
        commitLabels: ["only"], series: [NormPlotSeries(tensor: "w", values: values)],
        culpritIndex: 5, revertedIndices: [-1], flaggedIndices: [0, 3])
      let svg = NormPlot.svg(input)
      let parsed = parse(svg)
      #expect(parsed.root == "svg")
      for bad in ["\"nan", "nan\"", "nan,", "\"inf", "inf\"", "inf,", "-inf", " nan"] {
        #expect(!svg.lowercased().contains(bad), "\(values): \(bad)")
      }
      #expect(parsed.classes["culprit"] == nil)  // index 5 is out of range
      #expect(parsed.classes["reverted"] == nil)  // so is -1
    }
  }
}
