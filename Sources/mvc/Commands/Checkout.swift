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

          mvc checkout HEAD~5
          mvc checkout main
          mvc checkout v1 -o /tmp/m.safetensors
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision to check out.") var revision: String
    @Option(name: .shortAndLong, help: "Write the model here instead (HEAD and the working model stay).")
    var output: String?
    @Flag(name: .shortAndLong, help: "Discard uncommitted changes in the working model.") var force = false

    func run() throws {
      let repository = try Session.open(global)
      let target = try repository.resolve(revision)
      if let output {
        let path = output.hasPrefix("/") ? output : (global.workingDirectory as NSString).appendingPathComponent(output)
        try repository.materialize(target, to: path, force: force)
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
        "\(summary.rewrittenTensors.count) tensor\(summary.rewrittenTensors.count == 1 ? "" : "s") rewritten\(summary.wroteWholeFiles ? " (whole files)" : " in place")")
    }
  }
}
