internal import CGit2

/// One line of a reference's log: where the reference went, from where, why and when.
public struct ReflogEntry: Sendable {
  /// The reference's value after the update.
  public var id: ObjectID
  /// Its value before (nil when the update created the reference).
  public var previous: ObjectID?
  public var message: String
  public var committer: GitRepository.Signature
}

extension GitRepository {
  /// git keeps reflogs only in non-bare repositories by default; `.mvc` is bare, so every
  /// repository mvc makes or opens sets `core.logAllRefUpdates=always` (libgit2 then logs every
  /// reference update that carries a message). A value the user set is kept.
  func keepReflogs() throws {
    guard try configString("core.logallrefupdates") == nil else { return }
    try setConfigString("core.logAllRefUpdates", "always")
  }

  /// The full name of the reference `name` means (`main` → `refs/heads/main`, `HEAD` → `HEAD`),
  /// by git's rules (`git_reference_dwim`); nil when none exists. A name that is a reference
  /// itself is kept as it is: dwim follows symbolic references, so it would turn `HEAD` into
  /// the branch HEAD is on.
  func referenceFullName(_ name: String) throws -> String? {
    var reference: OpaquePointer?
    if git_reference_lookup(&reference, handle, name) == 0 {
      git_reference_free(reference)
      return name
    }
    let code = git_reference_dwim(&reference, handle, name)
    if code == GIT_ENOTFOUND.rawValue || code == GIT_EINVALIDSPEC.rawValue { return nil }
    try check(code, "git_reference_dwim", name)
    defer { git_reference_free(reference) }
    return git_reference_name(reference).map { String(cString: $0) }
  }

  /// The log of reference `fullName`, newest first (index n is `REF@{n}`); empty when none is kept.
  /// Wraps `git_reflog_read` / `git_reflog_free`.
  func reflog(_ fullName: String) throws -> [ReflogEntry] {
    var log: OpaquePointer?
    try check(git_reflog_read(&log, handle, fullName), "git_reflog_read", fullName)
    defer { git_reflog_free(log) }
    var entries: [ReflogEntry] = []
    for index in 0..<git_reflog_entrycount(log) {
      guard let entry = git_reflog_entry_byindex(log, index), let new = git_reflog_entry_id_new(entry) else {
        continue
      }
      let old = git_reflog_entry_id_old(entry).map { ObjectID($0.pointee) }
      let who = git_reflog_entry_committer(entry)?.pointee
      entries.append(
        ReflogEntry(
          id: ObjectID(new.pointee), previous: old?.isZero == true ? nil : old,
          message: git_reflog_entry_message(entry).map { String(cString: $0) } ?? "",
          committer: Signature(
            name: who?.name.map { String(cString: $0) } ?? "", email: who?.email.map { String(cString: $0) } ?? "",
            time: who.map { Int64($0.when.time) } ?? 0, offsetMinutes: who.map { Int32($0.when.offset) } ?? 0)))
    }
    return entries
  }
}

extension GitRepository {
  /// `REF@{n}` at the start of a revision, replaced by the id of entry n of REF's reflog (the
  /// rest, such as `~2` or `^`, is kept); nil when `spec` has no such selector.
  ///
  /// libgit2 1.5 reads `HEAD@{n}` from the log of the branch HEAD is on, not from HEAD's own log
  /// (libgit2 issue #6156), so mvc reads the log itself, as git does.
  func expandingReflogSelector(_ spec: String) throws -> String? {
    guard let open = spec.range(of: "@{"), let close = spec[open.upperBound...].firstIndex(of: "}"),
      let position = Int(spec[open.upperBound..<close]), position >= 0
    else { return nil }
    let name = String(spec[..<open.lowerBound])
    guard !name.isEmpty, let full = try referenceFullName(name) else { return nil }
    let entries = try reflog(full)
    guard position < entries.count else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_reflog_read", subject: spec,
        message: "the log of '\(full)' has \(entries.count) entries")
    }
    return entries[position].id.hex + spec[spec.index(after: close)...]
  }
}

extension ObjectID {
  /// The all-zero id git writes for "no value" (a reflog line that created its reference).
  var isZero: Bool { bytes.allSatisfy { $0 == 0 } }
}
