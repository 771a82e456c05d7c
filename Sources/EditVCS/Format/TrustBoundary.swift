import DeltaStore
import Foundation

// The one place where data that someone else may have written — a commit's `meta.json`,
// `edit.json` and `model/layout.json` (from any remote), the config's `mvc.model` — becomes
// values the rest of mvc uses. Everything is checked here once, with overflow-safe arithmetic,
// before any path is joined, any count is looped over or any buffer is allocated; code past
// this point may multiply shapes and join file names without checking again.
//
// The rules follow huggingface/safetensors' `Metadata::validate` (no overflow, consistent
// sizes) and git's own rules for paths in trees (`verify_path`: no `..`, no `.git`).

/// Limits on what a repository may declare. They are far above any real model (the largest
/// tensor of a 405B-parameter model is ~4 GiB) and far below what overflows or exhausts memory.
enum RepositoryLimits {
  /// Dimensions of one tensor (real models use 1–5).
  static let maxDimensions = 16
  /// Bytes of one tensor: 1 TiB.
  static let maxTensorByteCount = 1 << 40
  /// Raw bytes per stored chunk (mvc writes 64 MiB chunks).
  static let maxChunkByteCount = 1 << 30
  /// Factor rank of one stored change (batches of 10,000 edits are stored at rank 10,000).
  static let maxRank = 1 << 20
  /// Float32 values in one factor (U or V): 16 GiB of factors.
  static let maxFactorElementCount = 1 << 32
  /// Bytes recorded as stored for one change (`stored_byte_count`).
  static let maxStoredByteCount = 1 << 44
  /// Changes one `edit.json` may list.
  static let maxChangeCount = 1 << 20
  /// Length of a name or path read from a repository.
  static let maxNameLength = 4096
}

/// A value from a repository that breaks a rule: thrown as `RepositoryError.untrustedData`.
private struct Violation: Error {
  var reason: String
  init(_ reason: String) { self.reason = reason }
}

/// `a · b` when it fits in an `Int` and is ≤ `limit`.
private func checkedProduct(_ factors: [Int], limit: Int, what: String) throws -> Int {
  var product = 1
  for factor in factors {
    guard factor >= 0 else { throw Violation("\(what) has a negative factor \(factor)") }
    let (result, overflow) = product.multipliedReportingOverflow(by: factor)
    guard !overflow, result <= limit else {
      throw Violation("\(what) \(factors) is larger than mvc accepts (\(limit))")
    }
    product = result
  }
  return product
}

private func checkHash(_ text: String?, field: String) throws {
  guard let text else { throw Violation("no \(field)") }
  guard ContentHash(string: text) != nil else {
    throw Violation("\(field) '\(text.prefix(80))' is not an xxh3-128 hash")
  }
}

private func checkCount(_ value: Int?, field: String, in range: ClosedRange<Int>) throws {
  guard let value else { return }
  guard range.contains(value) else { throw Violation("\(field) is \(value), outside \(range)") }
}

/// One path component that is safe to join to a folder: not empty, not `.` or `..`, no `/`,
/// no NUL or control characters, not `.mvc` (nor `.git`), not hidden. The same rule holds for
/// shard names from a commit's layout and from the user's own shard index.
enum SafePathComponent {
  /// Why `name` is not safe, or nil when it is.
  static func problem(_ name: String) -> String? {
    if name.isEmpty { return "is empty" }
    if name.utf8.count > 255 { return "is longer than a file name can be" }
    if name.hasPrefix(".") { return "'\(name)' is hidden or leaves the folder ('.', '..', '.mvc' are refused)" }
    if name.unicodeScalars.contains(where: { $0 == "/" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7F }) {
      return "'\(name)' contains '/', '\\' or a control character"
    }
    return nil
  }

  fileprivate static func check(_ name: String, field: String) throws {
    if let problem = problem(name) { throw Violation("\(field) \(problem)") }
  }
}

extension TensorState {
  /// Checks every field against the rules above and against the tensor's subtree (`blobs`).
  func validated(tensor: String, blobs: Set<String>) throws -> TensorState {
    try rethrowing(what: "meta.json of tensor '\(tensor)'") {
      guard name.utf8.count <= RepositoryLimits.maxNameLength else { throw Violation("name is too long") }
      guard shape.count <= RepositoryLimits.maxDimensions else {
        throw Violation("shape has \(shape.count) dimensions (at most \(RepositoryLimits.maxDimensions))")
      }
      guard shape.allSatisfy({ $0 >= 0 }) else { throw Violation("shape \(shape) has a negative dimension") }
      let elements = try checkedProduct(shape, limit: RepositoryLimits.maxTensorByteCount, what: "shape")
      let bits = try checkedProduct(
        [elements, dtype.bitCount], limit: RepositoryLimits.maxTensorByteCount * 8, what: "shape × dtype bits")
      guard bits % 8 == 0 else { throw Violation("shape \(shape) of \(dtype.rawValue) is not a whole number of bytes") }
      guard shard >= 0, shard <= RepositoryLimits.maxChangeCount else { throw Violation("shard is \(shard)") }
      try checkHash(hash, field: "hash")
      let bytes = bits / 8
      switch kind {
      case .full:
        guard let chunkCount, let chunkByteCount else {
          throw Violation("a full state needs chunk_count and chunk_byte_count")
        }
        guard (1...RepositoryLimits.maxChunkByteCount).contains(chunkByteCount) else {
          throw Violation("chunk_byte_count is \(chunkByteCount), outside 1...\(RepositoryLimits.maxChunkByteCount)")
        }
        // The chunk rule of FullTensorCodec.chunkRanges, computed without building the ranges.
        let width = dtype.byteCount ?? 1
        let step = max(width, chunkByteCount / width * width)
        let expected = bytes == 0 ? 0 : (bytes - 1) / step + 1
        guard chunkCount == expected else {
          throw Violation("chunk_count is \(chunkCount); \(bytes) bytes in chunks of \(step) make \(expected)")
        }
        if let chunkEncoding, ChunkEncoding(rawValue: chunkEncoding) == nil {
          throw Violation(
            "chunk_encoding is \(chunkEncoding); this mvc reads \(ChunkEncoding.allCases.map { "\($0.rawValue)" })")
        }
        for i in 0..<chunkCount where !blobs.contains(TreeEntryName.chunk(i)) {
          throw Violation("chunk \(TreeEntryName.chunk(i)) is missing")
        }
      case .lowRank:
        try checkHash(parentHash, field: "parent_hash")
        guard let rank, let rows, let cols else { throw Violation("a low-rank state needs rank, rows and cols") }
        guard (0...RepositoryLimits.maxRank).contains(rank) else {
          throw Violation("rank is \(rank), outside 0...\(RepositoryLimits.maxRank)")
        }
        guard rows >= 0, cols >= 0, try checkedProduct([rows, cols], limit: .max, what: "rows × cols") == elements
        else { throw Violation("rows × cols = \(rows) × \(cols) is not the shape's \(elements) elements") }
        _ = try checkedProduct([rows, rank], limit: RepositoryLimits.maxFactorElementCount, what: "U (rows × rank)")
        _ = try checkedProduct([cols, rank], limit: RepositoryLimits.maxFactorElementCount, what: "V (cols × rank)")
        if rank > 0, !(blobs.contains(TreeEntryName.u) && blobs.contains(TreeEntryName.v)) {
          throw Violation("factor blobs u.zst and v.zst are missing")
        }
        try checkCount(residualNonzeroCount, field: "residual_nonzero_count", in: 0...elements)
        if let residualFormat, !(1...repositoryFormatVersion).contains(residualFormat) {
          throw Violation("residual_format is \(residualFormat), outside 1...\(repositoryFormatVersion)")
        }
      case .reference:
        guard let referencePath, referencePath.hasPrefix("/"),
          referencePath.utf8.count <= RepositoryLimits.maxNameLength, !referencePath.contains("\0")
        else { throw Violation("a reference state needs an absolute reference_path") }
        if let referenceShardFile { try SafePathComponent.check(referenceShardFile, field: "reference_shard_file") }
      }
      return self
    }
  }
}

extension ModelLayout {
  /// Checks that every file the layout names stays inside the model folder, and that the
  /// tensor lists are consistent. `blobs` are the entries of the commit's `model/` tree.
  func validated(what: String, blobs: Set<String>) throws -> ModelLayout {
    try rethrowing(what: "model/layout.json of \(what)") {
      guard kind == "file" || kind == "sharded" else {
        throw Violation("kind '\(kind.prefix(40))' is neither 'file' nor 'sharded'")
      }
      guard !shards.isEmpty, shards.count <= RepositoryLimits.maxChangeCount else {
        throw Violation("\(shards.count) shards")
      }
      if kind == "file" {
        guard shards.count == 1 else { throw Violation("a single-file model with \(shards.count) files") }
        guard indexFile == nil else { throw Violation("a single-file model with an index file") }
      } else {
        // WorkingModel reads the index under this name only; another name could not round-trip.
        guard indexFile == WorkingModel.indexFileName else {
          throw Violation("index_file '\((indexFile ?? "none").prefix(200))' is not '\(WorkingModel.indexFileName)'")
        }
      }
      var files = Set<String>()
      var tensorNames = Set<String>()
      for shard in shards {
        try SafePathComponent.check(shard.file, field: "shard file")
        guard files.insert(shard.file).inserted, shard.file != indexFile else {
          throw Violation("the file '\(shard.file)' is named twice")
        }
        guard blobs.contains(shard.headerBlob) else {
          throw Violation("header blob '\(shard.headerBlob.prefix(80))' is missing")
        }
        for name in shard.tensors {
          guard name.utf8.count <= RepositoryLimits.maxNameLength, tensorNames.insert(name).inserted else {
            throw Violation("tensor '\(name.prefix(200))' is listed twice or is too long")
          }
        }
      }
      return self
    }
  }
}

extension EditRecord {
  func validated(what: String) throws -> EditRecord {
    try rethrowing(what: "edit.json of \(what)") {
      guard changes.count <= RepositoryLimits.maxChangeCount else { throw Violation("\(changes.count) changes") }
      for change in changes {
        try checkCount(change.storedByteCount, field: "stored_byte_count", in: 0...RepositoryLimits.maxStoredByteCount)
        try checkCount(change.rank, field: "rank", in: 0...RepositoryLimits.maxRank)
        try checkCount(
          change.residualNonzeroCount, field: "residual_nonzero_count", in: 0...RepositoryLimits.maxTensorByteCount)
      }
      if let tolerance, !(tolerance.isFinite && tolerance >= 0) { throw Violation("tolerance \(tolerance)") }
      return self
    }
  }
}

/// The working model's path from `.mvc/config` (`mvc.model`), relative to the repository's
/// folder: a plain relative path inside it, never `.mvc` or anything in it; or `.`, the folder
/// itself (a sharded model whose folder holds `.mvc`).
enum ModelPathRule {
  static func validated(_ path: String, configPath: String) throws -> String {
    do {
      return try check(path)
    } catch let violation as Violation {
      throw RepositoryError.invalidConfig(key: "mvc.model", file: configPath, reason: violation.reason)
    }
  }

  private static func check(_ path: String) throws -> String {
    guard !path.hasPrefix("/") else { throw Violation("'\(path)' is absolute") }
    // The repository's folder itself is the model folder (`mvc init .` in a sharded folder).
    if path == "." { return path }
    let components = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
    guard !components.isEmpty else { throw Violation("it is empty") }
    for component in components {
      guard component != ".", component != ".." else { throw Violation("'\(path)' leaves the repository's folder") }
      guard !component.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
        throw Violation("'\(path)' contains a control character")
      }
    }
    guard components[0] != EditRepository.directoryName, components[0] != ".git" else {
      throw Violation("'\(path)' is inside \(EditRepository.directoryName)")
    }
    return components.joined(separator: "/")
  }

  /// Refuses a model path whose folders lead outside `root` through a symbolic link (the last
  /// component itself is replaced, not followed, when mvc writes it).
  static func checkStaysInside(root: String, relativePath: String) throws {
    let parent = ((root as NSString).appendingPathComponent(relativePath) as NSString).deletingLastPathComponent
    guard let realRoot = realPath(root), let realParent = realPath(parent) else { return }
    guard realParent == realRoot || realParent.hasPrefix(realRoot.hasSuffix("/") ? realRoot : realRoot + "/") else {
      throw RepositoryError.invalidConfig(
        key: "mvc.model", file: ".mvc/config",
        reason: "the folder of '\(relativePath)' leads outside '\(root)' through a symbolic link (to '\(realParent)')")
    }
  }

  private static func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }
}

/// Runs `body`, turning a rule's violation into `RepositoryError.untrustedData` naming `what`.
private func rethrowing<T>(what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch let violation as Violation {
    throw RepositoryError.untrustedData(what: what(), reason: violation.reason)
  }
}

// MARK: Reference bases

extension EditRepository {
  /// The config key naming the one reference base (file or shard folder) this repository may
  /// read: set by `init --reference-base` and `clone --reference-base`, never by a remote.
  static let referenceBaseKey = "mvc.referencebase"

  func trustReferenceBase(at path: String) throws {
    let absolute = (path as NSString).standardizingPath
    try RepositoryError.wrap("writing .mvc/config") { try git.setConfigString(Self.referenceBaseKey, absolute) }
  }

  /// A `reference` state's `reference_path` is an absolute path written by whoever made the
  /// commit: it is read only when it is the base the user named for this repository (the file
  /// itself, or a shard file in the named folder), never because a commit says so.
  func checkTrustedReference(_ path: String, tensor: String) throws {
    let trusted = try RepositoryError.wrap("reading .mvc/config") { try git.configString(Self.referenceBaseKey) }
    let standardized = (path as NSString).standardizingPath
    if let trusted, standardized == trusted || (standardized as NSString).deletingLastPathComponent == trusted {
      return
    }
    throw RepositoryError.untrustedReferenceBase(path: path, tensor: tensor, trusted: trusted)
  }
}

// MARK: Resources a repository asks for

extension EditRepository {
  /// Refuses to allocate a tensor larger than this machine's memory: the limits above accept
  /// up to 1 TiB, which no buffer here could hold.
  static func checkAllocation(_ byteCount: Int, tensor: String) throws {
    let memory = ProcessInfo.processInfo.physicalMemory
    guard UInt64(byteCount) <= memory else {
      throw RepositoryError.insufficientResources(
        what: "tensor '\(tensor)'", needed: UInt64(byteCount), available: memory, resource: "memory")
    }
  }

  /// Refuses to write files that cannot fit: the sum of the tensors (and headers) a commit
  /// declares for the files about to be written, against the free space of their folder.
  /// Checked before the first byte, since all-zero tensors compress a thousandfold and the
  /// objects' size says nothing about it.
  func checkFreeSpace(forWriting byteCount: UInt64, at path: String, what: String) throws {
    var folder = path
    var info = statvfs()
    while statvfs(folder, &info) != 0 {
      let parent = (folder as NSString).deletingLastPathComponent
      guard parent != folder, !parent.isEmpty else { return }
      folder = parent
    }
    let available = UInt64(info.f_bavail) * UInt64(info.f_frsize)
    guard byteCount <= available else {
      throw RepositoryError.insufficientResources(
        what: what, needed: byteCount, available: available, resource: "free space in '\(folder)'")
    }
  }
}

extension EditRepository {
  /// The bytes the files of `layout` will hold (tensor data; headers are small and ignored),
  /// from the validated states, limited to `tensors` / `shards` when given.
  func declaredByteCount(
    of contents: CommitContents, layout: ModelLayout, tensors: Set<String>?, shards: Set<Int>?
  ) throws -> UInt64 {
    var total: UInt64 = 0
    for (index, shard) in layout.shards.enumerated() where shards?.contains(index) ?? true {
      for name in shard.tensors where tensors?.contains(name) ?? true {
        guard let tree = contents.tensorTrees[name] else { continue }
        // Each is ≤ 1 TiB and there are ≤ 2^20 of them per shard: no overflow in 64 bits.
        total &+= UInt64(try storedState(tree, tensor: name).state.byteCount)
      }
    }
    return total
  }

  /// A shard's stored header must list exactly the tensors the layout puts in it, each with
  /// its state's dtype and shape: the header decides where bytes are written.
  func checkHeader(_ header: [TensorInfo], matches states: [String: TensorState], shard: String, commit: ObjectID)
    throws
  {
    let what = "the header of '\(shard)' in commit \(commit.shortHex)"
    guard header.count == states.count else {
      throw RepositoryError.untrustedData(
        what: what, reason: "it lists \(header.count) tensors, the layout \(states.count)")
    }
    for info in header {
      guard let state = states[info.name], state.dtype == info.dtype, state.shape == info.shape else {
        throw RepositoryError.untrustedData(
          what: what, reason: "tensor '\(info.name.prefix(200))' differs from its stored state (name, dtype or shape)")
      }
    }
  }
}

// MARK: Checking what a remote sent

extension EditRepository {
  /// Checks every commit reachable from `tips` and not from `known` as `fsck` checks structure
  /// (format, layout, edit record, every tensor state's metadata), so a clone or fetch takes in
  /// nothing that a later command would refuse, like git's `transfer.fsckObjects`. States are
  /// cached by tree id: an edit's commit costs the tensors it changed.
  func validateIncoming(tips: [ObjectID], known: [ObjectID], from url: String) throws {
    let commits = try RepositoryError.wrap("walking the history fetched from \(url)") {
      try git.walk(from: tips, hiding: known)
    }
    for commit in commits {
      let contents = try contents(of: commit)
      _ = try layout(of: contents)
      _ = try editRecord(of: contents)
      _ = try sideFileBlobs(of: contents)
      for (name, tree) in contents.tensorTrees { _ = try storedState(tree, tensor: name) }
    }
  }
}

// MARK: Side files

extension EditRepository {
  /// The side files of a commit (name → blob), every name and size checked before use.
  /// - Throws: `RepositoryError.untrustedData` when the `files/` tree breaks a rule.
  func sideFileBlobs(of contents: CommitContents) throws -> [String: ObjectID] {
    guard let tree = contents.filesTree else { return [:] }
    let what = "files/ of commit \(contents.commit.shortHex)"
    let entries = try git.readTree(tree)
    guard entries.count <= SideFiles.maxCount else {
      throw RepositoryError.untrustedData(
        what: what, reason: "it holds \(entries.count) files (at most \(SideFiles.maxCount))")
    }
    var out: [String: ObjectID] = [:]
    for entry in entries {
      if let problem = SideFiles.problem(entry.name) {
        throw RepositoryError.untrustedData(what: what, reason: "the name \(problem)")
      }
      guard !entry.isTree else {
        throw RepositoryError.untrustedData(what: what, reason: "'\(entry.name)' is a folder, not a file")
      }
      let size = try RepositoryError.wrap("reading the size of '\(entry.name)'") { try git.objectSize(entry.id) }
      guard size <= SideFiles.maxByteCount else {
        throw RepositoryError.untrustedData(
          what: what, reason: "'\(entry.name)' is \(size) bytes (at most \(SideFiles.maxByteCount))")
      }
      out[entry.name] = entry.id
    }
    return out
  }
}
