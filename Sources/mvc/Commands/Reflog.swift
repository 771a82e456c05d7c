import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Reflog: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show where a reference has pointed (reference logs).",
      discussion: """
        Every update of a branch, of HEAD, of a tag and of ORIG_HEAD is logged in .mvc/logs/, \
        newest first, as git's 'reflog' shows it: entry n is what REF@{n} names, so a commit a \
        reset or a rewind left behind is still reachable.

          mvc reflog                    # HEAD's log
          mvc reflog main
          mvc reset --hard HEAD@{1}     # go back to where HEAD was one move ago
          mvc reflog --json             # schema mvc.reflog/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The reference: HEAD, a branch, a tag, ORIG_HEAD.") var reference = "HEAD"
    @Option(name: [.customShort("n"), .long], help: "Show at most this many entries.") var maxCount: Int?
    @Flag(help: "Write one JSON document (schema mvc.reflog/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let (full, all) = try repository.reflog(reference)
      let entries = maxCount.map { Array(all.prefix(max($0, 0))) } ?? all
      if json {
        output(try Format.json(ReflogJSON(reference: full, shown: reference, entries: entries)))
        return
      }
      for (n, entry) in entries.enumerated() {
        output("\(entry.id.shortHex) \(reference)@{\(n)}: \(entry.message)")
      }
    }
  }
}

struct ReflogJSON: Encodable {
  struct Entry: Encodable {
    var selector: String
    var id: String
    @NullWhenAbsent var previous: String?
    var message: String
    var committerName: String
    var committerEmail: String
    var date: String

    enum CodingKeys: String, CodingKey {
      case selector, id, previous, message, date
      case committerName = "committer_name"
      case committerEmail = "committer_email"
    }
  }
  var schema = "mvc.reflog/1"
  var reference: String
  var entries: [Entry]

  init(reference: String, shown: String, entries: [ReflogEntry]) {
    self.reference = reference
    self.entries = entries.enumerated().map { n, entry in
      Entry(
        selector: "\(shown)@{\(n)}", id: entry.id.hex, previous: entry.previous?.hex, message: entry.message,
        committerName: entry.committer.name, committerEmail: entry.committer.email,
        date: Format.date(entry.committer.time, offsetMinutes: entry.committer.offsetMinutes))
    }
  }
}
