import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Commit a PEFT LoRA adapter folder as one edit batch.",
      discussion: """
        DIR holds adapter_model.safetensors and adapter_config.json, as PEFT's \
        save_pretrained writes them. target_modules is checked against the model first; each \
        pair base_model.model.<module>.lora_A/.lora_B becomes the factors of <module>.weight, \
        scaled by lora_alpha/r, applied to the (clean) working model and stored as they are \
        (method "lora-import").

          mvc import --lora adapter/ -m "import the 'capitals' adapter"
        """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "The PEFT adapter folder.") var lora: String
    @Option(name: .shortAndLong, help: "The commit message.") var message: String

    func validate() throws {
      if message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
        throw ValidationError("aborting import due to empty commit message")
      }
    }

    func run() throws {
      let repository = try Session.open(global)
      let directory =
        lora.hasPrefix("/")
        ? lora : (global.workingDirectory as NSString).appendingPathComponent(lora)
      let result = try repository.importLoRA(directory: directory, message: message)
      guard !global.quiet else { return }
      let branch = (try? repository.head().branchName) ?? nil
      output(
        "[\(branch ?? "detached HEAD") \(result.commit.commit.shortHex)] \(message.split(separator: "\n").first ?? "")"
      )
      output("target_modules: \(result.targetModules.joined(separator: ", "))")
      for change in result.commit.record.changes {
        var line =
          " \(change.storage.padding(toLength: 8, withPad: " ", startingAt: 0)) \(change.name)"
        if let rank = change.rank { line += "  rank \(rank)" }
        if let norms = change.norms {
          line += String(format: "  ‖ΔW‖/‖W‖ %.3g", norms.relativeFrobenius)
        }
        output(line)
      }
    }
  }
}
