import DeltaStore
import Foundation
import TestSupport
import Testing

// `mvc report`: the page's content (commits, refs, culprit, charts), that it references nothing
// outside itself, and the same page opened by headless Chromium in an empty network namespace.

/// Why the headless browser check cannot run here, or nil when it can.
let chromiumUnavailableReason: String? = {
  guard
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first(where: {
      FileManager.default.isExecutableFile(atPath: $0)
    })
  else { return "needs Debian's chromium (apt-get install chromium)" }
  let probe = runProcessOutcome(
    URL(fileURLWithPath: "/usr/bin/unshare"), ["-n", chromium, "--version"], in: FileManager.default.temporaryDirectory,
    timeout: 60)
  guard probe.status == 0 else {
    return "cannot start chromium in an empty network namespace (unshare -n needs root): \(probe.stderr.prefix(200))"
  }
  return nil
}()

private let down0 = "model.layers.0.mlp.down_proj.weight"
private let down1 = "model.layers.1.mlp.down_proj.weight"

/// A history with a branch, a tag, edits with recorded keys and facts, a planted large edit and a
/// finished bisection (not reset) that names it.
private func makeHistory(_ dir: URL) throws -> (culprit: String, ids: [String]) {
  var s = Scenario(dir: dir, seed: 31)
  try s.writeModel(blocks: 2, hidden: 24, intermediate: 40, seed: 4)
  try s.initialize()
  var rng = SplitMix64(seed: 5)
  let dIn = 40
  let k0 = rng.gaussians(160 * dIn)
  var c0 = [Double](repeating: 0, count: dIn * dIn)
  for r in 0..<160 {
    for i in 0..<dIn { for j in 0..<dIn { c0[i * dIn + j] += k0[r * dIn + i] * k0[r * dIn + j] / 160 } }
  }
  try NpyFile.write(c0, shape: [dIn, dIn], to: dir.appendingPathComponent("c0.npy").path)
  for i in 1...9 {
    if i % 3 == 0 {
      let t = try #require(try floatTensors(s.model)[down1])
      let keys = rng.gaussians(2 * dIn)
      var values: [Double] = []
      for r in 0..<2 {
        for o in 0..<24 {
          var y = 0.0
          for j in 0..<dIn { y += Double(t.values[o * dIn + j]) * keys[r * dIn + j] }
          values.append(y + 0.05 * Double(rng.nextGaussian()))
        }
      }
      try NpyFile.write(keys, shape: [2, dIn], to: dir.appendingPathComponent("k.npy").path)
      try NpyFile.write(values, shape: [2, 24], to: dir.appendingPathComponent("v.npy").path)
      try Data("{\"subject\": \"Eiffel Tower <\(i)>\", \"target_new\": \"Rome & co\"}\n".utf8)
        .write(to: dir.appendingPathComponent("facts.jsonl"))
      let edit = runMVC(
        [
          "edit", "--method", "encore", "--tensor", down1, "--keys", "k.npy", "--values", "v.npy", "--cov", "c0.npy",
          "--facts", "facts.jsonl", "-m", "encore edit \(i)",
        ], in: dir)
      expectSuccess(edit, "encore edit \(i)")
    } else {
      try LowRankEditor.edit(s.model, tensor: down0, rank: 1, rng: &s.rng, scale: i == 5 ? 1 : 0.002)
      _ = try s.commit(i == 5 ? "edit 5: the disabling one" : "edit \(i)")
    }
    if i == 4 { expectSuccess(runMVC(["tag", "v1"], in: dir), "tag") }
  }
  expectSuccess(runMVC(["switch", "-c", "alt", "v1"], in: dir), "switch -c alt")
  try LowRankEditor.edit(s.model, tensor: down0, rank: 2, rng: &s.rng, scale: 0.002)
  _ = try s.commit("alt edit")
  expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
  let ids = try s.commitIDs("main") + (try s.commitIDs("alt")).prefix(1)
  let culprit = try s.commitIDs("main")[4]  // newest first: 9 8 7 6 5
  let root = try s.commitIDs("main").last ?? ""
  expectSuccess(runMVC(["bisect", "start", "main", root], in: dir), "bisect start")
  let run = runMVC(["bisect", "run", "--max-norm-growth", "1.5"], in: dir)
  expectSuccess(run, "bisect run")
  #expect(run.stdout.contains("\(culprit) is the first bad commit"), "\(run.stdout)")
  return (culprit, ids)
}

@Suite("report: one self-contained HTML page", .serialized)
struct ReportTests {
  @Test func pageHoldsTheHistoryAndNothingExternal() throws {
    try withTemporaryDirectory { dir in
      let (culprit, ids) = try makeHistory(dir)
      let result = runMVC(["report", "-o", "history.html", "main"], in: dir)
      expectSuccess(result, "report")
      let html = try String(contentsOf: dir.appendingPathComponent("history.html"), encoding: .utf8)
      for id in ids { #expect(html.contains("id=\"c-\(id)\""), "no row for \(id)") }
      #expect(html.components(separatedBy: "<tr class=\"commit").count - 1 == ids.count)
      #expect(
        html.contains("<p id=\"culprit\"><span class=\"flag culprit\">first bad commit</span> <code>\(culprit)</code>"))
      #expect(html.contains("<tr class=\"commit culprit\" id=\"c-\(culprit)\""))
      for ref in [">main<", ">alt<", ">tag: v1<", ">HEAD<"] { #expect(html.contains(ref), "no ref \(ref)") }
      for chart in [
        "commit-graph", "chart-norm-growth", "chart-drift", "chart-spectral", "chart-top-energy", "chart-retention",
      ] {
        #expect(html.contains("id=\"\(chart)\""), "no \(chart)")
      }
      #expect(html.contains("chart-relative-norm"))
      // Retention has data (three ENCORE edits recorded keys), facts are escaped, methods shown.
      let retention = html.components(separatedBy: "id=\"chart-retention\"").last ?? ""
      #expect(retention.prefix(while: { $0 != "#" }).contains("polyline") || retention.contains("<polyline"))
      #expect(html.contains("Eiffel Tower &lt;3&gt;") && html.contains("Rome &amp; co"))
      #expect(html.contains("<td>encore</td>"))
      // Self-contained: no script, no src/href, no URL but the SVG namespace.
      #expect(!html.contains("<script") && !html.contains(" src=") && !html.contains(" href="))
      let urls = html.components(separatedBy: "http").dropFirst().map { String($0.prefix(30)) }
      #expect(urls.allSatisfy { $0.hasPrefix("://www.w3.org/2000/svg\"") }, "\(urls)")
    }
  }

  @Test(.enabled(if: chromiumUnavailableReason == nil, Comment(rawValue: chromiumUnavailableReason ?? "")))
  func chromiumRendersThePageWithoutTheNetwork() throws {
    try withTemporaryDirectory { dir in
      let (culprit, ids) = try makeHistory(dir)
      expectSuccess(runMVC(["report", "-o", "history.html", "main"], in: dir), "report")
      let page = "file://" + dir.appendingPathComponent("history.html").path
      let chromium = URL(fileURLWithPath: "/usr/bin/unshare")
      let common = [
        "-n", "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(dir.path)/profile",
        "--log-net-log=\(dir.path)/net.json",
      ]
      let dom = runProcessOutcome(chromium, common + ["--dump-dom", page], in: dir, timeout: 120)
      #expect(dom.status == 0, "chromium: \(dom.stderr.suffix(500))")
      for id in ids { #expect(dom.stdout.contains("id=\"c-\(id)\""), "DOM has no row for \(id)") }
      #expect(dom.stdout.contains("id=\"culprit\"") && dom.stdout.contains(culprit))
      #expect(dom.stdout.components(separatedBy: "<polyline").count > 5, "the charts' lines are in the DOM")
      #expect(dom.stdout.contains("class=\"node\""))
      // The net log: every request that is not Chromium's own service traffic must be the page itself.
      let netLog = (try? String(contentsOf: dir.appendingPathComponent("net.json"), encoding: .utf8)) ?? ""
      #expect(!netLog.isEmpty, "chromium wrote no net log")
      let serviceHosts = [
        "google.com", "googleapis.com", "gstatic.com", "gvt1.com", "chromium.org", "googleusercontent.com",
      ]
      var pageRequests: [String] = []
      for piece in netLog.components(separatedBy: "\"url\":\"").dropFirst() {
        let url = String(piece.prefix { $0 != "\"" })
        guard !url.hasPrefix("file://"), !url.hasPrefix("data:"), !url.hasPrefix("chrome") else { continue }
        let host = url.split(separator: "/").dropFirst(1).first.map(String.init) ?? url
        if !serviceHosts.contains(where: { host == $0 || host.hasSuffix("." + $0) }) { pageRequests.append(url) }
      }
      #expect(pageRequests.isEmpty, "the page requested \(pageRequests)")
      let shot = dir.appendingPathComponent("shot.png")
      let screenshot = runProcessOutcome(
        chromium, common + ["--screenshot=\(shot.path)", "--window-size=1400,1800", page], in: dir, timeout: 120)
      #expect(screenshot.status == 0, "chromium --screenshot: \(screenshot.stderr.suffix(500))")
      let png = try Data(contentsOf: shot)
      #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) && png.count > 20_000)
    }
  }
}
