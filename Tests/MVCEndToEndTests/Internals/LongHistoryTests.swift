import DeltaStore
import Foundation
import TestSupport
import Testing

/// Long chains of factor-only commits (`commit-factors`: factors, no residual) replay a bounded
/// number of states at any depth (a keyframe once a replay would cost `maxReplayCost` = 512 units:
/// 32 states of rank 2, or 512 factor-only rank-one ones; residual while it spans ≤ 128 units of
/// rank, else or with no start within reach standalone), rank-one chains keep their keyframes
/// within half of their own bytes, a checkout that replays past the bound leaves a keyframe, and
/// the derived-matrix cache (`.mvc/mvc-cache`) stays under `mvc.derivedCacheBytes` and is trimmed
/// by `mvc gc`.
@Suite("long histories and local caches")
struct LongHistoryTests {
  /// 768×768: big enough that a rank-2 commit's objects (~12 KB) would need ~43 states to pay
  /// for a residual keyframe in bytes, so only the replay-cost rule makes one within 33 commits.
  static let tensor = "model.layers.0.mlp.up_proj.weight"

  /// Commits `rank`-`rank` factors of `tensor` with `commit-factors`; records the working state.
  static func commitFactors(
    _ s: inout Scenario, tensor: String = tensor, rank: Int, rows: Int, cols: Int, _ message: String,
    environment: [String: String] = [:]
  ) throws {
    let file = s.dir.appendingPathComponent("factors.safetensors")
    try writeSafetensors(
      [
        FixtureTensor(
          name: "\(tensor).u", shape: [rows, rank], floats: s.rng.gaussianArray(count: rows * rank, scale: 0.02)),
        FixtureTensor(
          name: "\(tensor).v", shape: [cols, rank], floats: s.rng.gaussianArray(count: cols * rank, scale: 0.02)),
      ], to: file)
    let result = runMVC(
      ["commit-factors", "factors.safetensors", "-q", "-m", message], in: s.dir, environment: environment)
    expectSuccess(result, "commit-factors '\(message)'")
    try #require(result.status == 0)
    s.states.append(try snapshot(s.model))
  }

  /// The states each tensor replayed one by one after its start, from `MVC_TRACE_PERFORMANCE`.
  static func replayedStates(_ trace: URL) throws -> [String: Int] {
    let text = (try? String(contentsOf: trace, encoding: .utf8)) ?? ""
    var out: [String: Int] = [:]
    for line in text.split(separator: "\n") {
      if let m = line.firstMatch(of: /replay of '([^']+)': ([0-9]+) states after its start/) {
        out[String(m.1), default: 0] = max(out[String(m.1)] ?? 0, Int(m.2) ?? 0)
      }
    }
    return out
  }

  /// Checks out `ids[back]` with `-o`, expects the state `expected`, returns the states the
  /// tensor replayed after its start and the trace.
  static func checkout(
    _ s: Scenario, _ id: String, expected: [String: Data], _ what: String
  ) throws -> (replayed: Int?, trace: String) {
    let trace = s.dir.appendingPathComponent("trace.txt")
    try? FileManager.default.removeItem(at: trace)
    let out = s.dir.appendingPathComponent("out.safetensors")
    expectSuccess(
      runMVC(["checkout", id, "-o", out.path], in: s.dir, environment: ["MVC_TRACE_PERFORMANCE": trace.path]),
      "checkout -o \(what)")
    try s.expectState(of: out, equals: expected, what)
    try FileManager.default.removeItem(at: out)
    return (try Self.replayedStates(trace)[Self.tensor], (try? String(contentsOf: trace, encoding: .utf8)) ?? "")
  }

  @Test func factorOnlyChainsReplayABoundedNumberOfStatesAtAnyDepth() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 31)
      try s.writeModel(blocks: 1, hidden: 768, intermediate: 768)
      try s.initialize()
      let shape = try #require(readSafetensorsFixture(s.model).tensors.first { $0.name == Self.tensor }?.shape)
      // 33 rank-2 commits (16 units each): their objects would pay for a keyframe only after ~57;
      // the replay-cost rule makes a residual one at the 32nd.
      for i in 1...33 { try Self.commitFactors(&s, rank: 2, rows: shape[0], cols: shape[1], "edit \(i)") }
      let kinds = try SnapshotCacheTests.keyframes(in: s.repository).map(\.kind)
      #expect(kinds == [2], "one residual keyframe: \(kinds)")
      var ids = try s.commitIDs()  // newest first
      func checkout(back: Int, bound: Int?) throws {
        let (steps, _) = try Self.checkout(s, ids[back], expected: s.states[s.states.count - 1 - back], "HEAD~\(back)")
        guard let bound else { return }
        let replayed = try #require(steps, "no replay traced at HEAD~\(back)")
        #expect(replayed <= bound, "HEAD~\(back) replayed \(replayed) states of '\(Self.tensor)'")
      }
      // From the keyframe (edit 32: none), from the base (edits 1–31: at most 31).
      for back in [1, 2, 12, 25, 32] { try checkout(back: back, bound: back == 1 ? 0 : 31) }
      // No keyframe within reach (a clone, a deleted cache): the next commit makes a standalone one.
      let snapshots = s.repository.appendingPathComponent("mvc-snapshots")
      try FileManager.default.removeItem(at: snapshots)
      try Self.commitFactors(&s, rank: 2, rows: shape[0], cols: shape[1], "edit 34")
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).map(\.kind) == [1], "one standalone keyframe")
      // Three rank-one factor-only states on top (1 unit each: no keyframe); edit 36 replays two
      // of them from the standalone keyframe in one element-major pass.
      for i in 35...37 { try Self.commitFactors(&s, rank: 1, rows: shape[0], cols: shape[1], "edit \(i)") }
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).count == 1, "a keyframe for 3 factor-only states")
      ids = try s.commitIDs()
      try checkout(back: 0, bound: nil)  // the working model's own bytes
      let (fromKeyframe, trace) = try Self.checkout(s, ids[1], expected: s.states[s.states.count - 2], "edit 36")
      #expect(fromKeyframe == 2 && trace.contains("apply 2 factor-only states in one pass"), "\(trace)")

      // A checkout past the bound (cache gone: 34 rank-2 + 2 rank-1 states from the base, 546
      // units) saves a standalone keyframe of its target, within the cap; the next one starts there.
      try FileManager.default.removeItem(at: snapshots)
      let first = try Self.checkout(s, ids[1], expected: s.states[s.states.count - 2], "edit 36, no cache")
      #expect(
        first.replayed == 36 && first.trace.contains("save keyframe of '\(Self.tensor)' after replaying 36 states"))
      let saved = try SnapshotCacheTests.keyframes(in: s.repository)
      #expect(saved.map(\.kind) == [1], "one standalone keyframe after the long replay")
      #expect(SnapshotCacheTests.fileBytes(snapshots) <= 1 << 30, "cache within the default cap")
      let again = try Self.checkout(s, ids[1], expected: s.states[s.states.count - 2], "edit 36 again")
      #expect(again.replayed == 0 && !again.trace.contains("save keyframe"), "\(again.trace)")
      // A cap below one keyframe: nothing is saved, the bytes are the same.
      try FileManager.default.removeItem(at: snapshots)
      let cap = saved[0].bytes - 1
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.snapshotCacheBytes", "\(cap)"], in: dir), "config")
      let capped = try Self.checkout(s, ids[1], expected: s.states[s.states.count - 2], "edit 36, small cap")
      #expect(capped.replayed == 36 && SnapshotCacheTests.fileBytes(snapshots) <= cap)
    }
  }

  /// Rank-one factor-only commits of a 128×128 tensor (~1.4 KB of objects each against a ~7 KB
  /// keyframe): the byte rule makes keyframes, which stay within half of the commits' own
  /// objects, and every checkout gives the committed bytes with a bounded replay.
  @Test func rankOneFactorChainsKeepKeyframesWithinHalfTheirOwnBytes() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 32)
      try s.writeModel(blocks: 1, hidden: 128, intermediate: 128)
      try s.initialize()
      let shape = try #require(readSafetensorsFixture(s.model).tensors.first { $0.name == Self.tensor }?.shape)
      let base = SnapshotCacheTests.fileBytes(s.repository)
      for i in 1...40 { try Self.commitFactors(&s, rank: 1, rows: shape[0], cols: shape[1], "edit \(i)") }
      let snapshots = s.repository.appendingPathComponent("mvc-snapshots")
      let cache = SnapshotCacheTests.fileBytes(snapshots)
      let own = SnapshotCacheTests.fileBytes(s.repository) - base - cache
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).count >= 2, "the byte rule made keyframes")
      #expect(cache > 0 && 2 * cache <= own, "keyframes \(cache) B against the commits' own \(own) B")
      let ids = try s.commitIDs()
      for back in [1, 7, 19, 33, 39] {
        let (steps, _) = try Self.checkout(s, ids[back], expected: s.states[s.states.count - 1 - back], "HEAD~\(back)")
        // Edit 40 − back is that many states from the base; past the first keyframes, fewer.
        let bound = back <= 19 ? 39 - back : 40 - back
        #expect((steps ?? 0) <= bound, "HEAD~\(back) replayed \(steps ?? -1) states")
      }
      // A commit on top of the newest state that is due neither by bytes nor by cost reads the
      // recorded progress and does not walk back (keyframes come every ~10 states here, so at
      // least two of three are not due); with that record unreadable it walks.
      let trace = dir.appendingPathComponent("commit-trace.txt")
      let progress = try #require(
        try FileManager.default.contentsOfDirectory(atPath: snapshots.path).first { $0.hasPrefix("progress-") })
      var walks: [Bool] = []
      for i in 41...44 {
        try? FileManager.default.removeItem(at: trace)
        if i == 44 { try Data("not a record".utf8).write(to: snapshots.appendingPathComponent(progress)) }
        try Self.commitFactors(
          &s, rank: 1, rows: shape[0], cols: shape[1], "edit \(i)", environment: ["MVC_TRACE_PERFORMANCE": trace.path])
        let text = (try? String(contentsOf: trace, encoding: .utf8)) ?? ""
        #expect(text.contains("keyframe check of"), "edit \(i): \(text)")
        walks.append(text.contains("walk back of"))
      }
      #expect(walks.prefix(3).filter { $0 }.count <= 1 && walks[3], "walks at edits 41–44: \(walks)")
      let out = dir.appendingPathComponent("out.safetensors")
      expectSuccess(runMVC(["checkout", "HEAD~1", "-o", out.path], in: dir), "checkout -o HEAD~1")
      try s.expectState(of: out, equals: s.states[s.states.count - 2], "edit 43")
    }
  }

  /// The everyday checkout, in place: rank-one factor commits alternating between two 128×128
  /// tensors (keyframes every ~10 states of each, by the byte rule). The working model moved from
  /// HEAD to edits at several depths, from one deep edit straight to another, and back holds the
  /// committed bytes every time, with only the tensors whose state differs rewritten in place.
  @Test func inPlaceCheckoutsAcrossKeyframesGiveTheCommittedBytes() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 34)
      try s.writeModel(blocks: 1, hidden: 128, intermediate: 128)
      try s.initialize()
      let tensors = [Self.tensor, "model.layers.0.mlp.down_proj.weight"]
      let fixture = try readSafetensorsFixture(s.model)
      for i in 1...36 {
        let name = tensors[i % 2]
        let shape = try #require(fixture.tensors.first { $0.name == name }?.shape)
        try Self.commitFactors(&s, tensor: name, rank: 1, rows: shape[0], cols: shape[1], "edit \(i)")
      }
      #expect(try SnapshotCacheTests.keyframes(in: s.repository).count >= 2, "the byte rule made keyframes")
      let ids = try s.commitIDs()  // newest first
      func moveTo(_ revision: String, expected: [String: Data], rewritten: Int, _ what: String) throws {
        let result = runMVC(["checkout", revision], in: dir)
        expectSuccess(result, "checkout \(what)")
        #expect(result.stderr.contains("\(rewritten) tensor"), "\(what): \(result.stderr)")
        #expect(result.stderr.contains("in place"), "\(what): \(result.stderr)")
        try s.expectState(of: s.model, equals: expected, what)
        let status = runMVC(["status"], in: dir)
        expectSuccess(status, "status after \(what)")
        #expect(status.stdout.contains("nothing to commit"), "\(what): the working model is clean: \(status.stdout)")
      }
      let head = s.states[s.states.count - 1]
      for back in [35, 22, 9, 1] {
        try moveTo(
          ids[back], expected: s.states[s.states.count - 1 - back], rewritten: back == 1 ? 1 : 2, "HEAD~\(back)")
        try moveTo("main", expected: head, rewritten: back == 1 ? 1 : 2, "main from HEAD~\(back)")
      }
      // From a deep edit straight to another: the working model's own states start both replays.
      try moveTo(ids[30], expected: s.states[s.states.count - 31], rewritten: 2, "HEAD~30")
      try moveTo(ids[13], expected: s.states[s.states.count - 14], rewritten: 2, "HEAD~13 from HEAD~30")
      try moveTo("main", expected: head, rewritten: 2, "main from HEAD~13")
    }
  }

  /// Keys of one tensor recorded by `commit-factors --keys`, then an accumulator at every commit:
  /// the folder never holds more than its cap, gc trims it to a lower one, 0 empties it, and
  /// every accumulator read from the cache or recomputed is the same matrix.
  @Test func derivedMatrixCacheStaysUnderItsCap() throws {
    try withTemporaryDirectory { dir in
      var s = Scenario(dir: dir, seed: 12)
      try s.writeModel(blocks: 1, hidden: 32, intermediate: 96)
      try s.initialize()
      let name = "model.layers.0.mlp.down_proj.weight"
      let shape = try #require(readSafetensorsFixture(s.model).tensors.first { $0.name == name }?.shape)
      let dIn = shape[1]
      let fileBytes = 32 + dIn * dIn * 8  // one accumulator file
      let cap = 2 * fileBytes + 100
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "\(cap)"], in: dir), "config")
      for i in 1...5 {
        try writeSafetensors(
          [
            FixtureTensor(
              name: "\(name).u", shape: [shape[0], 1], floats: s.rng.gaussianArray(count: shape[0], scale: 0.02)),
            FixtureTensor(name: "\(name).v", shape: [dIn, 1], floats: s.rng.gaussianArray(count: dIn, scale: 0.02)),
          ], to: dir.appendingPathComponent("f.safetensors"))
        try NpyFile.write(
          s.rng.gaussianArray(count: 2 * dIn, scale: 1).map(Double.init), shape: [2, dIn],
          to: dir.appendingPathComponent("keys.npy").path)
        expectSuccess(
          runMVC(["commit-factors", "f.safetensors", "--keys", "keys.npy", "-q", "-m", "keys \(i)"], in: dir),
          "commit-factors --keys \(i)")
      }
      let cacheDir = s.repository.appendingPathComponent("mvc-cache")
      var first: [Int: Data] = [:]
      for back in 0..<5 {
        let out = dir.appendingPathComponent("acc.npy")
        expectSuccess(
          runMVC(["accumulator", name, "HEAD~\(back)", "-o", out.path], in: dir), "accumulator HEAD~\(back)")
        first[back] = try Data(contentsOf: out)
        let held = SnapshotCacheTests.fileBytes(cacheDir)
        #expect(held > 0 && held <= cap, "mvc-cache holds \(held) B after accumulator HEAD~\(back), cap \(cap) B")
      }
      // The oldest were trimmed; recomputed (and the newest read back), each is the same matrix.
      for back in [4, 0] {
        let out = dir.appendingPathComponent("acc.npy")
        expectSuccess(runMVC(["accumulator", name, "HEAD~\(back)", "-o", out.path], in: dir), "again HEAD~\(back)")
        #expect(try Data(contentsOf: out) == first[back], "accumulator HEAD~\(back) changed")
      }
      // A stray temporary file and a lower cap: gc trims to it.
      try Data(repeating: 1, count: 10).write(to: cacheDir.appendingPathComponent("accumulator-x.bin.tmp-1"))
      let lower = fileBytes + 10
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "\(lower)"], in: dir), "config")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      let trimmed = SnapshotCacheTests.fileBytes(cacheDir)
      #expect(trimmed > 0 && trimmed <= lower, "after gc mvc-cache holds \(trimmed) B, cap \(lower) B")
      expectSuccess(runGit(["--git-dir", ".mvc", "config", "mvc.derivedCacheBytes", "0"], in: dir), "config")
      expectSuccess(runMVC(["gc"], in: dir), "gc")
      #expect(SnapshotCacheTests.fileBytes(cacheDir) == 0, "cap 0 kept files")
    }
  }
}
