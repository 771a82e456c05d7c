import ArgumentParser
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// `mvc-demo-editor`: a stand-in for an external editing library (EasyEdit, the ROME code).
///
/// It generates transformer-shaped safetensors models and rewrites them the way torch/safetensors
/// would (a new file renamed over the old one, same tensor order and header), so the demo and the
/// benchmarks drive `mvc` exactly as a user's editor does.
@main
enum Entry {
  static func main() {
    BLASSetup.reexecWithBetterCoreIfNeeded()
    DemoEditor.main()
  }
}

struct DemoEditor: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mvc-demo-editor",
    abstract: "Generate toy transformer models and edit them like an external editor would.",
    subcommands: [
      Generate.self, GenerateLlama.self, Rome.self, LowRank.self, Eval.self, BenchSolvers.self, BenchCodecs.self,
      BenchBaseCodec.self,
    ])
}
