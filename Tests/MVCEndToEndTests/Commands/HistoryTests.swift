import Foundation
import TestSupport
import Testing

@Suite("history: commit, checkout, log, show")
struct HistoryTests {
  /// 20 commits alternating rank-1 and rank-8 edits; every commit checks out byte for byte,
  /// by id, by `HEAD~N`, by tag and with `-o`; git and the JSON outputs agree.
  @Test func twentyCommitsCheckOutExactly() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 2024)
      try s.writeModel(blocks: 4, hidden: 64, intermediate: 256)
      try s.initialize()
      s.expectClean("init")
      var ranks: [Int] = []
      var touched: [String] = []
      for i in 1...20 {
        let applied = try s.edit(rank: i % 2 == 1 ? 1 : 8)
        let result = try s.commit("edit \(i): \(applied.tensor)")
        #expect(result.stdout.hasPrefix("[main "), "commit \(i): \(result.stdout)")
        #expect(result.stdout.contains(applied.tensor), "commit \(i): \(result.stdout)")
        ranks.append(applied.rank)
        touched.append(applied.tensor)
        s.expectClean("commit \(i)")
      }

      // mvc log --json: schema, 21 commits, a chain of parents, the fixed date, ranks recovered.
      let log = try s.logJSON()
      #expect(log["schema"] as? String == "mvc.log/1")
      let commits = try #require(log["commits"] as? [[String: Any]])
      #expect(commits.count == 21)
      let ids = commits.compactMap { $0["id"] as? String }
      #expect(ids.count == 21)
      #expect(ids.allSatisfy { $0.count == 40 && $0.allSatisfy(\.isHexDigit) })
      for (k, commit) in commits.enumerated() {
        let parents = commit["parents"] as? [String] ?? []
        #expect(parents == (k + 1 < ids.count ? [ids[k + 1]] : []), "parents of commit \(k)")
        #expect(
          (commit["date"] as? String)?.hasPrefix("2023-11-14T22:13:20") == true, "date \(commit["date"] ?? "nil")")
        guard k < 20 else { continue }
        let edit = 19 - k  // commits are newest first
        let changes = commit["changes"] as? [[String: Any]] ?? []
        #expect(changes.count == 1, "commit for edit \(edit + 1): \(changes)")
        #expect(changes.first?["tensor"] as? String == touched[edit])
        #expect(changes.first?["storage"] as? String == "low_rank", "edit \(edit + 1): \(changes)")
        #expect(changes.first?["rank"] as? Int == ranks[edit], "edit \(edit + 1) rank: \(changes)")
      }
      let stateOf = { (id: String) -> Int in 20 - (ids.firstIndex(of: id) ?? 0) }

      // mvc show --json
      let show = runMVC(["show", "--json"], in: dir)
      expectSuccess(show, "show --json")
      let shown = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])
      #expect(shown["schema"] as? String == "mvc.show/1")
      let shownCommit = shown["commit"] as? [String: Any]
      #expect(shownCommit?["id"] as? String == ids[0])
      #expect(
        shownCommit?["message"] as? String == "edit 20: \(touched[19])\n"
          || shownCommit?["summary"] as? String == "edit 20: \(touched[19])")

      // git agrees: fsck clean, 21 commits on main.
      if gitExecutable != nil {
        let fsck = runGit(["--git-dir=.mvc", "fsck", "--strict"], in: dir)
        #expect(fsck.status == 0, "git fsck: \(fsck.stdout) \(fsck.stderr)")
        let gitLog = runGit(["--git-dir=.mvc", "log", "--oneline"], in: dir)
        #expect(gitLog.status == 0, "\(gitLog.stderr)")
        #expect(gitLog.stdout.split(separator: "\n").count == 21, "git log: \(gitLog.stdout)")
      }

      // Checkout by id, every commit, oldest first.
      for id in ids.reversed() {
        let result = runMVC(["checkout", id], in: dir)
        expectSuccess(result, "checkout \(id)")
        try s.expectWorkingState(stateOf(id), "checkout \(id)")
        s.expectClean("checkout \(id)")
      }
      expectSuccess(runMVC(["checkout", "main"], in: dir), "checkout main")
      try s.expectWorkingState(20, "checkout main")

      // HEAD~1, twenty times: walks the history back to the root.
      for k in 1...20 {
        let result = runMVC(["checkout", "HEAD~1"], in: dir)
        expectSuccess(result, "checkout HEAD~1 (#\(k))")
        try s.expectWorkingState(20 - k, "HEAD~1 (#\(k))")
      }
      #expect(runMVC(["checkout", "HEAD~1"], in: dir).status == 128, "HEAD~1 of the root commit")

      // HEAD~N from the tip, and main~N.
      for n in [0, 3, 11, 20] {
        expectSuccess(runMVC(["checkout", "main"], in: dir))
        expectSuccess(runMVC(["checkout", "HEAD~\(n)"], in: dir), "HEAD~\(n)")
        try s.expectWorkingState(20 - n, "HEAD~\(n)")
        s.expectClean("HEAD~\(n)")
      }

      // Tags: lightweight and annotated.
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      expectSuccess(runMVC(["tag", "v7", ids[20 - 7]], in: dir), "tag v7")
      expectSuccess(runMVC(["tag", "v13", "HEAD~7", "-m", "annotated"], in: dir), "tag v13")
      expectSuccess(runMVC(["tag", "tip"], in: dir), "tag tip")
      let tags = runMVC(["tag"], in: dir)
      #expect(tags.stdout.split(separator: "\n").map(String.init).sorted() == ["tip", "v13", "v7"], "\(tags.stdout)")
      for (tag, state) in [("v7", 7), ("v13", 13), ("tip", 20)] {
        expectSuccess(runMVC(["checkout", tag], in: dir), "checkout \(tag)")
        try s.expectWorkingState(state, "checkout \(tag)")
        s.expectClean("checkout \(tag)")
      }

      // -o: materializes elsewhere; HEAD and the working model stay.
      expectSuccess(runMVC(["checkout", "main"], in: dir))
      let modelBefore = try snapshot(s.model)
      let out = dir.appendingPathComponent("out", isDirectory: true)
      try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
      for (k, id) in ids.reversed().enumerated() {
        let path = out.appendingPathComponent("m\(k).safetensors")
        let result = runMVC(["checkout", id, "-o", "out/m\(k).safetensors"], in: dir)
        expectSuccess(result, "checkout \(id) -o")
        try s.expectState(of: path, equals: s.states[k], "checkout -o of state \(k)")
      }
      try s.expectState(of: s.model, equals: modelBefore, "working model after -o")
      let status = runMVC(["status"], in: dir)
      #expect(status.stdout.hasPrefix("On branch main"), "\(status.stdout)")
      #expect(status.stdout.contains("nothing to commit"), "\(status.stdout)")
    }
  }

  @Test func branchesSwitchAndTags() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 99)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(6)
      let mainTip = s.states[6]

      expectSuccess(runMVC(["branch", "alt", "HEAD~5"], in: dir), "branch alt HEAD~5")
      try s.expectWorkingState(6, "branch leaves the working model")
      expectSuccess(runMVC(["switch", "alt"], in: dir), "switch alt")
      try s.expectWorkingState(1, "switch alt")
      #expect(runMVC(["status"], in: dir).stdout.hasPrefix("On branch alt"))

      try s.edit(rank: 8)
      let altCommit = runMVC(["commit", "-m", "on alt"], in: dir)
      expectSuccess(altCommit, "commit on alt")
      #expect(altCommit.stdout.hasPrefix("[alt "), "\(altCommit.stdout)")
      let altTip = try snapshot(s.model)
      #expect(try s.commitIDs().count == 3)

      expectSuccess(runMVC(["switch", "main"], in: dir), "switch main")
      try s.expectState(of: s.model, equals: mainTip, "switch main")
      s.expectClean("switch main")
      expectSuccess(runMVC(["switch", "alt"], in: dir), "switch alt again")
      try s.expectState(of: s.model, equals: altTip, "switch alt again")

      expectSuccess(runMVC(["switch", "-c", "other", "main~2"], in: dir), "switch -c other main~2")
      try s.expectWorkingState(4, "switch -c other main~2")
      let branches = runMVC(["branch"], in: dir)
      expectSuccess(branches, "branch")
      #expect(branches.stdout == "  alt\n  main\n* other\n", "branch list: \(branches.stdout)")

      expectSuccess(runMVC(["tag", "v1"], in: dir), "tag v1")
      expectSuccess(runMVC(["switch", "main"], in: dir))
      expectSuccess(runMVC(["checkout", "v1"], in: dir), "checkout v1")
      try s.expectWorkingState(4, "checkout v1")
      let detached = runMVC(["status"], in: dir)
      #expect(detached.stdout.hasPrefix("HEAD detached at"), "\(detached.stdout)")
      #expect(runMVC(["branch"], in: dir).stdout.contains("* (HEAD detached at"))

      // Refusals leave everything as it was.
      s.expectRefused(["switch", "nosuch"], naming: ["nosuch"])
      s.expectRefused(["branch", "alt"], naming: ["alt"])
      s.expectRefused(["switch", "-c", "alt"], naming: ["alt"])
      s.expectRefused(["tag", "v1"], naming: ["v1"])
      expectSuccess(runMVC(["switch", "other"], in: dir))
      s.expectRefused(["branch", "-d", "other"], naming: ["other"])
      expectSuccess(runMVC(["branch", "-d", "alt"], in: dir), "branch -d alt")
      #expect(runMVC(["branch"], in: dir).stdout == "  main\n* other\n")
    }
  }

  @Test func uncommittedChangesAreProtected() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 5)
      try s.writeModel()
      try s.initialize()
      try s.editAndCommit(2)
      let applied = try s.edit(rank: 1)
      let status = runMVC(["status"], in: dir)
      #expect(status.stdout.contains("modified") && status.stdout.contains(applied.tensor), "\(status.stdout)")

      s.expectRefused(["checkout", "HEAD~1"], naming: [applied.tensor])
      s.expectRefused(["checkout", "main"], naming: [applied.tensor])
      s.expectRefused(["switch", "-c", "side", "HEAD~2"], naming: [applied.tensor])
      #expect(!runMVC(["branch"], in: dir).stdout.contains("side"), "a refused switch -c left a branch")
      s.expectRefused(["commit", "--delta", "nonexistent.safetensors", "-m", "x"], naming: [applied.tensor])

      let forced = runMVC(["checkout", "--force", "HEAD~1"], in: dir)
      expectSuccess(forced, "checkout --force")
      try s.expectWorkingState(1, "checkout --force HEAD~1")
      s.expectClean("checkout --force")
    }
  }

  @Test func nothingToCommit() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir)
      try s.writeModel()
      try s.initialize()
      s.expectRefused(["commit", "-m", "empty"], naming: ["nothing to commit"])
      try s.editAndCommit(1)
      s.expectRefused(["commit", "-m", "empty"], naming: ["nothing to commit"])
      // Rewriting the same bytes (new inode and mtime) is still nothing to commit.
      let bytes = try Data(contentsOf: s.model)
      try FileManager.default.removeItem(at: s.model)
      try bytes.write(to: s.model)
      s.expectRefused(["commit", "-m", "empty"], naming: ["nothing to commit"])
      let usage = runMVC(["commit", "-m", "  "], in: dir)
      #expect(usage.status == 129, "empty message: \(usage.status) \(usage.stderr)")
    }
  }

  @Test func addedAndRemovedTensorsRoundTrip() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 11)
      try s.writeModel()
      try s.initialize()
      var rng = SplitMix64(seed: 3)
      var tensors = try readSafetensorsFixture(s.model).tensors

      // 1: a tensor appended at the end.
      tensors.append(FixtureTensor(name: "lm_head.weight", shape: [48, 32], floats: rng.gaussianArray(count: 48 * 32)))
      try writeSafetensors(tensors, to: s.model)
      let added = try s.commit("add lm_head")
      #expect(added.stdout.contains("added") && added.stdout.contains("lm_head.weight"), "\(added.stdout)")

      // 2: a tensor removed from the middle.
      tensors.removeAll { $0.name == "model.layers.0.post_attention_layernorm.weight" }
      try writeSafetensors(tensors, to: s.model)
      let removed = try s.commit("remove a norm")
      #expect(removed.stdout.contains("removed"), "\(removed.stdout)")

      // 3: added at the front, plus an edit of an existing tensor.
      tensors.insert(
        FixtureTensor(name: "embed.weight", shape: [40, 32], floats: rng.gaussianArray(count: 1280)), at: 0)
      try writeSafetensors(tensors, to: s.model)
      try s.edit(rank: 1, tensor: "model.layers.1.mlp.up_proj.weight")
      try s.commit("add embed, edit up_proj")

      // 4: an edit of the added tensor.
      try s.edit(rank: 8, tensor: "lm_head.weight")
      try s.commit("edit lm_head")

      let show = runMVC(["show", "HEAD~2", "--json"], in: dir)
      #expect(show.stdout.contains("\"removed\""), "\(show.stdout)")

      let ids = try s.commitIDs()
      #expect(ids.count == 5)
      for (k, id) in ids.reversed().enumerated() {
        expectSuccess(runMVC(["checkout", id], in: dir), "checkout state \(k)")
        try s.expectWorkingState(k, "checkout state \(k)")
        s.expectClean("checkout state \(k)")
        let out = dir.appendingPathComponent("o\(k).safetensors")
        expectSuccess(runMVC(["checkout", id, "-o", out.path], in: dir), "checkout -o state \(k)")
        try s.expectState(of: out, equals: s.states[k], "-o state \(k)")
      }
      // And forward again from the root, across every layout change.
      for k in [4, 1, 3, 0, 2] {
        expectSuccess(runMVC(["checkout", ids[4 - k]], in: dir))
        try s.expectWorkingState(k, "revisit state \(k)")
      }
    }
  }
}
