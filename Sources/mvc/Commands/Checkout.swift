import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Checkout: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Rewrite the working model to a commit's state, or materialize it elsewhere.",
      discussion: """
        A branch name attaches HEAD to that branch; any other revision detaches HEAD. Only \
        the tensors that differ are rewritten, in place, under a journal that the next mvc \
        command completes if this one is interrupted. Uncommitted changes are refused unless \
        --force. With -o, nothing but the output is written.

        The files a loader reads beside the weights (config.json, tokenizer*, ...) are tracked \
        and written too. -o PATH of a sharded model is a folder. For a single-file model, \
        -o PATH is that one file (the weights only), and -o DIR/ (a trailing slash) or an \
        existing folder is a folder holding model.safetensors and the tracked files, which \
        AutoModel.from_pretrained(DIR) loads.

          mvc checkout HEAD~5
          mvc checkout main
          mvc checkout v1 -o /tmp/m.safetensors
          mvc checkout v1 -o /tmp/m/                # a folder from_pretrained loads
          mvc checkout main -o /scratch/llama --shards 2,3          # only shards 2 and 3 (1-based)
          mvc checkout main -o /tmp/mlp.safetensors --tensors '*.mlp.*'
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision to check out.") var revision: String
    @Option(name: .shortAndLong, help: "Write the model here instead (HEAD and the working model stay).")
    var output: String?
    @Flag(
      name: .shortAndLong,
      help: "Discard uncommitted changes in the working model; rehash it rather than trust the stat cache.")
    var force = false
    @Option(help: "With -o: only these shard files of a sharded model (1-based, comma-separated).")
    var shards: String?
    @Option(help: "With -o: only the tensors matching this glob, in files listing just them.")
    var tensors: String?

    func validate() throws {
      if output == nil && (shards != nil || tensors != nil) {
        throw ValidationError("--shards and --tensors need -o PATH")
      }
      if let shards,
        shards.split(separator: ",").contains(where: { Int($0.trimmingCharacters(in: .whitespaces)) == nil })
      {
        throw ValidationError("--shards takes comma-separated shard numbers, e.g. 2,3")
      }
    }

    func run() throws {
      let repository = try Session.open(global)
      let target = try repository.resolve(revision)
      if let output {
        let path = global.path(output)
        let shardSet = shards.map {
          Set($0.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }.map { $0 - 1 })
        }
        let tensorSet = try tensors.map { try repository.tensorNames(at: target, matching: $0) }
        var isDirectory: ObjCBool = false
        let intoFolder =
          output.hasSuffix("/")
          || (FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue)
        try repository.materialize(
          target, to: path, tensors: tensorSet, shards: shardSet, force: force, intoFolder: intoFolder)
        if !global.quiet { Diagnostics.printError("Wrote \(target.shortHex) to '\(output)'") }
        return
      }
      let branch = try repository.branchTarget(revision) != nil ? revision : nil
      let summary = try repository.checkout(target, branch: branch, force: force)
      guard !global.quiet else { return }
      let subject = (try? repository.commitInfo(target).summary) ?? ""
      if let branch {
        Diagnostics.printError("Switched to branch '\(branch)'")
      } else {
        Diagnostics.printError("HEAD is now at \(target.shortHex) \(subject)")
      }
      Diagnostics.printError(
        "\(summary.rewrittenTensors.count) tensor\(summary.rewrittenTensors.count == 1 ? "" : "s") rewritten\(summary.wroteWholeFiles ? " (whole files)" : " in place")"
      )
    }
  }
}
