internal import CGit2
import Foundation

/// Calls `body` with a `git_strarray` of copies of `strings`; the copies are `strdup`ed and
/// freed when the call returns, so no pointer escapes.
@discardableResult
func withStrArray<T>(_ strings: [String], _ body: (UnsafePointer<git_strarray>) throws -> T) rethrows -> T {
  var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
  defer { for pointer in pointers { free(pointer) } }
  return try pointers.withUnsafeMutableBufferPointer { buffer in
    var array = git_strarray(strings: buffer.baseAddress, count: buffer.count)
    return try body(&array)
  }
}

/// The per-reference answers of a push, collected by `push_update_reference`.
private final class PushStatusBox {
  var rejected: [(ref: String, reason: String)] = []
}

/// A configured (named) remote of a repository.
///
/// Wraps `git_remote_lookup` / `git_remote_free`. Keeps its repository alive.
final class GitRemote {
  let repository: GitRepository
  private let handle: OpaquePointer
  let name: String
  let url: String

  init(repository: GitRepository, name: String) throws {
    var remote: OpaquePointer?
    try check(git_remote_lookup(&remote, repository.handle, name), "git_remote_lookup", name)
    guard let remote else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_remote_lookup", subject: name, message: "no remote")
    }
    self.repository = repository
    self.handle = remote
    self.name = name
    self.url = git_remote_url(remote).map { String(cString: $0) } ?? ""
  }

  deinit { git_remote_free(handle) }

  /// Connects for fetching and returns the branch the remote's HEAD names, if it says.
  /// Wraps `git_remote_connect` / `git_remote_default_branch`.
  func connectAndReadDefaultBranch() throws -> String? {
    var callbacks = git_remote_callbacks()
    try check(git_remote_init_callbacks(&callbacks, UInt32(GIT_REMOTE_CALLBACKS_VERSION)), "git_remote_init_callbacks")
    try check(git_remote_connect(handle, GIT_DIRECTION_FETCH, &callbacks, nil, nil), "git_remote_connect", url)
    var buffer = git_buf()
    defer { git_buf_dispose(&buffer) }
    guard git_remote_default_branch(&buffer, handle) == 0, let pointer = buffer.ptr else {
      git_error_clear()
      return nil
    }
    let ref = String(cString: pointer)
    return ref.hasPrefix("refs/heads/") ? String(ref.dropFirst("refs/heads/".count)) : nil
  }

  /// Downloads what `refspecs` name (nil: the configured fetch refspecs) and updates the
  /// local references. Wraps `git_remote_fetch`.
  func fetch(refspecs: [String]?, reflog: String) throws {
    var options = git_fetch_options()
    try check(git_fetch_options_init(&options, UInt32(GIT_FETCH_OPTIONS_VERSION)), "git_fetch_options_init")
    options.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL
    if let refspecs {
      try withStrArray(refspecs) { array in
        try check(git_remote_fetch(handle, array, &options, reflog), "git_remote_fetch", url)
      }
    } else {
      try check(git_remote_fetch(handle, nil, &options, reflog), "git_remote_fetch", url)
    }
  }

  /// Pushes `refspecs`; returns the references the remote refused, with its reason.
  /// Wraps `git_remote_push` with a `push_update_reference` callback.
  func push(refspecs: [String]) throws -> [(ref: String, reason: String)] {
    var options = git_push_options()
    try check(git_push_options_init(&options, UInt32(GIT_PUSH_OPTIONS_VERSION)), "git_push_options_init")
    try repository.limitDeltaSearch()
    let box = PushStatusBox()
    options.callbacks.push_update_reference = { refname, status, payload in
      guard let payload, let status else { return 0 }
      let box = Unmanaged<PushStatusBox>.fromOpaque(payload).takeUnretainedValue()
      box.rejected.append((refname.map { String(cString: $0) } ?? "?", String(cString: status)))
      return 0
    }
    try withExtendedLifetime(box) {
      options.callbacks.payload = Unmanaged.passUnretained(box).toOpaque()
      try withStrArray(refspecs) { array in
        try check(git_remote_push(handle, array, &options), "git_remote_push", url)
      }
    }
    return box.rejected
  }
}

extension GitRepository {
  /// Whether `name` is a valid remote name by git's rules (`git_remote_name_is_valid`).
  static func isValidRemoteName(_ name: String) -> Bool {
    guard !isReservedName(name) else { return false }
    var valid: Int32 = 0
    guard git_remote_name_is_valid(&valid, name) == 0 else { return false }
    return valid == 1
  }

  /// Adds remote `name` with the default fetch refspec `+refs/heads/*:refs/remotes/<name>/*`.
  /// Wraps `git_remote_create`.
  func createRemote(name: String, url: String) throws {
    var remote: OpaquePointer?
    try check(git_remote_create(&remote, handle, name, url), "git_remote_create", name)
    git_remote_free(remote)
  }

  /// Removes remote `name`, its configuration and its remote-tracking references.
  func deleteRemote(name: String) throws {
    try check(git_remote_delete(handle, name), "git_remote_delete", name)
  }

  /// The names of the configured remotes (`git_remote_list`).
  func remoteNames() throws -> [String] {
    var array = git_strarray()
    try check(git_remote_list(&array, handle), "git_remote_list")
    defer { git_strarray_dispose(&array) }
    var out: [String] = []
    for i in 0..<array.count {
      if let pointer = array.strings?[i] { out.append(String(cString: pointer)) }
    }
    return out
  }

  func remote(named name: String) throws -> GitRemote {
    try GitRemote(repository: self, name: name)
  }

  /// Sets `HEAD` to point symbolically at `refs/heads/<branch>` without checking it exists.
  func setSymbolicHead(branch: String) throws {
    var reference: OpaquePointer?
    try check(
      git_reference_symbolic_create(&reference, handle, "HEAD", "refs/heads/" + branch, 1, "clone: HEAD"),
      "git_reference_symbolic_create", branch)
    git_reference_free(reference)
  }
}

// MARK: Transfers to and from a repository on this machine

extension GitRepository {
  /// The bare repository that `url` names on this machine (a path or a `file://` URL), or nil
  /// for anything else (network URLs, `host:path`, a non-bare repository, no repository).
  static func openLocalBare(url: String) -> GitRepository? {
    var path = url
    if url.hasPrefix("file://") {
      guard let decoded = URL(string: url)?.path, !decoded.isEmpty else { return nil }
      path = decoded
    } else if url.contains("://") || (!url.hasPrefix("/") && !url.hasPrefix(".") && url.contains(":")) {
      return nil
    }
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
      return nil
    }
    guard let repository = try? GitRepository.open(at: path), git_repository_is_bare(repository.handle) == 1 else {
      git_error_clear()
      return nil
    }
    return repository
  }

  /// The unpeeled targets of the references under `prefixes` (annotated tags stay tag objects).
  func referenceTargets(withPrefixes prefixes: [String]) throws -> [ObjectID] {
    try prefixes.flatMap { prefix in
      try referenceNames(withPrefix: prefix).compactMap { try referenceTarget($0) }
    }
  }

  /// When `url` is a bare repository on this machine, copies what a fetch of its branches and
  /// tags would download as one pack written by ``PackWriter``, so that libgit2's fetch that
  /// follows finds every advertised object present and downloads nothing (its local transport
  /// would run the packbuilder: delta search and deflate over mvc's zstd chunks). Returns the
  /// number of objects copied (0 for any other URL).
  @discardableResult
  func copyObjectsBeforeFetch(from url: String, looseCopyBytes: Int? = GitRepository.bigObjectBytes) throws -> Int {
    guard let source = GitRepository.openLocalBare(url: url) else { return 0 }
    let tips = try source.referenceTargets(withPrefixes: ["refs/heads/", "refs/tags/"])
    let hidden = try references(withPrefix: "refs/").map(\.target)
    // Objects from another repository: libgit2 checks each against its id as it reads it; the
    // blobs of at least `looseCopyBytes` are stored loose, the rest packed.
    return try source.copyMissingObjects(
      reachableFrom: tips, hiding: hidden, to: self, verification: .libgit2, looseCopyBytes: looseCopyBytes)
  }

  /// A push to a bare repository on this machine with libgit2's rules (each `src:dst` refspec
  /// a fast-forward of what `dst` holds, else `GIT_ENONFASTFORWARD`; refs updated only after
  /// the objects are durable), its objects copied by ``PackWriter`` instead of the packbuilder.
  /// Each reference moves by compare-and-swap; returns the ones that could not, with why.
  func pushLocally(to remote: GitRepository, refspecs: [String]) throws -> [(ref: String, reason: String)] {
    var updates: [(ref: String, new: ObjectID, old: ObjectID?)] = []
    for spec in refspecs {
      let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
      guard parts.count == 2, let new = try referenceTarget(parts[0]) else {
        throw RepositoryError.libgit2(
          code: GIT_ENOTFOUND.rawValue, function: "push", subject: spec,
          message: "src refspec does not match any reference")
      }
      let old = try remote.referenceTarget(parts[1])
      if old == new { continue }
      if let old {
        guard try hasObject(old) else {
          throw RepositoryError.libgit2(
            code: GIT_ENONFASTFORWARD.rawValue, function: "push", subject: parts[1],
            message: "the remote's reference holds commits that are not present locally")
        }
        guard try mergeBase(new, old) == old else {
          throw RepositoryError.libgit2(
            code: GIT_ENONFASTFORWARD.rawValue, function: "push", subject: parts[1],
            message: "cannot push non-fastforwardable reference")
        }
      }
      updates.append((parts[1], new, old))
    }
    guard !updates.isEmpty else { return [] }
    let hidden = try remote.references(withPrefix: "refs/").map(\.target)
    _ = try copyMissingObjects(reachableFrom: updates.map(\.new), hiding: hidden, to: remote, verification: .own)
    var rejected: [(ref: String, reason: String)] = []
    for update in updates {
      do {
        try remote.updateReference(update.ref, to: update.new, expected: update.old, message: "push")
      } catch RepositoryError.git(let error, _) {
        rejected.append((update.ref, error.message))
      }
    }
    return rejected
  }

  /// Keeps libgit2's packbuilder (pushes over the network) from searching deltas between large
  /// blobs: libgit2 1.5 takes its big-file threshold from `pack.deltaCacheSize` (a slip for
  /// `core.bigFileThreshold`, which git reads and is set too). Keys the user set are left alone.
  func limitDeltaSearch() throws {
    for key in ["pack.deltaCacheSize", "core.bigFileThreshold"] where try configString(key) == nil {
      try setConfigString(key, String(Self.deltaSearchLimit))
    }
  }

  /// Blobs above this size are packed whole by libgit2 and git (mvc's chunks are zstd frames).
  static let deltaSearchLimit = 1 << 20
}
