import Apply
import DeltaStore
import Foundation
import TestSupport
import Testing

@testable import EditVCS

/// The in-place commit's passes outside the factorization (the parent's decode, the working
/// tensor's read, the difference's measures, the reconstruction) on several threads: the same
/// figures and the same objects as on one.
@Suite struct CommitPipelineTests {
  /// Two blocks of the measuring pass (the second one partial), every dtype the rank finder takes.
  @Test(arguments: [DType.bf16, .f16, .f32, .f64])
  func differenceMeasuresOnTwoThreadsAreTheSinglePassBitForBit(dtype: DType) throws {
    let edit = RoundingRefinementTests.Edit(rows: 64, cols: 4100, dtype: dtype, relativeNorm: 0.01, seed: 4)
    let count = edit.rows * edit.cols
    func measured(_ new: [UInt8], workers: Int?) throws -> TensorMath.DifferenceMeasures {
      try new.withUnsafeBytes { new in
        try edit.old.withUnsafeBytes { old in
          guard let workers else {
            return try TensorMath.difference(new: new, old: old, dtype: dtype, count: count, into: nil)
          }
          return try TensorMath.measures(new: new, old: old, dtype: dtype, count: count, workers: workers)
        }
      }
    }
    // Zeros, subnormals and tiny values beside the weights: the ulp of every kind of exponent.
    var new = edit.new
    new.withUnsafeMutableBytes { raw in
      let tiny: [Double] = [0, -0.0, 1e-40, -6e-8, 1e-30, 3e-39, 0.5]
      for (k, value) in tiny.enumerated() {
        [value].withUnsafeBufferPointer {
          FloatConversion.encode($0, dtype: dtype, into: raw, elementOffset: 1000 * k + 17)
        }
      }
    }
    let single = try measured(new, workers: nil)
    #expect(single.allFinite && single.noiseRMS > 0 && single.deltaFrobenius > 0)
    for workers in [1, 2, 3] { #expect(try measured(new, workers: workers) == single) }
    // An infinity: measured again by the single pass (its sums skip that element).
    var withInfinity = edit.new
    let width = dtype.byteCount ?? 4
    withInfinity.withUnsafeMutableBytes { raw in
      FloatConversion.encode(
        [Double.infinity].withUnsafeBufferPointer { $0 }, dtype: dtype, into: raw, elementOffset: 70_001)
    }
    #expect(withInfinity[(70_001 * width)..<(70_002 * width)] != edit.new[(70_001 * width)..<(70_002 * width)])
    let infinite = try measured(withInfinity, workers: nil)
    #expect(!infinite.allFinite)
    #expect(try measured(withInfinity, workers: 2) == infinite)
  }

  /// The canonical rule applied a row range per worker, and the working tensor read a part per
  /// worker: the bytes of one call.
  @Test func reconstructionAndReadByPartsAreTheWholeCall() throws {
    try withTemporaryDirectory { dir in
      let edit = RoundingRefinementTests.Edit(rows: 37, cols: 300, dtype: .bf16, relativeNorm: 0.01, seed: 6)
      for rank in [1, 3] {
        var rng = SplitMix64(seed: UInt64(rank))
        let u = (0..<(37 * rank)).map { _ in rng.nextGaussian() * 0.01 }
        let v = (0..<(300 * rank)).map { _ in rng.nextGaussian() * 0.01 }
        let whole = edit.reconstructed(u: u, v: v, rank: rank)
        for workers in [1, 2, 5] {
          var bytes = edit.old
          bytes.withUnsafeMutableBytes {
            EditRepository.applyCanonical(
              to: $0, dtype: .bf16, rows: 37, cols: 300, u: u, v: v, rank: rank, workers: workers)
          }
          #expect(bytes == whole, "rank \(rank), \(workers) workers")
        }
      }
      // 24 MiB: three parts of at least 8 MiB.
      let model = dir.appendingPathComponent("m.safetensors")
      var rng = SplitMix64(seed: 2)
      let big = (0..<(3 << 22)).map { _ in UInt16(truncatingIfNeeded: rng.next()) }
      let bytes = big.withUnsafeBytes { Array($0) }
      try writeSafetensors(
        [
          FixtureTensor(name: "a", dtype: "BF16", shape: [3], bytes: [1, 2, 3, 4, 5, 6]),
          FixtureTensor(name: "b", dtype: "BF16", shape: [3 << 22], bytes: bytes),
        ], to: model)
      let file = try SafetensorsFile(path: model.path)
      let info = try #require(file.tensor(named: "b"))
      for workers in [1, 2, 3] { #expect(try EditRepository.read(info, of: file, workers: workers) == bytes) }
    }
  }

  /// The same one-tensor commit in two repositories, one worker and two: the same objects (the
  /// parent decoded in parts, the working tensor read in parts, measured and rebuilt in parts).
  /// F32 adds the rounding contexts of its conditioned residual, computed in row parts.
  @Test(arguments: [DType.bf16, .f32])
  func aOneTensorCommitStoresTheSameObjectsWithOneOrTwoWorkers(dtype: DType) throws {
    let edit = RoundingRefinementTests.Edit(rows: 96, cols: 1024, dtype: dtype, relativeNorm: 0.01, seed: 13)
    var trees: [String] = []
    for workers in [1, 2] {
      try withTemporaryDirectory { dir in
        let model = dir.appendingPathComponent("model.safetensors")
        let name = dtype.rawValue
        try writeSafetensors([FixtureTensor(name: "w", dtype: name, shape: [96, 1024], bytes: edit.old)], to: model)
        let environment = RepositoryEnvironment(commitTime: 1_700_000_000, workerThreads: workers)
        let (repository, _) = try EditRepository.initialize(
          root: dir.path, modelPath: "model.safetensors", environment: environment)
        try writeSafetensors([FixtureTensor(name: "w", dtype: name, shape: [96, 1024], bytes: edit.new)], to: model)
        let result = try repository.commit(CommitOptions(message: "edit"))
        #expect(result.record.changes.first?.storage == "low_rank")
        let tree = try #require(try repository.contents(of: result.commit).tensorTrees["w"])
        trees.append(tree.hex)
      }
    }
    #expect(trees.count == 2 && trees[0] == trees[1])
  }

  /// The rounding contexts of an F32 state in row parts: the bytes of one pass, rank 1 and 2.
  @Test func roundingContextsInRowPartsAreTheWholePass() {
    let edit = RoundingRefinementTests.Edit(rows: 400, cols: 777, dtype: .f32, relativeNorm: 0.01, seed: 8)
    for rank in [1, 2] {
      var rng = SplitMix64(seed: UInt64(rank))
      let u = (0..<(400 * rank)).map { _ in rng.nextGaussian() * 0.01 }
      let v = (0..<(777 * rank)).map { _ in rng.nextGaussian() * 0.01 }
      let whole = RoundingContexts.compute(parent: edit.old, rows: 400, cols: 777, u: u, v: v, rank: rank, workers: 1)
      #expect(Set(whole).count > 20, "rank \(rank): the contexts reach many buckets")
      for workers in [2, 3] {
        #expect(
          RoundingContexts.compute(parent: edit.old, rows: 400, cols: 777, u: u, v: v, rank: rank, workers: workers)
            == whole, "rank \(rank), \(workers) workers")
      }
    }
  }
}
