import Apply
import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension MVC {
  struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Manage probe keys whose outputs edits must preserve (used by 'mvc score').",
      discussion: """
          mvc probe add k0.npy --tensor model.layers.5.mlp.down_proj.weight
        """,
      subcommands: [Add.self])

    struct Add: ParsableCommand {
      static let configuration = CommandConfiguration(abstract: "Store preservation keys K₀ (m×d_in) for a tensor.")
      @OptionGroup var global: GlobalOptions
      @Argument(help: "K₀ as an .npy file.") var keys: String
      @Option(help: "The tensor they feed.") var tensor: String

      func run() throws {
        let repository = try Session.open(global)
        let path = global.path(keys)
        let array = try NpyFile.read(from: path)
        try repository.addProbe(array, tensor: tensor)
        if !global.quiet { Diagnostics.printError("Stored \(array.shape.first ?? 0) probe keys for '\(tensor)'") }
      }
    }
  }
}
