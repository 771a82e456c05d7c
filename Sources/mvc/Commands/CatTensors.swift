import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct CatTensors: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "cat-tensors",
      abstract: "Write chosen tensors of a revision, exact bytes, as one safetensors file (plumbing).",
      discussion: """
        Like 'git cat-file': the tensors' states at REV, rebuilt and verified against their \
        hashes, in a new safetensors file (header order as given; __metadata__ records \
        mvc.commit). No name means every tensor. Nothing in the repository or the working model \
        changes. The Python client reads the file with safetensors.safe_open and copies each \
        tensor into the loaded model.

          mvc cat-tensors HEAD~3 transformer.h.5.mlp.c_proj.weight -o /tmp/t.safetensors
          mvc cat-tensors v1 -o /tmp/all.safetensors --json     # schema mvc.cat-tensors/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision.") var revision: String
    @Argument(help: "Tensor names (default: all).") var names: [String] = []
    @Option(
      name: [.customShort("o"), .customLong("output")], help: "The safetensors file to write (replaced atomically).")
    var outputPath: String
    @Flag(help: "Write one JSON document (schema mvc.cat-tensors/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let commit = try repository.resolve(revision)
      let export = try repository.exportTensors(names, at: commit, to: global.path(outputPath))
      if json {
        output(
          try Format.json(
            TensorListJSON(schema: "mvc.cat-tensors/1", commit: commit.hex, path: export.path, tensors: export.tensors))
        )
      } else if !global.quiet {
        Diagnostics.printError(
          "Wrote \(export.tensors.count) tensor\(export.tensors.count == 1 ? "" : "s") of \(commit.shortHex) to \(outputPath)"
        )
      }
    }
  }
}
