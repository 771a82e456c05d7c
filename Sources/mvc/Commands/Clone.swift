import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Clone: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Clone a repository into a new folder and write its working model.",
      discussion: """
        Creates DIR (default: the URL's last component without .git), fetches every branch \
        and tag into DIR/.mvc, and writes the default branch's model: a single-file model \
        keeps its file name, a sharded one becomes the folder DIR/model.

          mvc clone git://host/models/llama.git
          mvc clone /srv/models/llama.git work
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The repository to clone (path, file://, git://, https://).") var url: String
    @Argument(help: "The new folder.") var destination: String?
    @Option(
      help: ArgumentHelp(
        "Your copy of the base model, for a repository made with 'init --reference-base'.",
        valueName: "path")) var referenceBase: String?

    func validate() throws {
      if destination == nil && Self.defaultDestination(for: url).isEmpty {
        throw ValidationError("cannot guess a folder name from '\(url)'; give one")
      }
    }

    static func defaultDestination(for url: String) -> String {
      var name = url
      while name.hasSuffix("/") { name.removeLast() }
      name = String(name.split(separator: "/").last ?? "")
      if name.hasSuffix(".git") { name.removeLast(4) }
      if name.hasSuffix(".mvc") { name.removeLast(4) }
      return name.contains(":") ? "" : name
    }

    func run() throws {
      let cwd = FileManager.default.currentDirectoryPath
      let target = destination ?? Self.defaultDestination(for: url)
      let path = global.path(target)
      // A relative local path is relative to where the user is (-C included), not to the clone.
      var source = url
      if !url.contains("://"), !url.hasPrefix("/"), FileManager.default.fileExists(atPath: global.path(url)) {
        source = (global.path(url) as NSString).standardizingPath
      }
      if !global.quiet { Diagnostics.printError("Cloning into '\(target)'...") }
      let (_, summary) = try EditRepository.clone(
        url: source, into: path,
        referenceBase: referenceBase.map { $0.hasPrefix("/") ? $0 : (cwd as NSString).appendingPathComponent($0) },
        environment: Session.environment(quiet: global.quiet))
      if !global.quiet {
        Diagnostics.printError(
          "Checked out '\(summary.branch)' at \(summary.commit.shortHex) into '\(summary.modelRelativePath)'")
      }
    }
  }
}
