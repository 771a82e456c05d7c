import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show the commit history.",
      discussion: """
        --oneline is git's: exactly one line per commit, '<short id> (<refs>) <subject>'. \
        Norm outliers (a possible disabling edit) are flagged under the commit in the default \
        format, in --stat, in 'mvc show' and as outlier_ratio in --json.

          mvc log
          mvc log --oneline -n 10
          mvc log --stat            # per commit: tensors, rank, ‖ΔW‖_F, ‖ΔW‖_2, ratio to ‖W‖
          mvc log --json            # schema mvc.log/1
          mvc log alt               # history of another revision
          mvc log --all --graph --oneline   # every branch, merges drawn
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Where to start (default HEAD).") var revision: String?
    @Flag(help: "One line per commit: '<short id> (<refs>) <subject>', as git's.") var oneline = false
    @Flag(help: "Per changed tensor: storage, rank and norms.") var stat = false
    @Flag(
      help: ArgumentHelp(
        "With --stat: the collapse signals' drift flags too ('mvc score --signals').",
        discussion:
          "They rebuild every edited tensor at every first-parent commit, so they are asked for, not computed by every --stat."
      )) var signals = false
    @Flag(help: "Write one JSON document (schema mvc.log/1).") var json = false
    @Option(name: [.customShort("n"), .long], help: "Show at most this many commits.") var maxCount: Int?
    @Flag(help: "Follow only the first parent of merges.") var firstParent = false
    @Flag(help: "Start from HEAD and every branch, tag and remote-tracking branch.") var all = false
    @Flag(help: "Draw the history's lines of descent beside the commits (text graph, as git's).") var graph = false

    func validate() throws {
      if json && graph { throw ValidationError("--graph draws text; --json already lists each commit's parents") }
    }

    func run() throws {
      let repository = try Session.open(global)
      var tips = try revision.map { [try repository.resolve($0)] } ?? []
      if all {
        tips += try repository.allTips()
      } else if tips.isEmpty {
        tips = [try repository.headCommit()]
      }
      let commits = try repository.log(from: tips, limit: nil, firstParentOnly: firstParent, topoOrder: graph)
      let flags = Dictionary(grouping: NormOutliers.flags(commits.reversed()), by: \.commit)
      let shown = maxCount.map { Array(commits.prefix($0)) } ?? commits
      if json {
        output(try Format.json(LogJSON(commits: shown.map { CommitJSON($0, flags: flags[$0.commit.id] ?? []) })))
        return
      }
      let signalFlags = stat && signals ? CommitText.signalFlags(repository, tip: tips.count == 1 ? tips[0] : nil) : [:]
      var lines = LogGraph()
      for summary in shown {
        let text = CommitText.render(
          summary, oneline: oneline, stat: stat, flags: flags[summary.commit.id] ?? [],
          signals: signalFlags[summary.commit.id] ?? [])
        guard graph else {
          output(text)
          continue
        }
        let parents = firstParent ? Array(summary.commit.parents.prefix(1)) : summary.commit.parents
        let drawn = lines.prefix(
          text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init), id: summary.commit.id,
          parents: parents)
        output(drawn.joined(separator: "\n"))
      }
    }
  }
}

enum CommitText {
  static func render(
    _ summary: CommitSummary, oneline: Bool, stat: Bool, flags: [NormOutliers.Flag], signals: [String] = []
  ) -> String {
    let commit = summary.commit
    let decoration = summary.decorations.isEmpty ? "" : " (" + summary.decorations.joined(separator: ", ") + ")"
    var lines: [String] = []
    if oneline {
      lines.append("\(commit.id.shortHex)\(decoration) \(commit.summary)")
    } else {
      lines.append("commit \(commit.id.hex)\(decoration)")
      if commit.parents.count > 1 { lines.append("Merge: " + commit.parents.map(\.shortHex).joined(separator: " ")) }
      lines.append("Author: \(commit.authorName) <\(commit.authorEmail)>")
      lines.append("Date:   \(Format.date(commit.time, offsetMinutes: commit.timeOffsetMinutes))")
      lines.append("")
      for line in commit.message.split(separator: "\n", omittingEmptySubsequences: false) {
        lines.append("    \(line)")
      }
      if lines.last == "    " { lines.removeLast() }
    }
    if stat, let record = summary.record {
      lines.append(contentsOf: statLines(record, flags: flags))
      lines.insert(contentsOf: signals, at: lines.count - 1)
    } else if !flags.isEmpty && !oneline {
      lines.append(contentsOf: flags.map(flagLine))
    }
    if !oneline { lines.append("") }
    return lines.joined(separator: "\n")
  }

  /// The drift flags of the collapse signals along the first-parent history of `tip`, as
  /// `--stat` lines by commit (a note on stderr when they cannot be computed).
  static func signalFlags(_ repository: EditRepository, tip: ObjectID?) -> [ObjectID: [String]] {
    guard let tip else { return [:] }
    do {
      var lines: [ObjectID: [String]] = [:]
      for p in try repository.signals(at: tip).flags {
        lines[p.commit, default: []].append(
          String(
            format:
              " ! drift: '%@' ‖W−W₀‖_F/√edits is %.2f× its early value after %d edits (‖W‖/‖W₀‖ %.4f, σ₁²/‖ΔW‖² %.2f)",
            p.tensor, p.driftRatio ?? 0, p.editCount, p.measure.normGrowth, p.measure.topEnergy ?? 0))
      }
      return lines
    } catch {
      Diagnostics.printError("note: collapse signals not shown: \(error.localizedDescription)")
      return [:]
    }
  }

  static func flagLine(_ flag: NormOutliers.Flag) -> String {
    String(
      format: " ! outlier: '%@' ‖ΔW‖_F is %.0f× the median of earlier edits (possible disabling edit)",
      flag.tensor, flag.ratioToMedian)
  }

  static func statLines(_ record: EditRecord, flags: [NormOutliers.Flag]) -> [String] {
    var lines: [String] = []
    var total = 0
    for change in record.changes {
      total += change.storedByteCount
      var line = " \(change.name) | \(change.storage)"
      if let rank = change.rank { line += " rank \(rank)" }
      if let n = change.norms {
        line += String(format: " ‖ΔW‖_F %.4g ‖ΔW‖_2 %.4g ‖ΔW‖/‖W‖ %.3g", n.frobenius, n.spectral, n.relativeFrobenius)
      }
      line += " (\(Format.bytes(change.storedByteCount)))"
      lines.append(line)
    }
    lines.append(contentsOf: flags.map(flagLine))
    lines.append(
      " \(record.changes.count) tensor\(record.changes.count == 1 ? "" : "s") changed, \(Format.bytes(total)) stored, method \(record.method)"
    )
    return lines
  }
}

struct LogJSON: Encodable {
  var schema = "mvc.log/1"
  var commits: [CommitJSON]
}

struct CommitJSON: Encodable {
  struct Change: Encodable {
    var tensor: String
    var storage: String
    @NullWhenAbsent var rank: Int?
    @NullWhenAbsent var frobeniusNorm: Double?
    @NullWhenAbsent var spectralNorm: Double?
    @NullWhenAbsent var relativeNorm: Double?
    @NullWhenAbsent var residualNonzeroCount: Int?
    var storedByteCount: Int
    /// ‖ΔW‖_F over the median of earlier edits, when flagged as an outlier.
    @NullWhenAbsent var outlierRatio: Double?

    enum CodingKeys: String, CodingKey {
      case tensor, storage, rank
      case outlierRatio = "outlier_ratio"
      case frobeniusNorm = "frobenius_norm"
      case spectralNorm = "spectral_norm"
      case relativeNorm = "relative_norm"
      case residualNonzeroCount = "residual_nonzero_count"
      case storedByteCount = "stored_byte_count"
    }
  }
  var id: String
  var parents: [String]
  var authorName: String
  var authorEmail: String
  var date: String
  var message: String
  var summary: String
  var refs: [String]
  @NullWhenAbsent var method: String?
  var changes: [Change]

  init(_ s: CommitSummary, flags: [NormOutliers.Flag] = []) {
    id = s.commit.id.hex
    parents = s.commit.parents.map(\.hex)
    authorName = s.commit.authorName
    authorEmail = s.commit.authorEmail
    date = Format.date(s.commit.time, offsetMinutes: s.commit.timeOffsetMinutes)
    message = s.commit.message
    summary = s.commit.summary
    refs = s.decorations
    method = s.record?.method
    changes = (s.record?.changes ?? []).map {
      Change(
        tensor: $0.name, storage: $0.storage, rank: $0.rank, frobeniusNorm: $0.norms?.frobenius,
        spectralNorm: $0.norms?.spectral, relativeNorm: $0.norms?.relativeFrobenius,
        residualNonzeroCount: $0.residualNonzeroCount, storedByteCount: $0.storedByteCount,
        outlierRatio: nil)
    }
    for flag in flags {
      if let i = changes.firstIndex(where: { $0.tensor == flag.tensor }) {
        changes[i].outlierRatio = flag.ratioToMedian
      }
    }
  }

  enum CodingKeys: String, CodingKey {
    case id, parents, date, message, summary, refs, method, changes
    case authorName = "author_name"
    case authorEmail = "author_email"
  }
}
