internal import CGit2

/// Where HEAD points: a branch (possibly unborn) or a detached commit.
public enum HeadState: Equatable, Sendable {
  case branch(name: String, commit: ObjectID?)
  case detached(ObjectID)

  public var commit: ObjectID? {
    switch self {
    case .branch(_, let commit): return commit
    case .detached(let commit): return commit
    }
  }

  public var branchName: String? {
    if case .branch(let name, _) = self { return name }
    return nil
  }
}

extension GitRepository {
  /// Reads HEAD without resolving it through libgit2's "unborn branch" error path.
  package func head() throws -> HeadState {
    var reference: OpaquePointer?
    try check(git_reference_lookup(&reference, handle, "HEAD"), "git_reference_lookup", "HEAD")
    defer { git_reference_free(reference) }
    if git_reference_type(reference) == GIT_REFERENCE_SYMBOLIC {
      guard let target = git_reference_symbolic_target(reference) else {
        throw RepositoryError.libgit2(function: "git_reference_symbolic_target", subject: "HEAD", message: "no target")
      }
      let refName = String(cString: target)
      let name = refName.hasPrefix("refs/heads/") ? String(refName.dropFirst(11)) : refName
      return .branch(name: name, commit: try referenceTarget(refName))
    }
    guard let oid = git_reference_target(reference) else {
      throw RepositoryError.libgit2(function: "git_reference_target", subject: "HEAD", message: "no target")
    }
    return .detached(ObjectID(oid.pointee))
  }

  /// The commit a direct reference points at, or nil when it does not exist.
  package func referenceTarget(_ name: String) throws -> ObjectID? {
    var oid = git_oid()
    let code = git_reference_name_to_id(&oid, handle, name)
    if code == GIT_ENOTFOUND.rawValue { return nil }
    try check(code, "git_reference_name_to_id", name)
    return ObjectID(oid)
  }

  /// Moves (or creates) `name` to `target` only if it still points at `expected`
  /// (nil: it must not exist yet). Compare-and-swap, as git's `update-ref <new> <old>`.
  package func updateReference(
    _ name: String, to target: ObjectID, expected: ObjectID?, message: String
  ) throws {
    var reference: OpaquePointer?
    var oid = target.raw
    if let expected {
      var old = expected.raw
      try check(
        git_reference_create_matching(&reference, handle, name, &oid, 1, &old, message),
        "git_reference_create_matching", name)
    } else {
      try check(git_reference_create(&reference, handle, name, &oid, 0, message), "git_reference_create", name)
    }
    git_reference_free(reference)
  }

  /// Sets or moves `name` unconditionally.
  package func forceReference(_ name: String, to target: ObjectID, message: String) throws {
    var reference: OpaquePointer?
    var oid = target.raw
    try check(git_reference_create(&reference, handle, name, &oid, 1, message), "git_reference_create", name)
    git_reference_free(reference)
  }

  package func deleteReference(_ name: String) throws {
    var reference: OpaquePointer?
    let code = git_reference_lookup(&reference, handle, name)
    if code == GIT_ENOTFOUND.rawValue { return }
    try check(code, "git_reference_lookup", name)
    defer { git_reference_free(reference) }
    try check(git_reference_delete(reference), "git_reference_delete", name)
  }

  /// Points HEAD at branch `name` (which may not exist yet); `message` goes to HEAD's reflog.
  package func setHead(branch name: String, message: String) throws {
    var reference: OpaquePointer?
    try check(
      git_reference_symbolic_create(&reference, handle, "HEAD", "refs/heads/" + name, 1, message),
      "git_reference_symbolic_create", name)
    git_reference_free(reference)
  }

  /// Detaches HEAD at `commit`; `message` goes to HEAD's reflog.
  package func setHead(detachedAt commit: ObjectID, message: String) throws {
    try forceReference("HEAD", to: commit, message: message)
  }

  /// Full names and targets of the references under `prefix` (e.g. "refs/heads/"), sorted by name.
  package func references(withPrefix prefix: String) throws -> [(name: String, target: ObjectID)] {
    var iterator: OpaquePointer?
    try check(git_reference_iterator_glob_new(&iterator, handle, prefix + "*"), "git_reference_iterator_glob_new")
    defer { git_reference_iterator_free(iterator) }
    var out: [(String, ObjectID)] = []
    var reference: OpaquePointer?
    while true {
      let code = git_reference_next(&reference, iterator)
      if code == GIT_ITEROVER.rawValue { break }
      try check(code, "git_reference_next")
      defer { git_reference_free(reference) }
      guard let name = git_reference_name(reference) else { continue }
      var resolved: OpaquePointer?
      guard git_reference_resolve(&resolved, reference) == 0 else { continue }
      defer { git_reference_free(resolved) }
      var oid = git_reference_target(resolved).map { $0.pointee } ?? git_oid()
      // Annotated tags point at tag objects: peel to the commit.
      var object: OpaquePointer?
      if git_object_lookup(&object, handle, &oid, GIT_OBJECT_ANY) == 0 {
        var peeled: OpaquePointer?
        if git_object_peel(&peeled, object, GIT_OBJECT_COMMIT) == 0, let id = git_object_id(peeled) {
          oid = id.pointee
        }
        git_object_free(peeled)
        git_object_free(object)
      }
      out.append((String(cString: name), ObjectID(oid)))
    }
    return out.sorted { $0.0 < $1.0 }
  }

  /// Whether `name` may name a branch or tag: libgit2's `git_branch_name_is_valid` (git's
  /// `check-ref-format --branch`), and none of the names git gives a meaning of its own (`@`,
  /// `HEAD`, `FETCH_HEAD`, `ORIG_HEAD`, ...), nothing under `refs/` (it would be
  /// `refs/heads/refs/...` and shadow the real refs when read back), no leading `-`.
  package static func isValidBranchName(_ name: String) -> Bool {
    guard !isReservedName(name), !name.hasPrefix("refs/") else { return false }
    var valid: Int32 = 0
    guard git_branch_name_is_valid(&valid, name) == 0 else { return false }
    return valid == 1
  }

  /// `@`, `HEAD` and the all-capitals `*_HEAD` names git writes itself, and a leading `-`
  /// (read as an option by every git command).
  static func isReservedName(_ name: String) -> Bool {
    name == "@" || name == "HEAD" || name.hasPrefix("-")
      || (name.hasSuffix("_HEAD") && name.allSatisfy { $0.isUppercase || $0 == "_" })
  }

  /// Creates an annotated tag object for `commit` and returns its id (the ref is set separately).
  package func createTagObject(
    name: String, commit: ObjectID, message: String, tagger: Signature
  ) throws -> ObjectID {
    var signature: UnsafeMutablePointer<git_signature>?
    try check(
      git_signature_new(&signature, tagger.name, tagger.email, tagger.time, tagger.offsetMinutes),
      "git_signature_new")
    defer { git_signature_free(signature) }
    var oid = commit.raw
    var object: OpaquePointer?
    try check(git_object_lookup(&object, handle, &oid, GIT_OBJECT_COMMIT), "git_object_lookup", commit.hex)
    defer { git_object_free(object) }
    var out = git_oid()
    try check(
      git_tag_annotation_create(&out, handle, name, object, signature, message),
      "git_tag_annotation_create", name)
    return ObjectID(out)
  }
}
