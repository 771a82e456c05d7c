import Apply
import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

/// `RepositoryError`: libgit2 failures arrive as `.git` by construction, the modules below are
/// carried whole, and every case reads as git's messages do and names a next step.
@Suite struct RepositoryErrorTests {
  static let gitError = GitError(code: -3, function: "git_blob_lookup", subject: "0123abc", message: "missing")

  /// One value of every case. `caseIndex` below is an exhaustive switch, so a new case does not
  /// compile until it is numbered there, and `everyCaseHasASample` fails until it has a sample here.
  static let samples: [RepositoryError] = [
    .notARepository(searchedFrom: "/tmp/x"),
    .alreadyInitialized(path: "/tmp/x"),
    .unsupportedFormat(found: 3, supported: 2),
    .missingWorkingModel(path: "model.safetensors"),
    .unknownRevision("HEAD~40", commitCount: 23),
    .emptyHistory,
    .corruptObject(what: "manifest of 0123abc", reason: "not JSON"),
    .git(gitError, context: nil),
    .locked(path: "/tmp/x/.mvc/lock", pid: 42),
    .uncommittedChanges(tensors: ["a", "b", "c", "d"]),
    .nothingToCommit,
    .layoutMismatch(file: "model.safetensors", tensor: "w", detail: "changed dtype from F32 to F16"),
    .deltaMismatch(file: "delta.safetensors", tensor: "w", detail: "shape [2, 3] does not match [3, 2]"),
    .hashMismatch(tensor: "w", revision: "0123abc", expected: "aa", actual: "bb"),
    .branchExists("alt"),
    .branchNotFound("alt"),
    .invalidRefName("a..b"),
    .tagExists("v1"),
    .cannotDeleteCurrentBranch("main"),
    .bisectInProgress,
    .noBisectInProgress,
    .concurrentUpdate(ref: "refs/heads/main"),
    .referenceBaseChanged(path: "/base.safetensors", tensor: "w"),
    .untrustedData(what: "tree 0123abc", reason: "entry '..' is not a tensor name"),
    .untrustedReferenceBase(path: "/etc/passwd", tensor: "w", trusted: nil),
    .insufficientResources(what: "checkout", needed: 10, available: 5, resource: "free disk space"),
    .invalidConfig(key: "mvc.model", file: ".mvc/config", reason: "path leaves the repository"),
    .journalUnusable(path: ".mvc/mvc-journal.json", reason: "not JSON"),
    .moveIncomplete(journal: ".mvc/mvc-journal.json", target: "0123abc", detail: "no space left on device"),
    .unreadableHead(path: ".mvc/HEAD", detail: "garbage"),
    .fileReplaced(path: "model.safetensors"),
    .remoteNotFound("origin"),
    .remoteExists("origin"),
    .invalidRemoteName("a b"),
    .transport(operation: "fetch from", url: "/nowhere", message: "could not find repository"),
    .pushRejected(remote: "/srv/models.git", refs: ["refs/heads/main (non-fast-forward)"]),
    .diverged(remote: "origin", branch: "main"),
    .noRemoteBranch(remote: "origin", branch: "dev"),
    .detachedHead(operation: "push"),
    .destinationExists(path: "copy"),
    .emptyRemote(url: "/srv/empty.git"),
    .apply(.nonFinite(operation: "low-rank factorization", elementIndex: 5), tensor: "w"),
    .storedData(.corruptResidual(reason: "run past the end"), tensor: "w", revision: "0123abc"),
    .cannotAccess(path: "facts.jsonl", operation: "read facts file", reason: nil),
    .tensorNotInCommit(tensor: "w", revision: "HEAD"),
    .notAFloatTensor(tensor: "ids", dtype: "I64", operation: "replayed"),
    .notAMatrix(tensor: "b", dtype: "F32", shape: [8], operation: "a LoRA adapter", revisions: "0123abc..4567def"),
    .tensorAddedOrRemoved(tensor: "w", change: "added", revisions: "commit 0123abc", operation: "a replayed commit"),
    .rootCommit(operation: "revert", commit: "0123abc"),
    .unrelatedHistories(revision: "other", operation: "merge"),
    .mergeCommitInRange(commit: "0123abc", operation: "rebase"),
    .cannotResolve(reason: "commit 0123abc (edit) recorded no keys"),
    .contradictoryBisectMarks(good: "0123abc", bad: "4567def"),
    .bisectRunNeedsMarks,
    .programNotRunnable(path: "./test.sh", reason: "no such program"),
    .bisectRunAborted(program: "test.sh", reason: "was killed by signal 9"),
    .modelOutsideRepository(model: "/elsewhere/model.safetensors", root: "/tmp/x"),
    .outputIsWorkingModel(path: "model.safetensors"),
    .notSharded,
    .shardOutOfRange(shard: 4, count: 3),
    .noTensorMatches(revision: "0123abc"),
    .nothingToExport,
    .notAnAncestor(from: "0123abc", to: "4567def"),
    .notLowRank(tensor: "w", revisions: "0123abc..4567def", maxRank: 4, rows: 16, cols: 16),
    .inputShapeMismatch(input: "covariance", shape: [3, 4], expected: "[8, 8]"),
    .missingCovariance,
    .loraScaleUnknown(file: "adapter_model.safetensors"),
    .invalidMethodName("ROME!"),
    .invalidProvenance(what: "hyper-parameters", reason: "they are not a JSON object"),
    .scaleDisagreesWithConfig(scale: 2, configScale: 1, file: "adapter_model.safetensors"),
    .sideFileTooLarge(path: "model/tokenizer.json", byteCount: 70_000_000, limit: 67_108_864),
    .resavedModelFolder(folder: "model", detail: "it names 'model-00002-of-00002.safetensors', which is not there"),
    .accumulatorUnknown(
      tensor: "model.layers.5.mlp.down_proj.weight", commit: "3f2a9c1 (full-model commit)",
      reason: "changed it without recording keys"),
  ]

  static func caseIndex(_ error: RepositoryError) -> Int {
    switch error {
    case .notARepository: 0
    case .alreadyInitialized: 1
    case .unsupportedFormat: 2
    case .missingWorkingModel: 3
    case .unknownRevision: 4
    case .emptyHistory: 5
    case .corruptObject: 6
    case .git: 7
    case .locked: 8
    case .uncommittedChanges: 9
    case .nothingToCommit: 10
    case .layoutMismatch: 11
    case .deltaMismatch: 12
    case .hashMismatch: 13
    case .branchExists: 14
    case .branchNotFound: 15
    case .invalidRefName: 16
    case .tagExists: 17
    case .cannotDeleteCurrentBranch: 18
    case .bisectInProgress: 19
    case .noBisectInProgress: 20
    case .concurrentUpdate: 21
    case .referenceBaseChanged: 22
    case .untrustedData: 23
    case .untrustedReferenceBase: 24
    case .insufficientResources: 25
    case .invalidConfig: 26
    case .journalUnusable: 27
    case .moveIncomplete: 28
    case .unreadableHead: 29
    case .fileReplaced: 30
    case .remoteNotFound: 31
    case .remoteExists: 32
    case .invalidRemoteName: 33
    case .transport: 34
    case .pushRejected: 35
    case .diverged: 36
    case .noRemoteBranch: 37
    case .detachedHead: 38
    case .destinationExists: 39
    case .emptyRemote: 40
    case .apply: 41
    case .storedData: 42
    case .cannotAccess: 43
    case .tensorNotInCommit: 44
    case .notAFloatTensor: 45
    case .notAMatrix: 46
    case .tensorAddedOrRemoved: 47
    case .rootCommit: 48
    case .unrelatedHistories: 49
    case .mergeCommitInRange: 50
    case .cannotResolve: 51
    case .contradictoryBisectMarks: 52
    case .bisectRunNeedsMarks: 53
    case .programNotRunnable: 54
    case .bisectRunAborted: 55
    case .modelOutsideRepository: 56
    case .outputIsWorkingModel: 57
    case .notSharded: 58
    case .shardOutOfRange: 59
    case .noTensorMatches: 60
    case .nothingToExport: 61
    case .notAnAncestor: 62
    case .notLowRank: 63
    case .inputShapeMismatch: 64
    case .missingCovariance: 65
    case .loraScaleUnknown: 66
    case .invalidMethodName: 67
    case .invalidProvenance: 68
    case .scaleDisagreesWithConfig: 69
    case .sideFileTooLarge: 70
    case .resavedModelFolder: 71
    case .accumulatorUnknown: 72
    }
  }
  static let caseCount = 73

  @Test func everyCaseHasASample() {
    #expect(Set(Self.samples.map(Self.caseIndex)) == Set(0..<Self.caseCount))
  }

  @Test(arguments: samples)
  func descriptionFollowsGitsGuidelinesAndHasAHint(_ error: RepositoryError) {
    #expect(gitStyleProblems(error).isEmpty, "\(error.errorDescription ?? "")")
  }

  @Test func aLibgit2FailureIsARepositoryErrorWithAHintWithoutAWrap() throws {
    try withTemporaryDirectory { dir in
      let missing = dir.appendingPathComponent("nothing-here").path
      do {
        _ = try GitRepository.open(at: missing)
        Issue.record("opened a repository at \(missing)")
      } catch RepositoryError.git(let error, let context) {
        #expect(error.function == "git_repository_open_bare")
        #expect(error.subject == missing)
        #expect(error.isNotFound)
        #expect(context == nil)
        let wrapped = RepositoryError.git(error, context: nil)
        #expect(wrapped.errorDescription == "git_repository_open_bare on '\(missing)' failed: \(error.message)")
        #expect(wrapped.recoverySuggestion == "an object or reference is missing: 'mvc fsck' checks the repository")
      }
    }
  }

  @Test func wrapAddsItsContextOnlyToALibgit2FailureThatHasNone() throws {
    #expect(throws: RepositoryError.git(Self.gitError, context: "reading blob")) {
      try RepositoryError.wrap("reading blob") { throw RepositoryError.git(Self.gitError, context: nil) }
    }
    #expect(throws: RepositoryError.git(Self.gitError, context: "inner")) {
      try RepositoryError.wrap("outer") {
        try RepositoryError.wrap("inner") { throw RepositoryError.git(Self.gitError, context: nil) }
      }
    }
    #expect(throws: RepositoryError.nothingToCommit) {
      try RepositoryError.wrap("outer") { throw RepositoryError.nothingToCommit }
    }
    #expect(
      RepositoryError.git(Self.gitError, context: "reading blob").errorDescription
        == "reading blob: git_blob_lookup failed: missing")
  }

  @Test func carriedErrorsKeepTheirHint() {
    let apply = ApplyError.lapackFailure(function: "LAPACKE_dgesdd", info: 3, meaning: "did not converge")
    let carried = RepositoryError.apply(apply, tensor: "w")
    #expect(carried.errorDescription == "tensor 'w': " + (apply.errorDescription ?? "?"))
    #expect(carried.recoverySuggestion == apply.recoverySuggestion)
    let stored = DeltaStoreError.zstdOutputSizeMismatch(expected: 8, actual: 7)
    let decoded = RepositoryError.storedData(stored, tensor: "w", revision: "0123abc")
    #expect(
      decoded.errorDescription
        == "corrupt stored data of tensor 'w' at 0123abc: compressed blob decompressed to 7 bytes, expected 8")
    #expect(decoded.recoverySuggestion == stored.recoverySuggestion)
  }

  @Test func aFoundationFileErrorBecomesCannotAccessWithAHint() throws {
    try withTemporaryDirectory { dir in
      let missing = dir.appendingPathComponent("no-such-file").path
      do {
        try RepositoryError.fileSystem("remove", missing) { try FileManager.default.removeItem(atPath: missing) }
        Issue.record("removed \(missing)")
      } catch RepositoryError.cannotAccess(let path, let operation, let reason) {
        #expect(path == missing && operation == "remove" && reason?.isEmpty == false)
      }
      #expect(throws: RepositoryError.nothingToCommit) {
        try RepositoryError.fileSystem("write", missing) { throw RepositoryError.nothingToCommit }
      }
    }
  }

  /// Representative refusals of the library, matched on their cases; nothing is written by any.
  @Test func refusalsAreTypedCases() throws {
    try withTemporaryDirectory { dir in
      let model = dir.appendingPathComponent("model.safetensors")
      try writeSafetensors(transformerFixture(blocks: 1, hidden: 8, intermediate: 16, seed: 1), to: model)
      let (repository, base) = try EditRepository.initialize(
        root: dir.path, modelPath: "model.safetensors", environment: RepositoryEnvironment(commitTime: 1_700_000_000))
      let before = try Data(contentsOf: model)
      #expect(throws: RepositoryError.rootCommit(operation: "revert", commit: base.shortHex)) {
        _ = try repository.revert(base)
      }
      #expect(throws: RepositoryError.rootCommit(operation: "cherry-pick", commit: base.shortHex)) {
        _ = try repository.cherryPick(base)
      }
      #expect(throws: RepositoryError.outputIsWorkingModel(path: model.path)) {
        try repository.materialize(base, to: model.path)
      }
      #expect(throws: RepositoryError.notSharded) {
        try repository.materialize(base, to: dir.appendingPathComponent("out.safetensors").path, shards: [0])
      }
      #expect(throws: RepositoryError.noTensorMatches(revision: base.shortHex)) {
        try repository.materialize(base, to: dir.appendingPathComponent("out.safetensors").path, tensors: [])
      }
      #expect(throws: RepositoryError.contradictoryBisectMarks(good: base.shortHex, bad: base.shortHex)) {
        _ = try repository.bisectStart(bad: base, good: [base])
      }
      #expect(try Data(contentsOf: model) == before)
      #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("out.safetensors").path))
    }
  }
}
