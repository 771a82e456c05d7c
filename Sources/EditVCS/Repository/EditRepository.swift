import Apply
import DeltaStore
import Foundation

/// Progress of a long operation, for the CLI's progress bar (libraries never print).
public struct ProgressEvent: Sendable {
  public var phase: String
  public var completed: Int
  public var total: Int
  public var byteCount: Int
}

/// What the CLI hands the library: identity, time and I/O hooks. Libraries never read the
/// environment; the CLI turns variables into these.
public struct RepositoryEnvironment {
  /// Commit time in seconds since the epoch; nil means now.
  package var commitTime: Int64?
  /// Called before each write, fsync and rename of the I/O layer (fault injection in tests).
  package var ioHook: IOHook?
  package var progress: ((ProgressEvent) -> Void)?
  /// zstd worker threads for full-tensor compression (0 = single-threaded).
  package var compressionWorkers: Int32
  /// Receives one line per timed phase (`MVC_TRACE_PERFORMANCE`, like git's `GIT_TRACE_PERFORMANCE`).
  /// Called from worker threads too (tensors rebuilt during a checkout), so it must serialize
  /// its own writes.
  package var tracePerformance: (@Sendable (String) -> Void)?
  /// Threads that rebuild tensors during a checkout and hash the working model (at least 1).
  /// Each rebuilding thread holds a tensor in memory; the caller picks the count (the CLI: the
  /// machine's cores), the library never does. `progress` and `ioHook` are still called on the
  /// calling thread only.
  package var workerThreads: Int
  /// Called after the rank finder's BLAS calls, before the CPU-bound work that makes none (the
  /// refinement): the CLI stops OpenBLAS's idle threads there, which otherwise spin on
  /// `sched_yield` beside the refinement's own threads. The library never does it itself.
  package var releaseBLASThreads: (@Sendable () -> Void)?
  /// Sets the process's BLAS thread count and returns the previous one: the rank finder runs
  /// its row parts on `workerThreads` threads with one BLAS thread each, then restores it. The
  /// library never does it itself; without it the parts' BLAS calls share BLAS's threads.
  package var setBLASThreadCount: (@Sendable (Int) -> Int)?

  public init(
    commitTime: Int64? = nil, ioHook: IOHook? = nil, progress: ((ProgressEvent) -> Void)? = nil,
    compressionWorkers: Int32 = 0, tracePerformance: (@Sendable (String) -> Void)? = nil, workerThreads: Int = 1,
    releaseBLASThreads: (@Sendable () -> Void)? = nil, setBLASThreadCount: (@Sendable (Int) -> Int)? = nil
  ) {
    self.releaseBLASThreads = releaseBLASThreads
    self.setBLASThreadCount = setBLASThreadCount
    self.commitTime = commitTime
    self.ioHook = ioHook
    self.progress = progress
    self.compressionWorkers = compressionWorkers
    self.tracePerformance = tracePerformance
    self.workerThreads = max(1, workerThreads)
  }
}

/// An mvc repository: the git repository in `.mvc/` and the working model it tracks.
///
/// Opening one takes the repository lock (released when the object goes away) and finishes
/// any rewrite of the working model that an interrupted command left in the journal.
public final class EditRepository {
  package static let directoryName = ".mvc"
  static let defaultBranch = "main"

  /// The folder that holds `.mvc/`.
  package let root: String
  /// The `.mvc` folder.
  public let gitDirectory: String
  /// The working model path relative to `root`, as recorded at init.
  public let modelRelativePath: String
  let git: GitRepository
  let environment: RepositoryEnvironment
  private let lock: RepositoryLock
  /// Decode scratch buffers kept between tensors, one per rebuilding thread at most.
  let decodeWorkspaces: DecodeWorkspacePool

  /// Why the interrupted move in the journal could not be finished when the repository was
  /// opened with `toleratingUnfinishedMove` (nil: there was none, or it was finished).
  package private(set) var unfinishedMoveError: Error?

  var contentsCache: [ObjectID: CommitContents] = [:]
  var stateCache: [ObjectID: StoredTensorState] = [:]
  /// `mvc-format` blob id → the version it states (checked when first read).
  var formatVersionCache: [ObjectID: Int] = [:]

  package var modelPath: String {
    modelRelativePath == "." ? root : (root as NSString).appendingPathComponent(modelRelativePath)
  }

  private init(root: String, git: GitRepository, lock: RepositoryLock, environment: RepositoryEnvironment) throws {
    self.root = root
    self.gitDirectory = git.path
    self.git = git
    self.lock = lock
    self.environment = environment
    decodeWorkspaces = DecodeWorkspacePool(limit: environment.workerThreads)
    guard let model = try RepositoryError.wrap("reading .mvc/config", { try git.configString("mvc.model") }) else {
      throw RepositoryError.corruptObject(what: "'\(git.path)/config'", reason: "no mvc.model entry")
    }
    modelRelativePath = try ModelPathRule.validated(
      model, configPath: (git.path as NSString).appendingPathComponent("config"))
    try ModelPathRule.checkStaysInside(root: root, relativePath: modelRelativePath)
    let version =
      Int(try RepositoryError.wrap("reading .mvc/config", { try git.configString("mvc.formatversion") }) ?? "1") ?? 1
    if version > repositoryFormatVersion {
      throw RepositoryError.unsupportedFormat(found: version, supported: repositoryFormatVersion)
    }
  }

  /// Finds `.mvc/` in `directory` or the nearest parent and opens it.
  /// - Parameter toleratingUnfinishedMove: when the journal's move cannot be finished, open
  ///   anyway and keep the error in `unfinishedMoveError` (for `fsck`) instead of throwing it.
  public static func open(
    searchingFrom directory: String, environment: RepositoryEnvironment = .init(),
    toleratingUnfinishedMove: Bool = false
  ) throws -> EditRepository {
    var current = (directory as NSString).standardizingPath
    while true {
      let candidate = (current as NSString).appendingPathComponent(directoryName)
      if FileManager.default.fileExists(atPath: (candidate as NSString).appendingPathComponent("HEAD")) {
        return try open(root: current, environment: environment, toleratingUnfinishedMove: toleratingUnfinishedMove)
      }
      if current == "/" || current.isEmpty { break }
      current = (current as NSString).deletingLastPathComponent
    }
    throw RepositoryError.notARepository(searchedFrom: directory)
  }

  static func open(
    root: String, environment: RepositoryEnvironment, toleratingUnfinishedMove: Bool = false
  ) throws -> EditRepository {
    let gitDirectory = (root as NSString).appendingPathComponent(directoryName)
    let lock = try RepositoryLock(path: (gitDirectory as NSString).appendingPathComponent("lock"))
    removeStaleGitLocks(in: gitDirectory)
    let git = try RepositoryError.wrap("opening '\(gitDirectory)'") { try GitRepository.open(at: gitDirectory) }
    git.ioHook = environment.ioHook
    // Repositories made before mvc kept reflogs get them from now on (best effort: a repository
    // on read-only media is still readable).
    try? git.keepReflogs()
    let repository = try EditRepository(root: root, git: git, lock: lock, environment: environment)
    do {
      try repository.recoverFromJournal()
    } catch let error where toleratingUnfinishedMove {
      repository.unfinishedMoveError = error
    }
    return repository
  }

  /// Creates `.mvc/` in `root` for the model at `modelPath` (relative to `root` or absolute
  /// inside it) and commits the model as the root commit.
  /// - Parameter referenceBase: a read-only copy of the model (file or shard folder) that the
  ///   repository reads the base from instead of storing it; every tensor must equal the model's.
  public static func initialize(
    root: String, modelPath: String, message: String = "base model", referenceBase: String? = nil,
    environment: RepositoryEnvironment = .init()
  ) throws -> (EditRepository, ObjectID) {
    let root = (root as NSString).standardizingPath
    let gitDirectory = (root as NSString).appendingPathComponent(directoryName)
    if FileManager.default.fileExists(atPath: gitDirectory) {
      throw RepositoryError.alreadyInitialized(path: gitDirectory)
    }
    var absoluteModel =
      modelPath.hasPrefix("/")
      ? (modelPath as NSString).standardizingPath
      : ((root as NSString).appendingPathComponent(modelPath) as NSString).standardizingPath
    // A Hugging Face folder saved as one file (model.safetensors, no index): track that file; its
    // side files are beside it in the same folder.
    let index = (absoluteModel as NSString).appendingPathComponent(WorkingModel.indexFileName)
    let single = (absoluteModel as NSString).appendingPathComponent(WorkingModel.singleFileName)
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: absoluteModel, isDirectory: &isDirectory), isDirectory.boolValue,
      !FileManager.default.fileExists(atPath: index), FileManager.default.fileExists(atPath: single)
    {
      absoluteModel = single
    }
    // The folder itself may be the model (`mvc init .` in a sharded folder): `.mvc` goes inside it.
    guard absoluteModel.hasPrefix(root + "/") || absoluteModel == root else {
      throw RepositoryError.modelOutsideRepository(model: modelPath, root: root)
    }
    // Validate the model completely before anything is created.
    let working = try WorkingModel(path: absoluteModel)
    _ = try working.sideFiles()
    let relative = absoluteModel == root ? "." : String(absoluteModel.dropFirst(root.count + 1))
    let git = try RepositoryError.wrap("creating '\(gitDirectory)'") {
      try GitRepository.create(at: gitDirectory, initialBranch: defaultBranch)
    }
    do {
      try RepositoryError.wrap("writing .mvc/config") {
        try git.setConfigString("mvc.model", relative)
        try git.setConfigString("mvc.formatversion", String(baseFormatVersion))
        // Our objects are zstd frames; keep git's own gc from recompressing them needlessly.
        try git.setConfigString("core.compression", "0")
        try git.setConfigString("pack.compression", "0")
      }
      let repository = try open(root: root, environment: environment)
      let reference = try referenceBase.map { path -> WorkingModel in
        let absolute = path.hasPrefix("/") ? path : (root as NSString).appendingPathComponent(path)
        // The user named this path, so a link in it is followed now, once; the repository
        // records where the bytes really are, and later reads open that path without following
        // links (a reference path is never followed through a symbolic link).
        return try WorkingModel(path: ((absolute as NSString).standardizingPath as NSString).resolvingSymlinksInPath)
      }
      if let reference { try repository.trustReferenceBase(at: reference.path) }
      let commit = try repository.commitBase(working: working, message: message, reference: reference)
      return (repository, commit)
    } catch {
      try? FileManager.default.removeItem(atPath: gitDirectory)
      throw error
    }
  }

  // MARK: Paths

  var statCachePath: String { (gitDirectory as NSString).appendingPathComponent("mvc-index.json") }
  var journalPath: String { (gitDirectory as NSString).appendingPathComponent("mvc-journal.json") }

  // MARK: HEAD and revisions

  public func head() throws -> HeadState {
    do {
      return try git.head()
    } catch RepositoryError.git(let error, _) {
      throw RepositoryError.unreadableHead(
        path: (gitDirectory as NSString).appendingPathComponent("HEAD"), detail: error.message)
    }
  }

  /// The commit HEAD points at; throws when the history is empty.
  public func headCommit() throws -> ObjectID {
    guard let commit = try head().commit else { throw RepositoryError.emptyHistory }
    return commit
  }

  /// Resolves a user's revision text once, at the edge, into a commit id.
  public func resolve(_ revision: String) throws -> ObjectID {
    do {
      return try git.resolveCommit(try git.expandingReflogSelector(revision) ?? revision)
    } catch RepositoryError.git(let error, _) where error.isNotFound || error.isInvalidSpec || error.isAmbiguous {
      let count = try? git.walk(from: [headCommit()]).count
      throw RepositoryError.unknownRevision(revision, commitCount: count)
    } catch RepositoryError.git(let error, _) {
      throw RepositoryError.git(error, context: "resolving '\(revision)'")
    }
  }

  public func commitInfo(_ id: ObjectID) throws -> GitRepository.Commit {
    try RepositoryError.wrap("reading commit \(id.shortHex)") { try git.commit(id) }
  }

  func signature() -> GitRepository.Signature {
    let identity = git.configuredIdentity() ?? ("mvc", "mvc@localhost")
    let time = environment.commitTime ?? Int64(Date().timeIntervalSince1970)
    return .init(name: identity.name, email: identity.email, time: time)
  }

  /// Moves HEAD's branch (or detached HEAD) from `old` to `new`, failing if someone moved it.
  func advanceHead(from old: ObjectID?, to new: ObjectID, message: String) throws {
    switch try head() {
    case .branch(let name, _):
      do {
        try git.updateReference("refs/heads/" + name, to: new, expected: old, message: message)
      } catch RepositoryError.git(let error, _) where error.isModified || error.isExists {
        throw RepositoryError.concurrentUpdate(ref: "refs/heads/" + name)
      }
    case .detached:
      try RepositoryError.wrap("moving HEAD") { try git.setHead(detachedAt: new, message: message) }
    }
  }

  func report(_ phase: String, _ completed: Int, _ total: Int, bytes: Int = 0) {
    environment.progress?(ProgressEvent(phase: phase, completed: completed, total: total, byteCount: bytes))
  }

  /// Runs `body`, reporting its wall time to the performance trace when one is set.
  func timed<T>(_ phase: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
    try timePhase(environment.tracePerformance, phase(), body)
  }
}

/// Runs `body`, reporting its wall time to `trace` (one line: seconds, then the phase) when set.
func timePhase<T>(
  _ trace: (@Sendable (String) -> Void)?, _ phase: @autoclosure () -> String, _ body: () throws -> T
) rethrows -> T {
  guard let trace else { return try body() }
  let start = DispatchTime.now().uptimeNanoseconds
  defer {
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    trace(String(format: "%.6f s: ", seconds) + phase())
  }
  return try body()
}
