internal import CGit2
import Foundation

/// Calls `body` with a `git_strarray` of copies of `strings`; the copies are `strdup`ed and
/// freed when the call returns, so no pointer escapes.
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
