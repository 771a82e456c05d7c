import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Remote: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Manage the set of repositories whose branches you track.",
      discussion: """
        URLs are anything libgit2 reaches: a path to a bare repository, file://, git://, \
        https:// (and ssh:// when libgit2 has libssh2).

          mvc remote add origin git://host/models/llama.git
          mvc remote -v
          mvc remote remove origin
        """,
      subcommands: [List.self, Add.self, Remove.self],
      defaultSubcommand: List.self)

    struct List: ParsableCommand {
      static let configuration = CommandConfiguration(commandName: "list", abstract: "List the remotes.")
      @OptionGroup var global: GlobalOptions
      @Flag(name: .shortAndLong, help: "Show each remote's URL.") var verbose = false

      func run() throws {
        let repository = try Session.open(global)
        for remote in try repository.remotes() {
          if verbose {
            output("\(remote.name)\t\(remote.url) (fetch)")
            output("\(remote.name)\t\(remote.url) (push)")
          } else {
            output(remote.name)
          }
        }
      }
    }

    struct Add: ParsableCommand {
      static let configuration = CommandConfiguration(
        abstract: "Add a remote named <name> for the repository at <url>.")
      @OptionGroup var global: GlobalOptions
      @Argument(help: "The remote's name.") var name: String
      @Argument(help: "The remote's URL or path.") var url: String

      func run() throws {
        let repository = try Session.open(global)
        try repository.addRemote(name: name, url: url)
      }
    }

    struct Remove: ParsableCommand {
      static let configuration = CommandConfiguration(
        commandName: "remove", abstract: "Remove the remote and its remote-tracking branches.", aliases: ["rm"])
      @OptionGroup var global: GlobalOptions
      @Argument(help: "The remote's name.") var name: String

      func run() throws {
        let repository = try Session.open(global)
        try repository.removeRemote(name: name)
      }
    }
  }
}
