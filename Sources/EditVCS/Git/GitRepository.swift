internal import CGit2
import DeltaStore
import Foundation

/// A bare git repository opened through libgit2, with loose objects written uncompressed.
///
/// Wraps `git_repository_init_ext` / `git_repository_open_bare` / `git_repository_free`.
/// mvc's blobs are already zstd-compressed, so zlib on top only costs time (a 256 MiB blob
/// took 7.5 s at the default level and 1.0 s at level 0); the object database is therefore
/// rebuilt with a loose backend at compression level 0 and fsync on (`git_odb_backend_loose`),
/// plus the pack backend so packed repositories (after `git gc` or a clone) still read.
public final class GitRepository {
  let handle: OpaquePointer
  private var hook: IOHook?
  /// The repository's directory (the `.mvc` folder).
  package let path: String

  private init(handle: OpaquePointer, path: String) throws {
    self.handle = handle
    self.path = path
    try installObjectDatabase()
  }

  deinit { git_repository_free(handle) }

  /// Creates a new bare repository at `path` whose HEAD points at `initialBranch`.
  package static func create(at path: String, initialBranch: String) throws -> GitRepository {
    precondition(libgit2InitCount > 0)
    var options = git_repository_init_options()
    try check(
      git_repository_init_options_init(&options, UInt32(GIT_REPOSITORY_INIT_OPTIONS_VERSION)),
      "git_repository_init_options_init")
    options.flags = GIT_REPOSITORY_INIT_MKPATH.rawValue | GIT_REPOSITORY_INIT_BARE.rawValue
    var repository: OpaquePointer?
    try initialBranch.withCString { branch in
      options.initial_head = branch
      try check(git_repository_init_ext(&repository, path, &options), "git_repository_init_ext", path)
    }
    guard let repository else {
      throw RepositoryError.libgit2(function: "git_repository_init_ext", subject: path, message: "no repository")
    }
    let created = try GitRepository(handle: repository, path: path)
    try created.keepReflogs()
    return created
  }

  /// Opens the bare repository at `path`.
  package static func open(at path: String) throws -> GitRepository {
    precondition(libgit2InitCount > 0)
    var repository: OpaquePointer?
    try check(git_repository_open_bare(&repository, path), "git_repository_open_bare", path)
    guard let repository else {
      throw RepositoryError.libgit2(function: "git_repository_open_bare", subject: path, message: "no repository")
    }
    return try GitRepository(handle: repository, path: path)
  }

  private func installObjectDatabase() throws {
    let objects = (path as NSString).appendingPathComponent("objects")
    var odb: OpaquePointer?
    try check(git_odb_new(&odb), "git_odb_new")
    guard let odb else { return }
    defer { git_odb_free(odb) }  // the repository keeps its own reference
    var loose: UnsafeMutablePointer<git_odb_backend>?
    // Level 1 for the small objects (trees, metadata); large blobs go through StoredBlobWriter.
    try check(git_odb_backend_loose(&loose, objects, 1, 1, 0, 0), "git_odb_backend_loose", objects)
    // Ownership of a backend passes to the odb once it is added.
    try check(git_odb_add_backend(odb, loose, 2), "git_odb_add_backend")
    var pack: UnsafeMutablePointer<git_odb_backend>?
    try check(git_odb_backend_pack(&pack, objects), "git_odb_backend_pack", objects)
    try check(git_odb_add_backend(odb, pack, 1), "git_odb_add_backend")
    try check(git_repository_set_odb(handle, odb), "git_repository_set_odb")
  }

  // MARK: Blobs

  /// Blobs at least this large are written as stored (uncompressed) zlib streams.
  static let storedBlobThreshold = 64 << 10

  /// Called before each write, fsync and rename of large blobs.
  package var ioHook: IOHook? {
    get { hook }
    set { hook = newValue }
  }

  /// Writes `bytes` as a blob and returns its id.
  package func writeBlob(_ bytes: UnsafeRawBufferPointer) throws -> ObjectID {
    if bytes.count >= Self.storedBlobThreshold {
      return try StoredBlobWriter.write(
        bytes, objectsDirectory: (path as NSString).appendingPathComponent("objects"), hook: hook)
    }
    var oid = git_oid()
    try check(
      git_blob_create_from_buffer(&oid, handle, bytes.baseAddress, bytes.count),
      "git_blob_create_from_buffer")
    return ObjectID(oid)
  }

  package func writeBlob(_ bytes: [UInt8]) throws -> ObjectID {
    try bytes.withUnsafeBytes { try writeBlob($0) }
  }

  /// Calls `body` with the blob's content, valid only during the call.
  package func withBlob<T>(_ id: ObjectID, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
    var oid = id.raw
    var blob: OpaquePointer?
    try check(git_blob_lookup(&blob, handle, &oid), "git_blob_lookup", id.hex)
    guard let blob else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_blob_lookup", subject: id.hex, message: "missing")
    }
    defer { git_blob_free(blob) }
    let size = Int(git_blob_rawsize(blob))
    return try body(UnsafeRawBufferPointer(start: git_blob_rawcontent(blob), count: size))
  }

  /// The blob as libgit2 holds it, without a copy; its content stays valid while the returned
  /// object lives (any thread may read it and release it).
  package func lookupBlob(_ id: ObjectID) throws -> GitBlob {
    var oid = id.raw
    var blob: OpaquePointer?
    try check(git_blob_lookup(&blob, handle, &oid), "git_blob_lookup", id.hex)
    guard let blob else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_blob_lookup", subject: id.hex, message: "missing")
    }
    return GitBlob(blob)
  }

  package func readBlob(_ id: ObjectID) throws -> [UInt8] {
    if let content = SmallLooseObject.read(id, type: "blob", objectsDirectory: objectsDirectory) { return content }
    return try withBlob(id) { Array($0) }
  }

  /// `objects/` of this repository (loose objects live in `objects/xx/yyyy…`).
  private var objectsDirectory: String { (path as NSString).appendingPathComponent("objects") }

  /// The loose blob `id`, mapped to be read in place; nil when the object is not loose (packed
  /// after `gc`, a clone or a fetch), in which case `withBlob` reads it.
  ///
  /// Touches no libgit2 handle, only the file `objects/xx/yyyy…` under `path`, so it may be called
  /// from any thread, concurrently with libgit2 calls on this repository's own thread.
  ///
  /// - Throws: `RepositoryError.git` naming the object and the file when the file is unreadable or damaged.
  package func looseBlob(_ id: ObjectID) throws -> LooseBlob? {
    try LooseBlob(id, repositoryPath: path)
  }

  /// Calls `body` with blob `id`'s content in consecutive pieces: in place from a loose object
  /// (`looseBlob`), else as one piece from libgit2 (`withBlob`). Uses libgit2, so call it from the
  /// repository's own thread.
  ///
  /// The loose path skips git's SHA-1 check; callers verify the content's own hash.
  package func forEachBlobPiece(_ id: ObjectID, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
    if let blob = try looseBlob(id) { return try blob.forEachPiece(body) }
    try withBlob(id, body)
  }

  /// Whether the object database holds `id` (without reading it).
  package func hasObject(_ id: ObjectID) throws -> Bool {
    var odb: OpaquePointer?
    try check(git_repository_odb(&odb, handle), "git_repository_odb")
    guard let odb else { return false }
    defer { git_odb_free(odb) }
    var oid = id.raw
    return git_odb_exists(odb, &oid) != 0
  }

  /// The size of object `id` as its header declares it, read without loading the object.
  package func objectSize(_ id: ObjectID) throws -> Int {
    var odb: OpaquePointer?
    try check(git_repository_odb(&odb, handle), "git_repository_odb")
    guard let odb else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_repository_odb", subject: id.hex, message: "no object database")
    }
    defer { git_odb_free(odb) }
    var oid = id.raw
    var size = 0
    var type = GIT_OBJECT_ANY
    try check(git_odb_read_header(&size, &type, odb, &oid), "git_odb_read_header", id.hex)
    return size
  }

  // MARK: Trees

  /// One entry of a tree, copied out of libgit2.
  package struct TreeEntry: Hashable, Sendable {
    package var name: String
    package var id: ObjectID
    package var isTree: Bool
    package init(name: String, id: ObjectID, isTree: Bool) {
      self.name = name
      self.id = id
      self.isTree = isTree
    }
  }

  /// Writes a tree holding exactly `entries` (names must be unique and free of '/').
  package func writeTree(_ entries: [TreeEntry]) throws -> ObjectID {
    var builder: OpaquePointer?
    try check(git_treebuilder_new(&builder, handle, nil), "git_treebuilder_new")
    guard let builder else {
      throw RepositoryError.libgit2(function: "git_treebuilder_new", subject: nil, message: "no builder")
    }
    defer { git_treebuilder_free(builder) }
    for entry in entries {
      var oid = entry.id.raw
      let mode = entry.isTree ? GIT_FILEMODE_TREE : GIT_FILEMODE_BLOB
      try check(git_treebuilder_insert(nil, builder, entry.name, &oid, mode), "git_treebuilder_insert", entry.name)
    }
    var out = git_oid()
    try check(git_treebuilder_write(&out, builder), "git_treebuilder_write")
    return ObjectID(out)
  }

  /// The entries of tree `id`, in git's order.
  package func readTree(_ id: ObjectID) throws -> [TreeEntry] {
    if let content = SmallLooseObject.read(id, type: "tree", objectsDirectory: objectsDirectory),
      let entries = SmallLooseObject.treeEntries(content)
    {
      return entries
    }
    var oid = id.raw
    var tree: OpaquePointer?
    try check(git_tree_lookup(&tree, handle, &oid), "git_tree_lookup", id.hex)
    guard let tree else { return [] }
    defer { git_tree_free(tree) }
    var entries: [TreeEntry] = []
    let count = git_tree_entrycount(tree)
    entries.reserveCapacity(count)
    for i in 0..<count {
      guard let entry = git_tree_entry_byindex(tree, i), let name = git_tree_entry_name(entry),
        let entryID = git_tree_entry_id(entry)
      else { continue }
      entries.append(
        TreeEntry(
          name: String(cString: name), id: ObjectID(entryID.pointee),
          isTree: git_tree_entry_type(entry) == GIT_OBJECT_TREE))
    }
    return entries
  }

  // MARK: Commits

  /// A commit's fields, copied out of libgit2.
  public struct Commit: Sendable, Equatable {
    public var id: ObjectID
    package var tree: ObjectID
    public var parents: [ObjectID]
    public var message: String
    public var authorName: String
    public var authorEmail: String
    /// Seconds since the epoch, and the author's offset from UTC in minutes.
    public var time: Int64
    public var timeOffsetMinutes: Int32

    package init(
      id: ObjectID, tree: ObjectID, parents: [ObjectID], message: String, authorName: String, authorEmail: String,
      time: Int64, timeOffsetMinutes: Int32
    ) {
      self.id = id
      self.tree = tree
      self.parents = parents
      self.message = message
      self.authorName = authorName
      self.authorEmail = authorEmail
      self.time = time
      self.timeOffsetMinutes = timeOffsetMinutes
    }

    public var summary: String {
      String(message.split(separator: "\n", omittingEmptySubsequences: false).first ?? "")
    }
  }

  public struct Signature: Sendable {
    public var name: String
    public var email: String
    public var time: Int64
    public var offsetMinutes: Int32
    package init(name: String, email: String, time: Int64, offsetMinutes: Int32 = 0) {
      self.name = name
      self.email = email
      self.time = time
      self.offsetMinutes = offsetMinutes
    }
  }

  /// A commit's tree and parents (first parent first): all a walk through history reads.
  package func commitLinks(_ id: ObjectID) throws -> (tree: ObjectID, parents: [ObjectID]) {
    if let content = SmallLooseObject.read(id, type: "commit", objectsDirectory: objectsDirectory),
      let links = SmallLooseObject.commitLinks(content)
    {
      return links
    }
    let info = try commit(id)
    return (info.tree, info.parents)
  }

  package func commit(_ id: ObjectID) throws -> Commit {
    var oid = id.raw
    var commit: OpaquePointer?
    try check(git_commit_lookup(&commit, handle, &oid), "git_commit_lookup", id.hex)
    guard let commit else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_commit_lookup", subject: id.hex, message: "missing")
    }
    defer { git_commit_free(commit) }
    var parents: [ObjectID] = []
    for i in 0..<git_commit_parentcount(commit) {
      if let parent = git_commit_parent_id(commit, i) { parents.append(ObjectID(parent.pointee)) }
    }
    let author = git_commit_author(commit)
    let tree = git_commit_tree_id(commit).map { ObjectID($0.pointee) } ?? id
    return Commit(
      id: id, tree: tree, parents: parents,
      message: git_commit_message(commit).map { String(cString: $0) } ?? "",
      authorName: author?.pointee.name.map { String(cString: $0) } ?? "",
      authorEmail: author?.pointee.email.map { String(cString: $0) } ?? "",
      time: author?.pointee.when.time ?? 0,
      timeOffsetMinutes: author?.pointee.when.offset ?? 0)
  }

  /// Writes a commit object; no reference moves (the caller moves one with `updateReference`).
  package func createCommit(
    tree: ObjectID, parents: [ObjectID], message: String, author: Signature
  ) throws -> ObjectID {
    var signature: UnsafeMutablePointer<git_signature>?
    try check(
      git_signature_new(&signature, author.name, author.email, author.time, author.offsetMinutes),
      "git_signature_new", author.name)
    defer { git_signature_free(signature) }
    var treeOID = tree.raw
    var treeHandle: OpaquePointer?
    try check(git_tree_lookup(&treeHandle, handle, &treeOID), "git_tree_lookup", tree.hex)
    defer { git_tree_free(treeHandle) }
    var parentHandles: [OpaquePointer?] = []
    defer { for p in parentHandles { git_commit_free(p) } }
    for parent in parents {
      var oid = parent.raw
      var commit: OpaquePointer?
      try check(git_commit_lookup(&commit, handle, &oid), "git_commit_lookup", parent.hex)
      parentHandles.append(commit)
    }
    var out = git_oid()
    _ = try parentHandles.withUnsafeMutableBufferPointer { buffer in
      try check(
        git_commit_create(
          &out, handle, nil, signature, signature, nil, message, treeHandle, buffer.count,
          buffer.baseAddress),
        "git_commit_create")
    }
    return ObjectID(out)
  }

  /// The identity from git's configuration (`user.name`, `user.email`), if any is set.
  package func configuredIdentity() -> (name: String, email: String)? {
    var signature: UnsafeMutablePointer<git_signature>?
    guard git_signature_default(&signature, handle) == 0, let signature else { return nil }
    defer { git_signature_free(signature) }
    guard let name = signature.pointee.name, let email = signature.pointee.email else { return nil }
    return (String(cString: name), String(cString: email))
  }

  // MARK: Revisions and history

  /// Resolves anything `git_revparse_single` accepts and peels it to a commit.
  package func resolveCommit(_ spec: String) throws -> ObjectID {
    var object: OpaquePointer?
    try check(git_revparse_single(&object, handle, spec), "git_revparse_single", spec)
    defer { git_object_free(object) }
    var peeled: OpaquePointer?
    try check(git_object_peel(&peeled, object, GIT_OBJECT_COMMIT), "git_object_peel", spec)
    defer { git_object_free(peeled) }
    guard let peeled, let oid = git_object_id(peeled) else {
      throw RepositoryError.libgit2(
        code: GIT_ENOTFOUND.rawValue, function: "git_object_peel", subject: spec, message: "not a commit")
    }
    return ObjectID(oid.pointee)
  }

  /// Commits reachable from `tips` and not from `hidden`, newest first: topological, then by
  /// time (git's `--date-order`), or with `byTime` false git's `--topo-order` (a merge's
  /// second-parent line whole before its first-parent line, as `log --graph` shows them).
  package func walk(
    from tips: [ObjectID], hiding hidden: [ObjectID] = [], firstParentOnly: Bool = false,
    reverse: Bool = false, byTime: Bool = true
  ) throws -> [ObjectID] {
    var walker: OpaquePointer?
    try check(git_revwalk_new(&walker, handle), "git_revwalk_new")
    guard let walker else { return [] }
    defer { git_revwalk_free(walker) }
    var mode = GIT_SORT_TOPOLOGICAL.rawValue | (byTime ? GIT_SORT_TIME.rawValue : 0)
    if reverse { mode |= GIT_SORT_REVERSE.rawValue }
    try check(git_revwalk_sorting(walker, mode), "git_revwalk_sorting")
    if firstParentOnly { try check(git_revwalk_simplify_first_parent(walker), "git_revwalk_simplify_first_parent") }
    for tip in tips {
      var oid = tip.raw
      try check(git_revwalk_push(walker, &oid), "git_revwalk_push", tip.hex)
    }
    for hide in hidden {
      var oid = hide.raw
      try check(git_revwalk_hide(walker, &oid), "git_revwalk_hide", hide.hex)
    }
    var out: [ObjectID] = []
    var oid = git_oid()
    while true {
      let code = git_revwalk_next(&oid, walker)
      if code == GIT_ITEROVER.rawValue { break }
      try check(code, "git_revwalk_next")
      out.append(ObjectID(oid))
    }
    return out
  }

  package func mergeBase(_ a: ObjectID, _ b: ObjectID) throws -> ObjectID? {
    var out = git_oid()
    var one = a.raw
    var two = b.raw
    let code = git_merge_base(&out, handle, &one, &two)
    if code == GIT_ENOTFOUND.rawValue { return nil }
    try check(code, "git_merge_base")
    return ObjectID(out)
  }

  /// Whether `commit` is `ancestor` or a descendant of it.
  package func isAncestor(_ ancestor: ObjectID, of commit: ObjectID) throws -> Bool {
    if ancestor == commit { return true }
    var a = commit.raw
    var b = ancestor.raw
    return try check(git_graph_descendant_of(handle, &a, &b), "git_graph_descendant_of") == 1
  }

  // MARK: Configuration

  package func configString(_ key: String) throws -> String? {
    var config: OpaquePointer?
    try check(git_repository_config(&config, handle), "git_repository_config")
    defer { git_config_free(config) }
    var buffer = git_buf()
    defer { git_buf_dispose(&buffer) }
    let code = git_config_get_string_buf(&buffer, config, key)
    if code == GIT_ENOTFOUND.rawValue { return nil }
    try check(code, "git_config_get_string_buf", key)
    return buffer.ptr.map { String(cString: $0) }
  }

  package func setConfigString(_ key: String, _ value: String) throws {
    var config: OpaquePointer?
    try check(git_repository_config(&config, handle), "git_repository_config")
    defer { git_config_free(config) }
    try check(git_config_set_string(config, key, value), "git_config_set_string", key)
  }
}

/// A blob read by libgit2 (`git_blob_lookup`), freed with `git_blob_free` when released.
///
/// `@unchecked Sendable` because of the C handle alone: the handle is a `let`, and the only calls
/// on it are `git_blob_rawcontent` / `git_blob_rawsize`, which read an object libgit2 never
/// changes once loaded, and `git_blob_free` in `deinit`, which drops a reference count libgit2
/// updates atomically (its object cache is thread-safe). So a plan built on the thread that owns
/// the repository may hand the blob to a worker thread.
package final class GitBlob: @unchecked Sendable {
  private let handle: OpaquePointer

  init(_ handle: OpaquePointer) { self.handle = handle }

  deinit { git_blob_free(handle) }

  /// The blob's content, valid while this object lives.
  package var content: UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(start: git_blob_rawcontent(handle), count: Int(git_blob_rawsize(handle)))
  }
}
