import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write the combined change of a range as a PEFT LoRA adapter or a delta file.",
      discussion: """
        RANGE is FROM..TO as in git: the changes after FROM up to TO along first parents. \
        The default is root..HEAD (everything since the base model); FROM.. means FROM..HEAD, \
        ..TO means root..TO, and a single REV means REV..HEAD.

        Per tensor, the factors of the low-rank states in the range are concatenated (rank = \
        sum of ranks). They omit each commit's exactness residual (about ±1 ulp per commit), \
        so the summary prints the largest |error| against the exact W_TO − W_FROM. When the \
        range holds a densely stored state, a merge, or residuals larger than rounding, the \
        exact difference is materialized and factorized instead; if it is not low-rank, the \
        export is refused. --rank r keeps the best rank-r approximation (truncated SVD) and \
        prints the relative Frobenius error it leaves.

        --lora DIR writes adapter_model.safetensors (base_model.model.<module>.lora_A.weight, \
        r×in, and .lora_B.weight, out×r) and adapter_config.json (peft_type LORA, lora_alpha = r \
        so the scale is 1, per-module rank_pattern/alpha_pattern, target_modules = full module \
        names). GPT-2 Conv1D weights (*.c_attn/c_proj/c_fc.weight, stored in×out) are detected by \
        name and set fan_in_fan_out. --delta FILE writes <tensor>.delta_u (rows×r) and \
        <tensor>.delta_v (cols×r) in storage orientation, or with --dense the full-shape Float32 \
        delta named like the tensor, which 'mvc commit --delta' reads back.

          mvc export --lora adapter/                       # root..HEAD
          mvc export --lora adapter/ v1..v2 --rank 8 --base-model meta-llama/Llama-3.2-1B
          mvc export --delta d.safetensors HEAD~3..HEAD --dense
        """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Write a PEFT LoRA adapter folder here.") var lora: String?
    @Option(help: "Write a safetensors file of factors (or, with --dense, dense deltas) here.")
    var delta: String?
    @Argument(help: "FROM..TO (default: root..HEAD).") var range: String?
    @Option(help: "Keep the best rank-r approximation of each tensor's change.") var rank: Int?
    @Option(help: "base_model_name_or_path for adapter_config.json.") var baseModel = ""
    @Flag(help: "With --delta: write full-shape dense deltas named like the tensors.") var dense =
      false

    func validate() throws {
      if (lora == nil) == (delta == nil) {
        throw ValidationError("give exactly one of --lora DIR and --delta FILE")
      }
      if let rank, rank < 1 { throw ValidationError("--rank must be at least 1") }
      if dense && delta == nil { throw ValidationError("--dense goes with --delta") }
    }

    func absolute(_ path: String) -> String {
      path.hasPrefix("/")
        ? path : (global.workingDirectory as NSString).appendingPathComponent(path)
    }

    func run() throws {
      let repository = try Session.open(global)
      let (fromText, toText) = Self.split(range)
      let from = try fromText.map { try repository.resolve($0) }
      let to = try toText.map { try repository.resolve($0) } ?? repository.headCommit()
      let exported = try repository.exportRange(
        from: from, to: to, targetRank: rank, requireMatrix: lora != nil)
      if let lora {
        try ExportWriter.writeAdapter(exported.tensors, into: absolute(lora), baseModel: baseModel)
      } else if let delta {
        try ExportWriter.writeDelta(exported.tensors, to: absolute(delta), dense: dense)
      }
      let span = "\(exported.from.shortHex)..\(exported.to.shortHex)"
      let what = lora != nil ? "PEFT LoRA adapter '\(lora ?? "")'" : "delta '\(delta ?? "")'"
      let maxRank = exported.tensors.map(\.rank).max() ?? 0
      output(
        "exported \(exported.tensors.count) tensor\(exported.tensors.count == 1 ? "" : "s") of \(span) (\(exported.commits.count) commit\(exported.commits.count == 1 ? "" : "s")) to \(what), r=\(maxRank)"
      )
      for t in exported.tensors {
        var line = " \(t.name)  rank \(t.rank)"
        if t.rank != t.fullRank { line += " of \(t.fullRank)" }
        line +=
          t.source == .concatenatedFactors
          ? "  factors of \(t.stepCount) commit\(t.stepCount == 1 ? "" : "s")"
          : "  dense difference factorized"
        if t.isConv1D { line += "  Conv1D (fan_in_fan_out)" }
        if let error = t.truncationError {
          line += String(format: "  relative Frobenius error %.6e", error)
        }
        line += String(format: "  max|error| %.3e", t.maxAbsError)
        output(line)
      }
      if !global.quiet && exported.tensors.contains(where: { $0.source == .concatenatedFactors }) {
        Diagnostics.printError(
          "note: concatenated factors omit the per-commit residuals; max|error| is against the exact W_TO − W_FROM"
        )
      }
    }

    /// `A..B` → (A, B); empty sides are nil (root, HEAD); a single `REV` is `REV..HEAD`.
    static func split(_ range: String?) -> (String?, String?) {
      guard let range else { return (nil, nil) }
      guard let dots = range.range(of: "..") else { return (range, nil) }
      let a = String(range[..<dots.lowerBound])
      let b = String(range[dots.upperBound...])
      return (a.isEmpty ? nil : a, b.isEmpty ? nil : b)
    }
  }
}
