import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a repository whose root commit is the given base model.",
      discussion: """
        Creates .mvc/ in the current folder (or -C <dir>) and stores the model as compressed \
        chunks. The model is a .safetensors file or a folder of shards with \
        model.safetensors.index.json; it must lie inside the folder, or be the folder \
        itself ('mvc init .' inside a Hugging Face model folder). A folder holding \
        model.safetensors and no index tracks that file. The files a loader reads beside \
        the weights (config.json, generation_config.json, tokenizer*, \
        special_tokens_map.json, chat_template*, vocab/merges files; at most 64 MiB each) are \
        tracked too; other files are left untracked.

          mvc init model.safetensors
          mvc init llama/ -m "Llama-3-8B base"
          cd gpt2-finetuned && mvc init .
          mvc init model.safetensors --reference-base /models/base.safetensors
        """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The model file or shard folder to track.")
    var model: String

    @Option(name: .shortAndLong, help: "Message of the root commit.")
    var message = "base model"

    @Option(
      help: ArgumentHelp(
        "Read the base from this unchanging copy of the model instead of storing it (path and hashes recorded, verified on every use).",
        valueName: "base-copy"))
    var referenceBase: String?

    func run() throws {
      let (repository, commit) = try EditRepository.initialize(
        root: global.workingDirectory, modelPath: model, message: message, referenceBase: referenceBase,
        environment: Session.environment(quiet: global.quiet))
      if !global.quiet {
        output("Initialized mvc repository in \(repository.gitDirectory)")
        output("[main (root-commit) \(commit.shortHex)] \(message)")
      }
    }
  }
}
