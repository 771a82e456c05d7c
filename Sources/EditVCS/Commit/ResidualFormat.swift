extension EditRepository {
  /// The format a commit's tensor states need for their residuals: the highest `residual_format`
  /// among them (`riceResidualFormatVersion` for a Rice-coded residual,
  /// `conditionedResidualFormatVersion` for a conditioned one), else `baseFormatVersion`.
  ///
  /// A state kept from a parent whose own format is 1 holds neither (that parent would have been
  /// written higher), so only the states that are new, or kept from a parent of format ≥ 2, have
  /// their `meta.json` read.
  func residualFormatVersion(of tensorTrees: [String: ObjectID], parents: [ObjectID]) throws -> Int {
    guard !parents.isEmpty else { return baseFormatVersion }  // the base: complete states only
    var plain = Set<ObjectID>()
    for parent in parents {
      let contents = try contents(of: parent)
      if contents.formatVersion < riceResidualFormatVersion { plain.formUnion(contents.tensorTrees.values) }
    }
    var version = baseFormatVersion
    for (name, tree) in tensorTrees where !plain.contains(tree) {
      version = max(version, try storedState(tree, tensor: name).state.residualFormat ?? baseFormatVersion)
      if version >= conditionedResidualFormatVersion { break }
    }
    return version
  }
}
