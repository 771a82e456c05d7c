import Foundation

public struct BranchInfo: Sendable {
  public var name: String
  package var commit: ObjectID
  public var isCurrent: Bool
}

public struct TagInfo: Sendable {
  public var name: String
  package var commit: ObjectID
}

extension EditRepository {
  public func branches() throws -> [BranchInfo] {
    let current = try head().branchName
    return try RepositoryError.wrap("listing branches") {
      try git.references(withPrefix: "refs/heads/").map {
        let name = String($0.name.dropFirst("refs/heads/".count))
        return BranchInfo(name: name, commit: $0.target, isCurrent: name == current)
      }
    }
  }

  public func tags() throws -> [TagInfo] {
    try RepositoryError.wrap("listing tags") {
      try git.references(withPrefix: "refs/tags/").map {
        TagInfo(name: String($0.name.dropFirst("refs/tags/".count)), commit: $0.target)
      }
    }
  }

  public func branchTarget(_ name: String) throws -> ObjectID? {
    guard GitRepository.isValidBranchName(name) else { return nil }
    return try RepositoryError.wrap("reading branch '\(name)'") { try git.referenceTarget("refs/heads/" + name) }
  }

  /// `mvc branch NAME [START]`.
  public func createBranch(_ name: String, at commit: ObjectID) throws {
    guard GitRepository.isValidBranchName(name) else { throw RepositoryError.invalidRefName(name) }
    if try branchTarget(name) != nil { throw RepositoryError.branchExists(name) }
    try RepositoryError.wrap("creating branch '\(name)'") {
      try git.updateReference(
        "refs/heads/" + name, to: commit, expected: nil, message: "branch: created from \(commit.hex)")
    }
  }

  /// `mvc branch -d NAME`.
  public func deleteBranch(_ name: String) throws {
    guard try branchTarget(name) != nil else { throw RepositoryError.branchNotFound(name) }
    if try head().branchName == name { throw RepositoryError.cannotDeleteCurrentBranch(name) }
    try RepositoryError.wrap("deleting branch '\(name)'") { try git.deleteReference("refs/heads/" + name) }
  }

  /// `mvc switch NAME` / `mvc switch -c NAME [START]`: the working model follows.
  @discardableResult
  public func switchBranch(_ name: String, create startPoint: ObjectID?, force: Bool) throws -> CheckoutSummary {
    try refuseDuringBisect()
    if let startPoint {
      guard GitRepository.isValidBranchName(name) else { throw RepositoryError.invalidRefName(name) }
      if try branchTarget(name) != nil { throw RepositoryError.branchExists(name) }
      // One journaled move creates the branch where HEAD goes, after the model is rewritten: a
      // refused or failed switch leaves no branch behind, an interrupted one is finished.
      return try checkout(startPoint, branch: name, force: force)
    }
    guard let target = try branchTarget(name) else { throw RepositoryError.branchNotFound(name) }
    return try checkout(target, branch: name, force: force)
  }

  /// `mvc tag NAME [REV] [-m MESSAGE]`: lightweight, or annotated with a message.
  public func createTag(_ name: String, at commit: ObjectID, message: String?) throws {
    guard GitRepository.isValidBranchName(name) else { throw RepositoryError.invalidRefName(name) }
    let ref = "refs/tags/" + name
    if try RepositoryError.wrap("reading tag", { try git.referenceTarget(ref) }) != nil {
      throw RepositoryError.tagExists(name)
    }
    try RepositoryError.wrap("creating tag '\(name)'") {
      let target =
        try message.map { try git.createTagObject(name: name, commit: commit, message: $0, tagger: signature()) }
        ?? commit
      try git.updateReference(ref, to: target, expected: nil, message: "tag: \(name)")
    }
  }
}
