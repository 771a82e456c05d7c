internal import CGit2
import Foundation

/// What `packReachableObjects` did.
struct PackOutcome {
  var packName: String
  var objectCount: Int
  var removedLooseCount: Int
  var removedPackCount: Int
  /// Loose objects kept because the new pack does not hold them (unreachable ones).
  var keptLooseCount: Int
}

/// One pack index opened on its own, to ask which objects a pack holds.
///
/// Wraps `git_odb_new` + `git_odb_backend_one_pack` / `git_odb_free`.
final class SinglePackDatabase {
  private let odb: OpaquePointer

  init(indexPath: String) throws {
    var odb: OpaquePointer?
    try check(git_odb_new(&odb), "git_odb_new")
    guard let odb else { throw RepositoryError.libgit2(function: "git_odb_new", subject: indexPath, message: "no odb") }
    var backend: UnsafeMutablePointer<git_odb_backend>?
    let code = git_odb_backend_one_pack(&backend, indexPath)
    if code < 0 {
      git_odb_free(odb)
      try check(code, "git_odb_backend_one_pack", indexPath)
    }
    // Ownership of the backend passes to the odb once it is added.
    let added = git_odb_add_backend(odb, backend, 1)
    if added < 0 {
      git_odb_free(odb)
      try check(added, "git_odb_add_backend", indexPath)
    }
    self.odb = odb
  }

  deinit { git_odb_free(odb) }

  func contains(_ id: ObjectID) -> Bool {
    var oid = id.raw
    return git_odb_exists(odb, &oid) != 0
  }

  /// Every object id in the pack (`git_odb_foreach`).
  func allObjects() throws -> [ObjectID] {
    final class Box { var ids: [ObjectID] = [] }
    let box = Box()
    try withExtendedLifetime(box) {
      let payload = Unmanaged.passUnretained(box).toOpaque()
      try check(
        git_odb_foreach(
          odb,
          { oid, payload in
            guard let oid, let payload else { return 0 }
            Unmanaged<Box>.fromOpaque(payload).takeUnretainedValue().ids.append(ObjectID(oid.pointee))
            return 0
          }, payload), "git_odb_foreach")
    }
    return box.ids
  }
}

private func fsyncPath(_ path: String) throws {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else {
    throw RepositoryError.libgit2(function: "open", subject: path, message: String(cString: strerror(errno)))
  }
  defer { close(fd) }
  guard fsync(fd) == 0 else {
    throw RepositoryError.libgit2(function: "fsync", subject: path, message: String(cString: strerror(errno)))
  }
}

extension GitRepository {
  /// Packs every object reachable from any reference (and HEAD) into one new pack, makes it
  /// durable, then deletes the loose objects and the older packs it makes redundant.
  ///
  /// Wraps `git_packbuilder_new` / `git_packbuilder_insert_walk` / `git_packbuilder_write` /
  /// `git_packbuilder_free`. Nothing is deleted before the new pack and its index are written,
  /// fsynced (files and folder) and confirmed to hold each object about to go.
  func packReachableObjects() throws -> PackOutcome {
    let objects = (path as NSString).appendingPathComponent("objects")
    let packDirectory = (objects as NSString).appendingPathComponent("pack")
    try RepositoryError.fileSystem("create", packDirectory) {
      try FileManager.default.createDirectory(atPath: packDirectory, withIntermediateDirectories: true)
    }
    let oldIndexes = Set(
      ((try? FileManager.default.contentsOfDirectory(atPath: packDirectory)) ?? []).filter { $0.hasSuffix(".idx") })

    var builder: OpaquePointer?
    try check(git_packbuilder_new(&builder, handle), "git_packbuilder_new")
    guard let builder else {
      throw RepositoryError.libgit2(function: "git_packbuilder_new", subject: path, message: "no builder")
    }
    defer { git_packbuilder_free(builder) }
    var walker: OpaquePointer?
    try check(git_revwalk_new(&walker, handle), "git_revwalk_new")
    guard let walker else {
      throw RepositoryError.libgit2(function: "git_revwalk_new", subject: path, message: "no walker")
    }
    defer { git_revwalk_free(walker) }
    try check(git_revwalk_push_glob(walker, "refs/*"), "git_revwalk_push_glob")
    if let head = try? self.head().commit {
      var oid = head.raw
      try check(git_revwalk_push(walker, &oid), "git_revwalk_push", head.hex)
    }
    try check(git_packbuilder_insert_walk(builder, walker), "git_packbuilder_insert_walk")
    // Annotated tag objects are not commits: insert them by hand.
    for tag in try tagObjects() {
      var oid = tag.raw
      try check(git_packbuilder_insert(builder, &oid, nil), "git_packbuilder_insert", tag.hex)
    }
    let objectCount = Int(git_packbuilder_object_count(builder))
    try check(git_packbuilder_write(builder, packDirectory, 0, nil, nil), "git_packbuilder_write", packDirectory)
    guard let namePointer = git_packbuilder_name(builder) else {
      throw RepositoryError.libgit2(function: "git_packbuilder_name", subject: packDirectory, message: "no pack name")
    }
    let packName = "pack-" + String(cString: namePointer)
    let indexPath = (packDirectory as NSString).appendingPathComponent(packName + ".idx")
    try fsyncPath((packDirectory as NSString).appendingPathComponent(packName + ".pack"))
    try fsyncPath(indexPath)
    try fsyncPath(packDirectory)

    let pack = try SinglePackDatabase(indexPath: indexPath)
    var removedLoose = 0
    var keptLoose = 0
    let fileManager = FileManager.default
    for fanout in (try? fileManager.contentsOfDirectory(atPath: objects)) ?? [] where fanout.utf8.count == 2 {
      let directory = (objects as NSString).appendingPathComponent(fanout)
      for file in (try? fileManager.contentsOfDirectory(atPath: directory)) ?? [] {
        guard let id = ObjectID(hex: fanout + file) else { continue }
        if pack.contains(id) {
          let loose = (directory as NSString).appendingPathComponent(file)
          try RepositoryError.fileSystem("remove", loose) { try fileManager.removeItem(atPath: loose) }
          removedLoose += 1
        } else {
          keptLoose += 1
        }
      }
      if ((try? fileManager.contentsOfDirectory(atPath: directory)) ?? []).isEmpty {
        try? fileManager.removeItem(atPath: directory)
      }
    }
    var removedPacks = 0
    for index in oldIndexes where index != packName + ".idx" {
      let base = (packDirectory as NSString).appendingPathComponent(String(index.dropLast(4)))
      if fileManager.fileExists(atPath: base + ".keep") { continue }
      let old = try SinglePackDatabase(indexPath: (packDirectory as NSString).appendingPathComponent(index))
      guard try old.allObjects().allSatisfy({ pack.contains($0) }) else { continue }
      // The index goes first: a pack without its index is invisible, never half-read.
      try RepositoryError.fileSystem("remove", base + ".idx") { try fileManager.removeItem(atPath: base + ".idx") }
      try? fileManager.removeItem(atPath: base + ".rev")
      try RepositoryError.fileSystem("remove", base + ".pack") { try fileManager.removeItem(atPath: base + ".pack") }
      removedPacks += 1
    }
    try check(git_odb_refresh_for(self), "git_odb_refresh")
    return PackOutcome(
      packName: packName, objectCount: objectCount, removedLooseCount: removedLoose,
      removedPackCount: removedPacks, keptLooseCount: keptLoose)
  }

  /// Ids of the annotated tag objects that references point at.
  func tagObjects() throws -> [ObjectID] {
    var out: [ObjectID] = []
    for ref in try referenceNames(withPrefix: "refs/") {
      var oid = git_oid()
      guard git_reference_name_to_id(&oid, handle, ref) == 0 else { continue }
      var object: OpaquePointer?
      guard git_object_lookup(&object, handle, &oid, GIT_OBJECT_ANY) == 0 else { continue }
      defer { git_object_free(object) }
      if git_object_type(object) == GIT_OBJECT_TAG { out.append(ObjectID(oid)) }
    }
    return out
  }

  /// Full names of the references under `prefix`, unresolved (`git_reference_iterator_glob_new`).
  func referenceNames(withPrefix prefix: String) throws -> [String] {
    var iterator: OpaquePointer?
    try check(git_reference_iterator_glob_new(&iterator, handle, prefix + "*"), "git_reference_iterator_glob_new")
    defer { git_reference_iterator_free(iterator) }
    var out: [String] = []
    var name: UnsafePointer<CChar>?
    while true {
      let code = git_reference_next_name(&name, iterator)
      if code == GIT_ITEROVER.rawValue { break }
      try check(code, "git_reference_next_name")
      if let name { out.append(String(cString: name)) }
    }
    return out
  }
}

/// Drops the object database's cached pack list (`git_odb_refresh`).
private func git_odb_refresh_for(_ repository: GitRepository) -> Int32 {
  var odb: OpaquePointer?
  let code = git_repository_odb(&odb, repository.handle)
  guard code == 0, let odb else { return code }
  defer { git_odb_free(odb) }
  return git_odb_refresh(odb)
}
