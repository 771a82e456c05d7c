import Foundation
import TestSupport
import Testing

// Shared steps of the end-to-end tests: a repository in a temporary folder driven through the CLI.

/// A repository under test: the folder, the working model inside it, and what was committed.
struct Scenario {
  let dir: URL
  /// The working model: a file, or a folder of shards.
  let model: URL
  var rng: SplitMix64
  /// The working model's bytes after each commit, root first (file → "" key; folder → relative paths).
  var states: [[String: Data]] = []

  var repository: URL { dir.appendingPathComponent(".mvc") }

  init(dir: URL, modelName: String = "model.safetensors", seed: UInt64 = 7) {
    self.dir = dir
    self.model = dir.appendingPathComponent(modelName)
    self.rng = SplitMix64(seed: seed)
  }

  /// Writes an F32/BF16/F16 transformer fixture as one file.
  func writeModel(
    blocks: Int = 2, hidden: Int = 32, intermediate: Int = 96, seed: UInt64 = 1, dtype: String = "F32"
  ) throws {
    try writeSafetensors(
      transformerFixture(blocks: blocks, hidden: hidden, intermediate: intermediate, seed: seed, dtype: dtype),
      to: model)
  }

  /// `mvc init <model>`; records the root state.
  mutating func initialize(sourceLocation: SourceLocation = #_sourceLocation) throws {
    let result = runMVC(["init", model.lastPathComponent], in: dir)
    expectSuccess(result, "init", sourceLocation: sourceLocation)
    try #require(result.status == 0, sourceLocation: sourceLocation)
    states.append(try snapshot(model))
  }

  /// The file of the working model that holds `tensor`.
  func file(holding tensor: String) throws -> URL {
    var isDirectory: ObjCBool = false
    _ = FileManager.default.fileExists(atPath: model.path, isDirectory: &isDirectory)
    return isDirectory.boolValue ? try shardFile(of: tensor, in: model) : model
  }

  /// All tensor names of the working model.
  func tensorNames() throws -> [String] {
    var isDirectory: ObjCBool = false
    _ = FileManager.default.fileExists(atPath: model.path, isDirectory: &isDirectory)
    guard isDirectory.boolValue else { return try LowRankEditor.tensorNames(model) }
    let data = try Data(contentsOf: model.appendingPathComponent("model.safetensors.index.json"))
    let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    return ((object?["weight_map"] as? [String: String]) ?? [:]).keys.sorted()
  }

  /// The 2-D tensors (the ones editors change).
  func matrixNames() throws -> [String] { try tensorNames().filter { !$0.contains("layernorm") } }

  /// Edits a random matrix with a rank-`rank` update, as an external editor would.
  @discardableResult
  mutating func edit(rank: Int, tensor: String? = nil) throws -> AppliedEdit {
    let names = try matrixNames()
    let name = tensor ?? names[Int(rng.next() % UInt64(names.count))]
    return try LowRankEditor.edit(try file(holding: name), tensor: name, rank: rank, rng: &rng)
  }

  /// `mvc commit -m MESSAGE`; records the working state after it.
  @discardableResult
  mutating func commit(_ message: String, sourceLocation: SourceLocation = #_sourceLocation) throws
    -> (status: Int32, stdout: String, stderr: String)
  {
    let result = runMVC(["commit", "-m", message], in: dir)
    expectSuccess(result, "commit '\(message)'", sourceLocation: sourceLocation)
    try #require(result.status == 0, sourceLocation: sourceLocation)
    states.append(try snapshot(model))
    return result
  }

  /// Edits and commits `count` times, alternating rank 1 and rank 8.
  mutating func editAndCommit(_ count: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
    for i in 1...count {
      let applied = try edit(rank: i % 2 == 1 ? 1 : 8)
      try commit("edit \(states.count): \(applied.tensor) rank \(applied.rank)", sourceLocation: sourceLocation)
    }
  }

  /// Commit ids from `mvc log --json`, newest first.
  func commitIDs(_ revision: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
    let log = try logJSON(revision, sourceLocation: sourceLocation)
    let commits = try #require(log["commits"] as? [[String: Any]], sourceLocation: sourceLocation)
    return commits.compactMap { $0["id"] as? String }
  }

  func logJSON(_ revision: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
    let result = runMVC(["log", "--json"] + (revision.map { [$0] } ?? []), in: dir)
    expectSuccess(result, "log --json", sourceLocation: sourceLocation)
    let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
    return try #require(object as? [String: Any], sourceLocation: sourceLocation)
  }

  /// Expects the working model to hold exactly `states[index]`.
  func expectWorkingState(_ index: Int, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    try expectState(of: model, equals: states[index], what, sourceLocation: sourceLocation)
  }

  func expectState(
    of url: URL, equals expected: [String: Data], _ what: String, sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let actual = try snapshot(url)
    #expect(
      actual.keys.sorted() == expected.keys.sorted(), "\(what): files \(actual.keys.sorted())",
      sourceLocation: sourceLocation)
    for (file, bytes) in expected {
      guard let got = actual[file] else { continue }
      expectSameBytes(got, bytes, "\(what) '\(file)'", sourceLocation: sourceLocation)
    }
  }

  /// Expects `mvc status` to report a clean working model.
  func expectClean(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let result = runMVC(["status"], in: dir)
    expectSuccess(result, "status after \(what)", sourceLocation: sourceLocation)
    #expect(
      result.stdout.contains("nothing to commit"), "status after \(what): \(result.stdout)",
      sourceLocation: sourceLocation)
  }

  /// Runs a command that must fail: exit 128, `fatal: ` naming `names`, `.mvc` and the model unchanged.
  @discardableResult
  func expectRefused(
    _ args: [String], naming names: [String], sourceLocation: SourceLocation = #_sourceLocation
  ) -> (status: Int32, stdout: String, stderr: String) {
    let repositoryBefore = treeHash(of: repository)
    let modelBefore = treeHash(of: model, excluding: [])
    let result = runMVC(args, in: dir)
    expectFatal(result, naming: names, sourceLocation: sourceLocation)
    #expect(treeHash(of: repository) == repositoryBefore, "\(args): .mvc changed", sourceLocation: sourceLocation)
    #expect(
      treeHash(of: model, excluding: []) == modelBefore, "\(args): working model changed",
      sourceLocation: sourceLocation)
    return result
  }
}

/// ‖a − b‖_F / ‖b‖_F in Double.
func relativeError(_ a: [Float], _ b: [Double]) -> Double {
  precondition(a.count == b.count)
  var difference = 0.0
  var norm = 0.0
  for (x, y) in zip(a, b) {
    difference += (Double(x) - y) * (Double(x) - y)
    norm += y * y
  }
  return (difference / max(norm, .leastNormalMagnitude)).squareRoot()
}
