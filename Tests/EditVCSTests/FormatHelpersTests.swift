import EditVCS
import Foundation
import Testing

@Suite struct NormOutlierTests {
  static func summary(_ id: UInt8, tensor: String, norm: Double, method: String = "working-model") -> CommitSummary {
    // A fixed id per commit (20 copies of one byte); valid hex by construction.
    let oid =
      ObjectID(hex: String(repeating: String(format: "%02x", id), count: 20))
      ?? ObjectID(hex: String(repeating: "0", count: 40))
    guard let oid else { preconditionFailure("hex ids are valid") }
    let change = EditRecord.TensorChange(
      name: tensor, storage: "low_rank", rank: 1,
      norms: DeltaNorms(frobenius: norm, spectral: norm, weightFrobenius: 10), residualNonzeroCount: 0,
      storedByteCount: 100)
    return CommitSummary(
      commit: GitRepository.Commit(
        id: oid, tree: oid, parents: [], message: "m", authorName: "a", authorEmail: "e", time: 0, timeOffsetMinutes: 0),
      record: EditRecord(formatVersion: 1, method: method, changes: [change]), decorations: [])
  }

  @Test func flagsOnlyTheDisablingEdit() {
    var history = (1...20).map { Self.summary(UInt8($0), tensor: "w", norm: 1 + Double($0 % 3) * 0.1) }
    history.insert(Self.summary(99, tensor: "w", norm: 300), at: 12)
    history.append(Self.summary(100, tensor: "w", norm: 300, method: "revert"))
    let flags = NormOutliers.flags(history)
    #expect(flags.count == 1)
    #expect(flags.first?.commit == history[12].commit.id)
    #expect((flags.first?.ratioToMedian ?? 0) > 200)
  }

  @Test func needsHistoryBeforeFlagging() {
    let history = [Self.summary(1, tensor: "w", norm: 1), Self.summary(2, tensor: "w", norm: 1000)]
    #expect(NormOutliers.flags(history).isEmpty)
  }
}
