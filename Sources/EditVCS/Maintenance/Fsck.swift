import DeltaStore
import Foundation

/// What `mvc fsck` found: one line per problem, and what it looked at.
public struct FsckReport: Sendable {
  public var problems: [String]
  public var commitCount: Int
  public var treeCount: Int
  public var blobCount: Int
  /// Tensor states rebuilt and checked against their hash (`--full` only).
  public var verifiedStateCount: Int
  public var isClean: Bool { problems.isEmpty }
}

extension EditRepository {
  /// The commits every reference (and HEAD) points at, peeled through annotated tags.
  /// Unresolvable references are reported in `problems`.
  func referenceTips(problems: inout [String]) throws -> [ObjectID] {
    var tips: [ObjectID] = []
    let names = try RepositoryError.wrap("listing references") { try git.referenceNames(withPrefix: "refs/") }
    for name in names + ["HEAD"] {
      do {
        tips.append(try git.resolveCommit(name))
      } catch RepositoryError.git(let error, _) {
        guard name == "HEAD" else {
          problems.append("broken reference '\(name)': \(error.message)")
          continue
        }
        // An unborn HEAD is no problem in an empty repository; garbage, or a branch that does
        // not exist beside others that do, is.
        do {
          let hasBranches = names.contains { $0.hasPrefix("refs/heads/") }
          if case .branch(let branch, nil) = try git.head(), hasBranches {
            problems.append("HEAD points at branch '\(branch)', which does not exist")
          }
        } catch RepositoryError.git(let headError, _) {
          let path = (gitDirectory as NSString).appendingPathComponent("HEAD")
          problems.append("HEAD '\(path)' is unreadable: \(headError.message)")
        }
      }
    }
    return Array(Set(tips)).sorted { $0.hex < $1.hex }
  }

  /// `mvc fsck [--full]`: every object reachable from the references is present and readable
  /// (libgit2 verifies each object's id as it reads it), every commit's tree is an mvc tree
  /// (`mvc-format`, `model/layout.json`, a decodable `meta.json` per tensor that matches the
  /// layout), and with `full` every tensor state of every commit is rebuilt from the stored
  /// objects alone (no snapshot cache) and checked against its hash.
  public func fsck(full: Bool) throws -> FsckReport {
    var problems: [String] = []
    if let error = unfinishedMoveError {
      let text = Self.describe(error)
      problems.append(text.contains(journalPath) ? text : "interrupted move in '\(journalPath)' not finished: \(text)")
    }
    let tips = try referenceTips(problems: &problems)
    let commits = try reachableCommits(from: tips, problems: &problems)
    var objects = ObjectsSeen()
    for commit in commits {
      guard let info = try? git.commit(commit) else { continue }
      checkTree(info.tree, commit: commit, seen: &objects, problems: &problems)
      report("checking objects", objects.trees.count, objects.trees.count)
    }
    let wellFormed = commits.filter { checkStructure(of: $0, problems: &problems) }
    let verified = full ? verifyStates(from: tips, wellFormed: wellFormed, problems: &problems) : 0
    return FsckReport(
      problems: problems, commitCount: commits.count, treeCount: objects.trees.count, blobCount: objects.blobs.count,
      verifiedStateCount: verified)
  }

  /// The commits reachable from `tips`, breadth first through all parents.
  private func reachableCommits(from tips: [ObjectID], problems: inout [String]) throws -> [ObjectID] {
    var commits: [ObjectID] = []
    var seenCommits = Set<ObjectID>()
    var queue = tips
    while let id = queue.popLast() {
      guard seenCommits.insert(id).inserted else { continue }
      do {
        let info = try git.commit(id)
        commits.append(id)
        queue.append(contentsOf: info.parents)
      } catch RepositoryError.git(let error, _) {
        problems.append("missing or unreadable commit \(id.hex): \(error.message)")
      }
    }
    return commits
  }

  /// The trees and blobs visited so far (each object is checked once).
  private struct ObjectsSeen {
    var trees = Set<ObjectID>()
    var blobs = Set<ObjectID>()
  }

  /// Every tree and blob under `root` is present and readable. Iteratively (an explicit stack):
  /// a hostile tree may be nested tens of thousands deep. Entry paths are built only for problems
  /// (from each node's parent), not per level, which would cost the square of the depth.
  private func checkTree(_ root: ObjectID, commit: ObjectID, seen: inout ObjectsSeen, problems: inout [String]) {
    var nodes: [(name: String, parent: Int)] = [("", -1)]
    func path(_ node: Int) -> String {
      var parts: [String] = []
      var current = node
      while current > 0 {
        parts.append(nodes[current].name)
        current = nodes[current].parent
      }
      let joined = parts.reversed().joined(separator: "/")
      return joined.count > 200 ? "…" + joined.suffix(200) : joined
    }
    var pending: [(id: ObjectID, node: Int)] = [(root, 0)]
    while let (id, node) = pending.popLast() {
      guard seen.trees.insert(id).inserted else { continue }
      do {
        for entry in try git.readTree(id) {
          if entry.isTree {
            nodes.append((entry.name, node))
            pending.append((entry.id, nodes.count - 1))
          } else if seen.blobs.insert(entry.id).inserted {
            do {
              try git.withBlob(entry.id) { _ in }
            } catch RepositoryError.git(let error, _) {
              nodes.append((entry.name, node))
              problems.append(
                "missing or unreadable blob \(entry.id.hex) ('\(path(nodes.count - 1))' in commit "
                  + "\(commit.shortHex)): \(error.message)")
            }
          }
        }
      } catch RepositoryError.git(let error, _) {
        problems.append(
          "missing or unreadable tree \(id.hex) ('\(path(node))' in commit \(commit.shortHex)): \(error.message)")
      } catch {
        problems.append("unreadable tree \(id.hex) in commit \(commit.shortHex): \(Self.describe(error))")
      }
    }
  }

  /// The mvc structure of one commit: its layout and its tensor trees name the same tensors, and
  /// every state decodes. True when the commit is well formed.
  private func checkStructure(of commit: ObjectID, problems: inout [String]) -> Bool {
    do {
      let contents = try contents(of: commit)
      let (layout, blobs) = try layout(of: contents)
      var named = Set<String>()
      for shard in layout.shards {
        if blobs[shard.headerBlob] == nil {
          problems.append("commit \(commit.hex): model/ has no header blob '\(shard.headerBlob)' for '\(shard.file)'")
        }
        named.formUnion(shard.tensors)
      }
      let stored = Set(contents.tensorTrees.keys)
      for name in named.subtracting(stored).sorted() {
        problems.append("commit \(commit.hex): layout names tensor '\(name)' but tensors/ has no state for it")
      }
      for name in stored.subtracting(named).sorted() {
        problems.append("commit \(commit.hex): tensors/ has '\(name)' but the layout does not name it")
      }
      _ = try editRecord(of: contents)
      var broken = false
      for (name, tree) in contents.tensorTrees.sorted(by: { $0.key < $1.key }) {
        do {
          _ = try storedState(tree, tensor: name)
        } catch {
          problems.append("commit \(commit.hex): \(Self.describe(error))")
          broken = true
        }
      }
      return !broken
    } catch {
      problems.append("commit \(commit.hex): \(Self.describe(error))")
      return false
    }
  }

  /// `fsck --full`: every state rebuilt, oldest commits first so each step replays one change.
  /// Returns the number of states verified.
  private func verifyStates(from tips: [ObjectID], wellFormed: [ObjectID], problems: inout [String]) -> Int {
    var verified = 0
    let order = (try? git.walk(from: tips, reverse: true)) ?? wellFormed.reversed()
    let wellFormedSet = Set(wellFormed)
    var checkedTrees = Set<ObjectID>()
    var last: [String: (hash: String, bytes: [UInt8])] = [:]
    for (index, commit) in order.enumerated() where wellFormedSet.contains(commit) {
      guard let contents = try? contents(of: commit) else { continue }
      for (name, tree) in contents.tensorTrees.sorted(by: { $0.key < $1.key }) {
        guard checkedTrees.insert(tree).inserted else { continue }
        do {
          let bytes: [UInt8]
          if let previous = last[name] {
            bytes = try materialize(
              name, at: commit, current: CurrentBytes(hash: previous.hash, bytes: previous.bytes),
              useSnapshots: false)
          } else {
            bytes = try materialize(name, at: commit, useSnapshots: false)
          }
          last[name] = (try storedState(tree, tensor: name).state.hash, bytes)
          verified += 1
        } catch {
          problems.append("commit \(commit.hex): tensor '\(name)': \(Self.describe(error))")
        }
      }
      report("verifying states", index + 1, order.count)
    }
    return verified
  }

  static func describe(_ error: Error) -> String {
    if let error = error as? LocalizedError, let text = error.errorDescription { return text }
    return (error as NSError).localizedDescription
  }
}
