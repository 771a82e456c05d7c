import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Tag: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "List or create tags.",
      discussion: """
          mvc tag                        # list
          mvc tag v1                     # lightweight tag at HEAD
          mvc tag v2 HEAD~3 -m "before the disabling edit"
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The tag name.") var name: String?
    @Argument(help: "The commit (default HEAD).") var revision: String?
    @Option(name: .shortAndLong, help: "Make an annotated tag with this message.") var message: String?

    func run() throws {
      let repository = try Session.open(global)
      guard let name else {
        for tag in try repository.tags() { output(tag.name) }
        return
      }
      let target = try revision.map { try repository.resolve($0) } ?? repository.headCommit()
      try repository.createTag(name, at: target, message: message)
    }
  }
}
