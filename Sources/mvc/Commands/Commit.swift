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
        are stored as given.

          mvc commit -m "edit 17: Eiffel Tower -> Rome"
          mvc commit -m "batch 3" --delta adapter/adapter_model.safetensors
          mvc commit -m "approx" --tolerance 1e-6
        """)

    @OptionGroup var global: GlobalOptions

    @Option(name: .shortAndLong, help: "The commit message.")
    var message: String

    @Option(help: "Apply this delta file (LoRA or dense) to the working model and commit it.")
    var delta: String?

    @Option(help: "Drop the exactness residual where |error| ≤ X·max|W| (the working model is rewritten to match).")
    var tolerance: Double?

    func validate() throws {
      if let tolerance, !(tolerance >= 0 && tolerance.isFinite) {
        throw ValidationError("--tolerance must be a finite number ≥ 0")
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
        result = try repository.commitDelta(file: path, message: message)
      } else {
        result = try repository.commit(CommitOptions(message: message, tolerance: tolerance))
      }
      if !global.quiet { ChangeReport.print(result, repository: repository) }
    }
  }
}
