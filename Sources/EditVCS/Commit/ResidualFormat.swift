extension EditRepository {
  /// The format a commit's tensor states need for their residuals: `riceResidualFormatVersion`
  /// when one of them holds a Rice-coded residual, else `baseFormatVersion`.
  ///
  /// A state kept from a parent whose own format is 1 holds none (that parent would have been
  /// written at 2), so only the states that are new, or kept from a parent of format 2, have
  /// their `meta.json` read.
  func residualFormatVersion(of tensorTrees: [String: ObjectID], parents: [ObjectID]) throws -> Int {
    guard !parents.isEmpty else { return baseFormatVersion }  // the base: complete states only
    var plain = Set<ObjectID>()
    for parent in parents {
      let contents = try contents(of: parent)
      if contents.formatVersion < riceResidualFormatVersion { plain.formUnion(contents.tensorTrees.values) }
    }
    for (name, tree) in tensorTrees where !plain.contains(tree) {
      if (try storedState(tree, tensor: name).state.residualFormat ?? baseFormatVersion) >= riceResidualFormatVersion {
        return riceResidualFormatVersion
      }
    }
    return baseFormatVersion
  }
}
