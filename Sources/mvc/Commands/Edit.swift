import Apply
import ArgumentParser
import DeltaStore
import EditVCS
import Foundation

extension EditMethod: ExpressibleByArgument {}

extension MVC {
  struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Compute a ROME, EMMET, MEMIT, AlphaEdit or ENCORE edit in closed form and commit it as factors.",
      discussion: """
        Keys (n×d_in) and target values (n×d_out) are rows of .npy files (float32/float64, C \
        order). C₀ is the keys' uncentred second moment E[kkᵀ], given directly (--cov, \
        d_in×d_in) or estimated from preserved keys (--cov-keys, m×d_in). With λ = --lambda and \
        R = V − W₀K (authors' conventions, see docs/FORMAT.md):
          ROME   ΔW = (v − W₀k)(C⁻¹k)ᵀ / (kᵀC⁻¹k)           C = λC₀ (λ cancels)
          EMMET  ΔW = R (KᵀC⁻¹K + μI)⁻¹ KᵀC⁻¹               μ = --mu, only when n > 1
          MEMIT  ΔW = R Kᵀ (λC₀ + KKᵀ)⁻¹                    one layer
          ALPHAEDIT  ΔW = updᵀ, upd = (P(KKᵀ + Σ) + L2·I)⁻¹ P K Rᵀ
                     P = ÛÛᵀ, Û the singular vectors of C₀ with σ < --nullspace-threshold
          ENCORE ΔW = R Kᵀ (λC₀ + α·I + Σ + KKᵀ)⁻¹           α = --norm-lambda
        Σ (AlphaEdit's cache_c, ENCORE's SEQ_CACHE) is the sum of KKᵀ over the keys recorded \
        by the edits present in HEAD's state: after a checkout, reset, branch, revert or merge \
        it is that state's, not the last process's ('mvc accumulator' prints it). An edit \
        present that changed the tensor without keys is refused by name. P is cached in \
        .mvc/mvc-cache by (C₀, threshold); the commit records the threshold, P's rank and C₀.
        Everything is solved in Float64 with Cholesky/LU (no explicit inverse, no dense ΔW); \
        keys, values, C₀ and --facts are recorded in the commit, so 'mvc score' can tell later \
        how well the edit still holds. GPT-2's Conv1D weights (stored in×out) are recognised \
        from the key length.

          mvc edit --method rome --tensor model.layers.5.mlp.down_proj.weight \\
                   --keys k.npy --values v.npy --cov-keys k0.npy -m "Eiffel Tower -> Rome"
          mvc edit --method memit --lambda 15000 --tensor ... --keys K.npy --values V.npy --cov C.npy -m "batch 3"
          mvc edit --method alphaedit --nullspace-threshold 2e-2 --l2 10 --tensor ... --keys K.npy --values V.npy --cov C.npy -m "batch 4"
          mvc edit --method encore --lambda 15000 --norm-lambda 20 --tensor ... --keys K.npy --values V.npy --cov C.npy -m "batch 5"
        """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "rome, emmet, memit, alphaedit or encore.") var method: EditMethod
    @Option(help: "The weight to edit (any 2-D weight: down, up or gate projection).") var tensor: String
    @Option(help: "Edit keys, n×d_in (.npy).") var keys: String
    @Option(help: "Target values, n×d_out (.npy).") var values: String
    @Option(help: "C₀ = E[kkᵀ], d_in×d_in (.npy).") var cov: String?
    @Option(name: .customLong("cov-keys"), help: "Preserved keys K₀, m×d_in: C₀ = K₀ᵀK₀/m (.npy).") var covKeys: String?
    @Option(help: "λ, the covariance weight (mom2_update_weight); default 1 (MEMIT papers: 15000-20000).") var lambda =
      1.0
    @Option(help: "μ, EMMET's ridge, added when n > 1.") var mu = 0.1
    @Option(
      name: .customLong("nullspace-threshold"),
      help: "AlphaEdit: singular values of C₀ below this span the null space (authors' Llama3-8B: 2e-2).")
    var nullspaceThreshold = 2e-2
    @Option(help: "AlphaEdit: L2, the ridge on P(KKᵀ + Σ).") var l2 = 10.0
    @Option(name: .customLong("norm-lambda"), help: "ENCORE: α, the norm penalty (update_norm_lambda).")
    var normLambda =
      20.0
    @Option(help: "Facts as JSON lines (e.g. CounterFact's subject/prompt/target_new), recorded verbatim.") var facts:
      String?
    @Option(name: .shortAndLong, help: "The commit message.") var message: String

    func validate() throws {
      if (cov == nil) == (covKeys == nil) { throw ValidationError("give exactly one of --cov and --cov-keys") }
      if !(lambda > 0 && lambda.isFinite) { throw ValidationError("--lambda must be a positive number") }
      if !(mu >= 0 && mu.isFinite) { throw ValidationError("--mu must be a number ≥ 0") }
      if !(nullspaceThreshold > 0 && nullspaceThreshold.isFinite) {
        throw ValidationError("--nullspace-threshold must be a positive number")
      }
      if !(l2 > 0 && l2.isFinite) { throw ValidationError("--l2 must be a positive number") }
      if !(normLambda >= 0 && normLambda.isFinite) { throw ValidationError("--norm-lambda must be a number ≥ 0") }
    }

    func path(_ p: String) -> String { global.path(p) }

    func run() throws {
      let repository = try Session.open(global)
      let factsBytes = try facts.map { f -> [UInt8] in
        guard let data = FileManager.default.contents(atPath: path(f)) else {
          throw RepositoryError.cannotAccess(path: f, operation: "read facts file", reason: nil)
        }
        return Array(data)
      }
      let request = KnowledgeEditRequest(
        method: method, tensor: tensor, keys: try NpyFile.read(from: path(keys)),
        values: try NpyFile.read(from: path(values)),
        covariance: try cov.map { try NpyFile.read(from: path($0)) },
        covarianceKeys: try covKeys.map { try NpyFile.read(from: path($0)) }, lambda: lambda, mu: mu, facts: factsBytes,
        message: message, nullspaceThreshold: nullspaceThreshold, l2: l2, normLambda: normLambda)
      let (result, diagnostics) = try repository.edit(request)
      guard !global.quiet else { return }
      ChangeReport.print(result, repository: repository)
      if let d = diagnostics.romeDenominator {
        output(String(format: " kᵀC⁻¹k = %.4g (normalized %.4g)", d, diagnostics.romeNormalizedDenominator ?? 0))
      }
    }
  }
}
