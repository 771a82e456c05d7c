import Foundation
import TestSupport
import Testing

/// The `--json` documents are an API (docs/JSON.md): schema names and field names are tested.
@Suite("JSON schemas")
struct JSONSchemaTests {
  static func object(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    try #require(
      try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], sourceLocation: sourceLocation)
  }

  @Test func statusDiffShowAndLogDocuments() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      let applied = try s.edit(rank: 1)

      let status = try Self.object(runMVC(["status", "--json"], in: dir).stdout)
      #expect(status["schema"] as? String == "mvc.status/1")
      #expect(status["branch"] as? String == "main")
      #expect(status["clean"] as? Bool == false)
      let changed = try #require(status["tensors"] as? [[String: Any]])
      #expect(changed.count == 1)
      #expect(changed.first?["name"] as? String == applied.tensor)
      #expect(changed.first?["change"] as? String == "modified")
      #expect(Set(status.keys) == ["schema", "branch", "head", "clean", "header_changed", "tensors"])

      let diff = try Self.object(runMVC(["diff", "--json"], in: dir).stdout)
      #expect(diff["schema"] as? String == "mvc.diff/1")
      #expect(diff["to"] == nil || diff["to"] is NSNull)
      let entry = try #require((diff["tensors"] as? [[String: Any]])?.first)
      #expect(entry["tensor"] as? String == applied.tensor)
      #expect(entry["rank"] as? Int == 1)
      for key in ["frobenius_norm", "spectral_norm", "weight_frobenius_norm", "dtype", "shape", "change"] {
        #expect(entry[key] != nil, "diff entry lacks \(key)")
      }

      try s.commit("the edit")
      let show = try Self.object(runMVC(["show", "--json"], in: dir).stdout)
      #expect(show["schema"] as? String == "mvc.show/1")
      let commit = try #require(show["commit"] as? [String: Any])
      #expect((commit["id"] as? String)?.count == 40)
      #expect(commit["method"] as? String == "working-model")
      for key in ["parents", "author_name", "author_email", "date", "message", "summary", "refs", "changes"] {
        #expect(commit[key] != nil, "commit lacks \(key)")
      }
      let change = try #require((commit["changes"] as? [[String: Any]])?.first)
      #expect(change["storage"] as? String == "low_rank")
      #expect(change["rank"] as? Int == 1)
      for key in ["tensor", "frobenius_norm", "spectral_norm", "relative_norm", "stored_byte_count"] {
        #expect(change[key] != nil, "change lacks \(key)")
      }

      let log = try Self.object(runMVC(["log", "--json"], in: dir).stdout)
      #expect(log["schema"] as? String == "mvc.log/1")
      #expect((log["commits"] as? [[String: Any]])?.count == 2)

      let between = try Self.object(runMVC(["diff", "--json", "HEAD~1", "HEAD"], in: dir).stdout)
      #expect((between["to"] as? String)?.count == 40)
      #expect((between["tensors"] as? [[String: Any]])?.count == 1)
    }
  }
}
