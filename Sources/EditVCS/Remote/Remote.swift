import DeltaStore
import Foundation

/// A configured remote.
public struct RemoteInfo: Sendable, Equatable {
  public var name: String
  public var url: String
}

/// One reference a push, fetch or pull moved: nil `old` means created.
public struct RefUpdate: Sendable, Equatable {
  public var name: String
  public var old: ObjectID?
  public var new: ObjectID
}

public struct PushSummary: Sendable {
  package var remote: String
  public var url: String
  public var branch: String
  public var updates: [RefUpdate]
  /// Set when the root commit stores only a reference to the base file: clones need that
  /// file at this path.
  public var referenceBasePath: String?
}

public struct FetchSummary: Sendable {
  package var remote: String
  public var url: String
  public var updates: [RefUpdate]
}

public enum PullOutcome: Sendable, Equatable {
  case alreadyUpToDate(ObjectID)
  case fastForward(from: ObjectID?, to: ObjectID, rewrittenTensors: Int)
  /// `--rebase` on diverged histories: the local commits replayed on top of `onto`.
  case rebased(onto: ObjectID, tip: ObjectID, replayed: Int)
}

public struct CloneSummary: Sendable {
  package var root: String
  public var branch: String
  public var commit: ObjectID
  public var modelRelativePath: String
}

extension EditRepository {
  // MARK: remote add / remove / list

  public func remotes() throws -> [RemoteInfo] {
    try RepositoryError.wrap("listing remotes") {
      try git.remoteNames().sorted().map { RemoteInfo(name: $0, url: try git.remote(named: $0).url) }
    }
  }

  /// `mvc remote add NAME URL`.
  public func addRemote(name: String, url: String) throws {
    guard GitRepository.isValidRemoteName(name) else { throw RepositoryError.invalidRemoteName(name) }
    if try git.remoteNames().contains(name) { throw RepositoryError.remoteExists(name) }
    try RepositoryError.wrap("adding remote '\(name)'") { try git.createRemote(name: name, url: url) }
  }

  /// `mvc remote remove NAME`: its configuration and its `refs/remotes/NAME/*` go.
  public func removeRemote(name: String) throws {
    guard try git.remoteNames().contains(name) else { throw RepositoryError.remoteNotFound(name) }
    try RepositoryError.wrap("removing remote '\(name)'") { try git.deleteRemote(name: name) }
  }

  func lookupRemote(_ name: String) throws -> GitRemote {
    guard try RepositoryError.wrap("listing remotes", { try git.remoteNames() }).contains(name) else {
      throw RepositoryError.remoteNotFound(name)
    }
    return try RepositoryError.wrap("reading remote '\(name)'") { try git.remote(named: name) }
  }

  func referenceSnapshot(_ prefixes: [String]) throws -> [String: ObjectID] {
    var out: [String: ObjectID] = [:]
    for prefix in prefixes {
      for ref in try RepositoryError.wrap("listing references", { try git.referenceNames(withPrefix: prefix) }) {
        if let target = try? git.referenceTarget(ref) { out[ref] = target }
      }
    }
    return out
  }

  private static func updates(from before: [String: ObjectID], to after: [String: ObjectID]) -> [RefUpdate] {
    after.keys.sorted().compactMap { name in
      guard let new = after[name], before[name] != new else { return nil }
      return RefUpdate(name: name, old: before[name], new: new)
    }
  }

  // MARK: push

  /// `mvc push [REMOTE] [BRANCH]`: sends `refs/heads/BRANCH` (fast-forward only) and every tag.
  /// - Throws: `RepositoryError.pushRejected` when the remote refuses a reference,
  ///   `RepositoryError.transport` when it cannot be reached.
  public func push(remote name: String, branch: String?) throws -> PushSummary {
    let remote = try lookupRemote(name)
    let currentBranch = try head().branchName
    guard let branch = branch ?? currentBranch else { throw RepositoryError.detachedHead(operation: "push") }
    guard let tip = try branchTarget(branch) else { throw RepositoryError.branchNotFound(branch) }
    var refspecs = ["refs/heads/\(branch):refs/heads/\(branch)"]
    for tag in try RepositoryError.wrap("listing tags", { try git.referenceNames(withPrefix: "refs/tags/") }) {
      refspecs.append("\(tag):\(tag)")
    }
    let tracking = "refs/remotes/\(name)/\(branch)"
    let before = try? git.referenceTarget(tracking)
    let rejected: [(ref: String, reason: String)]
    do {
      if let target = GitRepository.openLocalBare(url: remote.url) {
        // A bare repository on this machine: objects copied as one pack, no packbuilder.
        rejected = try git.pushLocally(to: target, refspecs: refspecs)
      } else if let push = GitProtocolPush(repository: git, url: remote.url) {
        // git://: the pack streamed by PackWriter, no packbuilder.
        rejected = try push.push(refspecs: refspecs)
      } else {
        rejected = try remote.push(refspecs: refspecs)
      }
    } catch RepositoryError.git(let error, _) where error.isNonFastForward {
      throw RepositoryError.pushRejected(remote: remote.url, refs: ["refs/heads/\(branch) (non-fast-forward)"])
    } catch RepositoryError.git(let error, _) {
      throw RepositoryError.transport(operation: "push to", url: remote.url, message: error.message)
    }
    if !rejected.isEmpty {
      throw RepositoryError.pushRejected(remote: remote.url, refs: rejected.map { "\($0.ref) (\($0.reason))" })
    }
    // libgit2 moves the remote-tracking ref only when a fetch refspec covers it.
    if (try? git.referenceTarget(tracking)) != tip {
      try? git.forceReference(tracking, to: tip, message: "update by push")
    }
    let updates = before == tip ? [] : [RefUpdate(name: "refs/heads/\(branch)", old: before ?? nil, new: tip)]
    return PushSummary(
      remote: name, url: remote.url, branch: branch, updates: updates,
      referenceBasePath: try referenceBasePath(from: tip))
  }

  /// The base file of a `--reference-base` history, from its root commit's first tensor state.
  func referenceBasePath(from tip: ObjectID) throws -> String? {
    guard
      let root = try RepositoryError.wrap("walking history", { try git.walk(from: [tip], firstParentOnly: true) }).last
    else { return nil }
    let contents = try contents(of: root)
    guard let (name, tree) = contents.tensorTrees.min(by: { $0.key < $1.key }) else { return nil }
    let state = try storedState(tree, tensor: name).state
    return state.kind == .reference ? (state.referencePath ?? "?") : nil
  }

  // MARK: fetch

  /// `mvc fetch [REMOTE]`: branches into `refs/remotes/REMOTE/*`, tags into `refs/tags/*`.
  public func fetch(remote name: String) throws -> FetchSummary {
    let remote = try lookupRemote(name)
    let prefixes = ["refs/remotes/\(name)/", "refs/tags/"]
    let before = try referenceSnapshot(prefixes)
    let looseCopyBytes = try gcBigObjectBytes()
    do {
      try git.copyObjectsBeforeFetch(from: remote.url, looseCopyBytes: looseCopyBytes)
      try remote.fetch(refspecs: nil, reflog: "fetch \(name)")
    } catch RepositoryError.git(let error, _) {
      throw RepositoryError.transport(operation: "fetch from", url: remote.url, message: error.message)
    }
    let after = try referenceSnapshot(prefixes)
    let updates = Self.updates(from: before, to: after)
    do {
      let known = Array(before.values) + Array(try referenceSnapshot(["refs/heads/"]).values)
      try validateIncoming(tips: updates.map(\.new), known: known, from: remote.url)
    } catch {
      // The objects stay (unreachable, for gc); no reference points at them.
      for update in updates {
        if let old = update.old {
          try? git.forceReference(update.name, to: old, message: "fetch \(name): refused")
        } else {
          try? git.deleteReference(update.name)
        }
      }
      throw error
    }
    return FetchSummary(remote: name, url: remote.url, updates: updates)
  }

  // MARK: pull

  /// `mvc pull [REMOTE] [BRANCH]`: fetch, then fast-forward the current branch and rewrite the
  /// working model through the journaled checkout. Refuses uncommitted changes.
  /// - Throws: `RepositoryError.diverged` when neither side contains the other,
  ///   unless `rebase`, which replays the local commits' deltas onto the remote's
  ///   (``rebase(onto:)``); `RepositoryError.uncommittedChanges`.
  public func pull(remote name: String, branch: String?, rebase: Bool = false) throws -> PullOutcome {
    try refuseDuringBisect()
    let headState = try head()
    guard let current = headState.branchName else { throw RepositoryError.detachedHead(operation: "pull") }
    let remoteBranch = branch ?? current
    _ = try fetch(remote: name)
    let tracking = "refs/remotes/\(name)/\(remoteBranch)"
    guard let incoming = try RepositoryError.wrap("reading '\(tracking)'", { try git.referenceTarget(tracking) }) else {
      throw RepositoryError.noRemoteBranch(remote: name, branch: remoteBranch)
    }
    guard let local = headState.commit else {
      // An unborn branch simply takes the remote's history.
      let summary = try moveWorkingModel(
        to: incoming, attach: .branch(name: current, commit: incoming), force: true, expectedHead: nil,
        reflog: "pull: from \(name)/\(remoteBranch)", current: headState)
      return .fastForward(from: nil, to: incoming, rewrittenTensors: summary.rewrittenTensors.count)
    }
    let ancestry = { (a: ObjectID, b: ObjectID) in
      try RepositoryError.wrap("comparing histories") { try self.git.isAncestor(a, of: b) }
    }
    if try ancestry(incoming, local) { return .alreadyUpToDate(local) }
    guard try ancestry(local, incoming) else {
      guard rebase else { throw RepositoryError.diverged(remote: name, branch: remoteBranch) }
      let (tip, replayed) = try self.rebase(onto: incoming)
      return .rebased(onto: incoming, tip: tip, replayed: replayed)
    }
    let summary = try moveWorkingModel(
      to: incoming, attach: .branch(name: current, commit: incoming), force: false, expectedHead: local,
      reflog: "pull: fast-forward to \(name)/\(remoteBranch)", current: headState, origHead: local)
    return .fastForward(from: local, to: incoming, rewrittenTensors: summary.rewrittenTensors.count)
  }

  // MARK: clone

  /// `mvc clone URL DIR`: creates DIR, fetches everything into `DIR/.mvc`, derives the working
  /// model's path from the default branch's `model/layout.json` (a single file keeps its file
  /// name; a sharded model becomes the folder `model`), and writes the working model.
  /// On failure nothing is left behind in DIR.
  /// - Parameter referenceBase: the user's copy of the base model, for a repository whose base
  ///   is stored by reference (`init --reference-base`); a clone never reads a file outside it
  ///   because a commit names it.
  public static func clone(
    url: String, into directory: String, referenceBase: String? = nil, environment: RepositoryEnvironment = .init()
  ) throws -> (EditRepository, CloneSummary) {
    let root = (directory as NSString).standardizingPath
    let fileManager = FileManager.default
    var createdRoot = false
    if fileManager.fileExists(atPath: root) {
      guard ((try? fileManager.contentsOfDirectory(atPath: root)) ?? ["?"]).isEmpty else {
        throw RepositoryError.destinationExists(path: directory)
      }
    } else {
      do { try fileManager.createDirectory(atPath: root, withIntermediateDirectories: true) } catch {
        throw RepositoryError.cannotAccess(path: root, operation: "create", reason: error.localizedDescription)
      }
      createdRoot = true
    }
    let gitDirectory = (root as NSString).appendingPathComponent(directoryName)
    do {
      let (branch, commit, model) = try cloneObjects(url: url, gitDirectory: gitDirectory)
      let repository = try open(root: root, environment: environment)
      let fetched = try repository.referenceSnapshot(["refs/remotes/origin/", "refs/tags/"])
      try repository.validateIncoming(tips: Array(Set(fetched.values)), known: [], from: url)
      if let referenceBase { try repository.trustReferenceBase(at: referenceBase) }
      // Every object was checked against its id as it arrived (libgit2's indexer over git://,
      // its reads of a path's objects), and the checkout checks every tensor against its
      // XXH3-128 hash: libgit2 need not hash each packed chunk a second time as it reads it.
      try GitRepository.withoutReadHashCheck { try repository.checkout(commit, branch: branch, force: true) }
      return (repository, CloneSummary(root: root, branch: branch, commit: commit, modelRelativePath: model))
    } catch {
      if createdRoot {
        try? fileManager.removeItem(atPath: root)
      } else {
        for item in (try? fileManager.contentsOfDirectory(atPath: root)) ?? [] {
          try? fileManager.removeItem(atPath: (root as NSString).appendingPathComponent(item))
        }
      }
      throw error
    }
  }

  private static func cloneObjects(url: String, gitDirectory: String) throws -> (String, ObjectID, String) {
    let git = try RepositoryError.wrap("creating '\(gitDirectory)'") {
      try GitRepository.create(at: gitDirectory, initialBranch: defaultBranch)
    }
    try RepositoryError.wrap("writing .mvc/config") {
      try git.setConfigString("core.compression", "0")
      try git.setConfigString("pack.compression", "0")
      try git.createRemote(name: "origin", url: url)
    }
    let remote = try RepositoryError.wrap("reading remote 'origin'") { try git.remote(named: "origin") }
    let advertised: String?
    do {
      advertised = try remote.connectAndReadDefaultBranch()
      try git.copyObjectsBeforeFetch(from: url)
      try remote.fetch(refspecs: nil, reflog: "clone: from \(url)")
    } catch RepositoryError.git(let error, _) {
      throw RepositoryError.transport(operation: "clone from", url: url, message: error.message)
    }
    let branches = try RepositoryError.wrap("listing fetched branches") {
      try git.referenceNames(withPrefix: "refs/remotes/origin/").map {
        String($0.dropFirst("refs/remotes/origin/".count))
      }
      .filter { $0 != "HEAD" }.sorted()
    }
    let candidates = [advertised, defaultBranch, "master"].compactMap { $0 }
    guard let branch = candidates.first(where: branches.contains) ?? branches.first,
      let commit = try git.referenceTarget("refs/remotes/origin/\(branch)")
    else { throw RepositoryError.emptyRemote(url: url) }

    let model = try modelRelativePath(git: git, commit: commit)
    try RepositoryError.wrap("writing .mvc/config") {
      try git.forceReference("refs/heads/\(branch)", to: commit, message: "clone: from \(url)")
      try git.setSymbolicHead(branch: branch)
      try git.setConfigString("branch.\(branch).remote", "origin")
      try git.setConfigString("branch.\(branch).merge", "refs/heads/\(branch)")
      try git.setConfigString("mvc.model", model)
      // As `mvc init` writes it: each commit records its own format, which a reader checks
      // when it reads that commit, so an older build can still use a clone's older commits.
      try git.setConfigString("mvc.formatversion", String(baseFormatVersion))
    }
    return (branch, commit, model)
  }

  /// The working model's path for a clone, from `model/layout.json` of `commit`.
  static func modelRelativePath(git: GitRepository, commit: ObjectID) throws -> String {
    let what = "commit \(commit.shortHex)"
    let info = try RepositoryError.wrap("reading \(what)") { try git.commit(commit) }
    let root = try RepositoryError.wrap("reading \(what)") { try git.readTree(info.tree) }
    guard let model = root.first(where: { $0.name == TreeEntryName.model && $0.isTree }) else {
      throw RepositoryError.corruptObject(what: what, reason: "no model/ tree")
    }
    let modelEntries = try RepositoryError.wrap("reading \(what)") { try git.readTree(model.id) }
    guard let layoutEntry = modelEntries.first(where: { $0.name == TreeEntryName.layout }) else {
      throw RepositoryError.corruptObject(what: what, reason: "no model/layout.json")
    }
    let decoded = try JSONCoding.decode(
      ModelLayout.self, from: try git.readBlob(layoutEntry.id), what: "layout of \(what)")
    let layout = try decoded.validated(what: what, blobs: Set(modelEntries.map(\.name)))
    // A validated single-file layout names one plain file name.
    return layout.kind == "file" ? layout.shards[0].file : "model"
  }
}
