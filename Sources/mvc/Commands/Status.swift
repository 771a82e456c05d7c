import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show which tensors of the working model differ from HEAD.",
      discussion: """
        Lists changed, added and removed tensors with their shapes. The rank of each change \
        is shown by 'mvc commit' (computing it means factorizing the change). Unchanged files \
        are not hashed again (a stat cache like git's index).

          mvc status
          mvc status --json
        """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Write one JSON document (schema mvc.status/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let status = try repository.status()
      if json {
        output(try Format.json(StatusJSON(status)))
        return
      }
      switch status.head {
      case .branch(let name, _): output("On branch \(name)")
      case .detached(let id): output("HEAD detached at \(id.shortHex)")
      }
      if repository.isBisecting { output("You are currently bisecting.") }
      if status.isClean {
        output("nothing to commit, working model '\(repository.modelRelativePath)' equals HEAD")
        return
      }
      output("Changes in '\(repository.modelRelativePath)':")
      for entry in status.entries {
        output(
          "  \(entry.change.rawValue.padding(toLength: 9, withPad: " ", startingAt: 0)) \(entry.name)  \(entry.dtype.rawValue) \(Format.shape(entry.shape))"
        )
      }
      if status.headerChanged { output("  header    (metadata or padding changed)") }
    }
  }
}

struct StatusJSON: Encodable {
  struct Entry: Encodable {
    var name: String
    var change: String
    var dtype: String
    var shape: [Int]
  }
  var schema = "mvc.status/1"
  @NullWhenAbsent var branch: String?
  @NullWhenAbsent var head: String?
  var clean: Bool
  var headerChanged: Bool
  var tensors: [Entry]

  init(_ status: WorkingStatus) {
    branch = status.head.branchName
    head = status.head.commit?.hex
    clean = status.isClean
    headerChanged = status.headerChanged
    tensors = status.entries.map {
      Entry(name: $0.name, change: $0.change.rawValue, dtype: $0.dtype.rawValue, shape: $0.shape)
    }
  }

  enum CodingKeys: String, CodingKey {
    case schema, branch, head, clean, tensors
    case headerChanged = "header_changed"
  }
}
