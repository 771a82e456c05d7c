import ArgumentParser
import Foundation

extension MVC {
  struct Completion: ParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Print a shell completion script for mvc.",
      discussion: """
          source <(mvc completion bash)
          mvc completion zsh > "${fpath[1]}/_mvc"
          mvc completion fish > ~/.config/fish/completions/mvc.fish
        """)

    enum Shell: String, ExpressibleByArgument, CaseIterable {
      case bash, zsh, fish
    }

    @Argument(help: "bash, zsh or fish.") var shell: Shell

    func run() throws {
      let kind: CompletionShell
      switch shell {
      case .bash: kind = .bash
      case .zsh: kind = .zsh
      case .fish: kind = .fish
      }
      FileHandle.standardOutput.write(Data(MVC.completionScript(for: kind).utf8))
    }
  }
}
