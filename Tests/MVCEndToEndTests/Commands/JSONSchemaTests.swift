import Foundation
import TestSupport
import Testing

/// The `--json` documents are an API (docs/JSON.md): schema names and the exact set of keys are
/// tested for every command that takes `--json`. A field without a value is `null`, never left
/// out, so every document of a schema has the same keys.
@Suite("JSON schemas")
struct JSONSchemaTests {
  static func object(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    try #require(
      try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], sourceLocation: sourceLocation)
  }

  /// Runs `mvc args` (which must succeed) and parses its one JSON document.
  static func document(_ args: [String], in dir: URL, sourceLocation: SourceLocation = #_sourceLocation) throws
    -> [String: Any]
  {
    let result = runMVC(args, in: dir)
    expectSuccess(result, args.joined(separator: " "), sourceLocation: sourceLocation)
    return try object(result.stdout, sourceLocation: sourceLocation)
  }

  /// Expects exactly `keys`, and `null` (not a missing key) for each of `nulls`.
  static func expectKeys(
    _ object: [String: Any], _ keys: Set<String>, nulls: Set<String> = [], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    #expect(Set(object.keys) == keys, "\(what): keys \(object.keys.sorted())", sourceLocation: sourceLocation)
    for key in nulls {
      #expect(
        object[key] is NSNull, "\(what): '\(key)' is \(String(describing: object[key])), not null",
        sourceLocation: sourceLocation)
    }
  }

  static let commitKeys: Set<String> = [
    "id", "parents", "author_name", "author_email", "date", "message", "summary", "refs", "method", "changes",
  ]
  static let changeKeys: Set<String> = [
    "tensor", "storage", "rank", "frobenius_norm", "spectral_norm", "relative_norm", "residual_nonzero_count",
    "stored_byte_count", "outlier_ratio",
  ]
  static let diffEntryKeys: Set<String> = [
    "tensor", "change", "dtype", "shape", "rank", "frobenius_norm", "spectral_norm", "weight_frobenius_norm",
  ]

  @Test func everyDocumentHasItsSchemasKeysWithNullForAbsentValues() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let applied = try s.edit(rank: 1)

      let status = try Self.document(["status", "--json"], in: dir)
      #expect(status["schema"] as? String == "mvc.status/1")
      #expect(status["branch"] as? String == "main")
      #expect(status["clean"] as? Bool == false)
      Self.expectKeys(
        status, ["schema", "branch", "head", "clean", "header_changed", "tensors", "files", "untracked"], "status")
      let changed = try #require(status["tensors"] as? [[String: Any]])
      #expect(changed.count == 1)
      #expect(changed.first?["name"] as? String == applied.tensor)
      #expect(changed.first?["change"] as? String == "modified")
      for entry in changed { Self.expectKeys(entry, ["name", "change", "dtype", "shape"], "status entry") }

      // The working model as `to`: null, present.
      let diff = try Self.document(["diff", "--json"], in: dir)
      #expect(diff["schema"] as? String == "mvc.diff/1")
      Self.expectKeys(diff, ["schema", "from", "to", "tensors"], nulls: ["to"], "diff")
      let entry = try #require((diff["tensors"] as? [[String: Any]])?.first)
      Self.expectKeys(entry, Self.diffEntryKeys, "diff entry")
      #expect(entry["tensor"] as? String == applied.tensor)
      #expect(entry["rank"] as? Int == 1)

      _ = try s.commit("the edit")
      let show = try Self.document(["show", "--json"], in: dir)
      #expect(show["schema"] as? String == "mvc.show/1")
      Self.expectKeys(show, ["schema", "commit"], "show")
      let commit = try #require(show["commit"] as? [String: Any])
      Self.expectKeys(commit, Self.commitKeys, "show commit")
      #expect((commit["id"] as? String)?.count == 40)
      #expect(commit["method"] as? String == "working-model")
      let change = try #require((commit["changes"] as? [[String: Any]])?.first)
      // Not flagged: outlier_ratio is null, not missing.
      Self.expectKeys(change, Self.changeKeys, nulls: ["outlier_ratio"], "show change")
      #expect(change["storage"] as? String == "low_rank")
      #expect(change["rank"] as? Int == 1)

      let log = try Self.document(["log", "--json"], in: dir)
      #expect(log["schema"] as? String == "mvc.log/1")
      Self.expectKeys(log, ["schema", "commits"], "log")
      let commits = try #require(log["commits"] as? [[String: Any]])
      #expect(commits.count == 2)
      for commit in commits {
        Self.expectKeys(commit, Self.commitKeys, "log commit")
        for change in commit["changes"] as? [[String: Any]] ?? [] {
          Self.expectKeys(change, Self.changeKeys, "log change")
        }
      }
      // The base commit stores complete tensors: no rank, no norms, no residual; all null.
      let base = try #require((commits.last?["changes"] as? [[String: Any]])?.first)
      #expect(base["storage"] as? String == "full")
      Self.expectKeys(
        base, Self.changeKeys,
        nulls: ["rank", "frobenius_norm", "spectral_norm", "relative_norm", "residual_nonzero_count", "outlier_ratio"],
        "base change")

      let between = try Self.document(["diff", "--json", "HEAD~1", "HEAD"], in: dir)
      #expect((between["to"] as? String)?.count == 40)
      #expect((between["tensors"] as? [[String: Any]])?.count == 1)

      // No recorded edits: nothing to average, so both means are null.
      let score = try Self.document(["score", "--json"], in: dir)
      #expect(score["schema"] as? String == "mvc.score/1")
      Self.expectKeys(
        score,
        ["schema", "revision", "edits", "unscored", "preservation", "mean_retention", "minimum_retention", "signals"],
        nulls: ["mean_retention", "minimum_retention", "signals"], "score")
      let unscored = try #require(score["unscored"] as? [[String: Any]])
      #expect(unscored.count == 1)
      for item in unscored { Self.expectKeys(item, ["commit", "summary"], "score unscored") }

      let reflog = try Self.document(["reflog", "--json"], in: dir)
      #expect(reflog["schema"] as? String == "mvc.reflog/1")
      Self.expectKeys(reflog, ["schema", "reference", "entries"], "reflog")
      #expect(reflog["reference"] as? String == "HEAD")
      let entries = try #require(reflog["entries"] as? [[String: Any]])
      #expect(entries.map { $0["selector"] as? String } == ["HEAD@{0}", "HEAD@{1}"])
      #expect(entries.first?["id"] as? String == commit["id"] as? String)
      let keys: Set<String> = ["selector", "id", "previous", "message", "committer_name", "committer_email", "date"]
      for entry in entries { Self.expectKeys(entry, keys, "reflog entry") }
      // The first entry created the branch: nothing before it.
      if let created = entries.last { Self.expectKeys(created, keys, nulls: ["previous"], "reflog creation") }

      // A bisection with only a bad mark: no good commit yet, `start` is the branch.
      expectSuccess(runMVC(["bisect", "start"], in: dir), "bisect start")
      let bisect = try Self.document(["bisect", "log", "--json"], in: dir)
      #expect(bisect["schema"] as? String == "mvc.bisect-log/1")
      Self.expectKeys(bisect, ["schema", "start", "bad", "good", "skipped", "lines"], "bisect log")
      #expect(bisect["start"] as? String == "main")
      expectSuccess(runMVC(["bisect", "reset"], in: dir), "bisect reset")

      // Detached: the branch is null, present.
      expectSuccess(runMVC(["checkout", "HEAD~1"], in: dir), "checkout HEAD~1")
      let detached = try Self.document(["status", "--json"], in: dir)
      Self.expectKeys(
        detached, ["schema", "branch", "head", "clean", "header_changed", "tensors", "files", "untracked"],
        nulls: ["branch"],
        "detached status")

      // gc: what was packed and what was kept as it is; the threshold is null for --full.
      let gcKeys: Set<String> = [
        "schema", "full", "big_object_bytes", "byte_count_before", "byte_count_after", "packed_object_count",
        "kept_loose_object_count", "kept_loose_object_bytes", "kept_pack_count", "kept_pack_bytes",
        "removed_loose_object_count", "removed_pack_count", "unreachable_loose_object_count",
        "removed_snapshot_count", "removed_derived_count",
      ]
      let gc = try Self.document(["gc", "--json"], in: dir)
      #expect(gc["schema"] as? String == "mvc.gc/1")
      #expect(gc["big_object_bytes"] as? Int == 1 << 20)
      Self.expectKeys(gc, gcKeys, "gc")
      Self.expectKeys(
        try Self.document(["gc", "--full", "--json"], in: dir), gcKeys, nulls: ["big_object_bytes"], "gc --full")
    }
  }
}
