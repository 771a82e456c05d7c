import ArgumentParser
import Foundation

struct MVC: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mvc",
    abstract: "Version control for model edits: low-rank weight deltas committed to git.",
    discussion: """
      The tracked working model (a .safetensors file or a folder of shards) plays the role of \
      git's working tree. Any editor rewrites it; mvc stores each change as compressed factors \
      U·Vᵀ plus an exactness residual in a git repository under .mvc/.

        mvc init model.safetensors
        python edit.py                # rewrites model.safetensors
        mvc status; mvc commit -m "edit 17: Eiffel Tower -> Rome"
        mvc checkout HEAD~3           # working model rewritten to that point
        mvc switch -c alt HEAD~3      # alternative edit set
      """,
    version: "0.1.0",
    subcommands: [
      Init.self, Status.self, Commit.self, Log.self, Show.self, Reflog.self, Checkout.self, Reset.self, Branch.self,
      Switch.self, Tag.self, Diff.self, Merge.self, Bisect.self, Revert.self, CherryPick.self,
      Edit.self, AccumulatorCommand.self, Probe.self, Score.self, Report.self, Plot.self, Export.self, Import.self,
      Remote.self,
      Clone.self, Fetch.self,
      Pull.self, Push.self, Fsck.self, Gc.self, Completion.self, LsTensors.self, CatTensors.self, CommitFactors.self,
    ]
  )
}

/// Options every repository command takes.
struct GlobalOptions: ParsableArguments {
  @Option(name: .customShort("C"), help: "Run as if mvc was started in <dir>.")
  var directory: String?

  @Flag(name: [.short, .long], help: "Print nothing but errors and results.")
  var quiet = false

  var workingDirectory: String {
    let cwd = FileManager.default.currentDirectoryPath
    guard let directory else { return cwd }
    return directory.hasPrefix("/") ? directory : (cwd as NSString).appendingPathComponent(directory)
  }

  /// A path the user typed, made absolute against the working directory (`-C` included).
  func path(_ text: String) -> String {
    text.hasPrefix("/") ? text : (workingDirectory as NSString).appendingPathComponent(text)
  }
}
