import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Commit: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Record the working model's changes as a new commit.",
      discussion: """
        Each changed tensor is stored as low-rank factors U·Vᵀ of ΔW = W_working − W_HEAD plus \
        a small residual that makes checkout give back the exact bytes; changes that are not \
        low-rank are stored densely. With --delta, the delta file is applied to the working \
        model first (PEFT LoRA pairs or dense tensors named like the model's) and its factors \
        are stored as given. LoRA pairs are scaled by lora_alpha/r from the adapter_config.json \
        beside the file, or by --scale; with neither the commit is refused (no guess), and the \
        scale used is printed and recorded. Recovered factors are fitted to the committed \
        values' rounding; --compact searches longer for the smallest residual.

          mvc commit -m "edit 17: Eiffel Tower -> Rome"
          mvc commit -m "batch 3" --delta adapter/adapter_model.safetensors
          mvc commit -m "batch 4" --delta lora.safetensors --scale 2
          mvc commit -m "approx" --tolerance 1e-6
          mvc commit -m "edit 18" --compact
        """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .shortAndLong, help: "The commit message.")
    var message: String

    @Option(help: "Apply this delta file (LoRA or dense) to the working model and commit it.")
    var delta: String?

    @Option(help: "With --delta: LoRA's scale lora_alpha/r, when no adapter_config.json is beside the file.")
    var scale: Double?

    @Option(help: "Drop the exactness residual where |error| ≤ X·max|W| (the working model is rewritten to match).")
    var tolerance: Double?

    @Flag(
      help: "Search longer for factors that leave the smallest residual (bf16/fp16: about half the bytes, 3× the time)."
    )
    var compact = false

    func validate() throws {
      if let tolerance, !(tolerance >= 0 && tolerance.isFinite) {
        throw ValidationError("--tolerance must be a finite number ≥ 0")
      }
      if let scale, delta == nil || !(scale.isFinite && scale != 0) {
        throw ValidationError("--scale needs --delta and a finite, non-zero number")
      }
      if compact && delta != nil {
        throw ValidationError("--compact refines the factors mvc recovers; --delta stores the file's factors as given")
      }
      if message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
        throw ValidationError("aborting commit due to empty commit message")
      }
    }

    func run() throws {
      let repository = try Session.open(global)
      let result: CommitResult
      if let delta {
        let path = global.path(delta)
        result = try repository.commitDelta(file: path, message: message, scale: scale)
        if let applied = result.record.details?["lora_scale"], !global.quiet {
          let source = result.record.details?["lora_scale_source"] ?? "adapter_config.json"
          Diagnostics.printError("LoRA scale lora_alpha/r = \(applied) (from \(source))")
        }
      } else {
        result = try repository.commit(CommitOptions(message: message, tolerance: tolerance, compact: compact))
      }
      if !global.quiet { ChangeReport.print(result, repository: repository) }
    }
  }
}
