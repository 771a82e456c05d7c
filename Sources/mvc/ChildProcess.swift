import EditVCS
import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// A program mvc runs and waits for (a bisect evaluation, a cancel command), started with
/// `posix_spawn` and awaited with `waitpid`, as git runs `bisect run`'s program.
///
/// Not `Foundation.Process`: on Linux it learns that a child ended through a socket the child
/// inherits, so a background process the child leaves behind (an evaluation that starts a
/// server with `&`, a daemon) holds that socket open and `waitUntilExit` waits for it too —
/// `mvc bisect run` sat out a forgotten `sleep 40 &` before this.
enum ChildProcess {
  /// How the child ended.
  enum Ending: Equatable {
    case exited(Int32)
    case signaled(Int32)
  }

  /// Runs `executable` with `arguments` in `directory`, with mvc's standard input, output and
  /// error (or /dev/null for all three when `silent`), and waits for it alone.
  static func run(_ executable: String, _ arguments: [String], in directory: String, silent: Bool = false) throws
    -> Ending
  {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if silent {
      for descriptor: Int32 in 0...2 {
        posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY, 0)
      }
    }
    // posix_spawn has no portable way to set the child's directory (glibc's addchdir_np is not
    // visible to Swift): a shell enters it and execs the program, so the status is the program's.
    // 255 (≥ 128: aborts a bisect run) when the directory cannot be entered.
    let enter = #"cd -- "$1" || { echo "mvc: cannot enter $1" >&2; exit 255; }; shift; exec "$@""#
    let argv = ["/bin/sh", "-c", enter, "sh", directory, executable] + arguments
    var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for pointer in cArguments { free(pointer) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, "/bin/sh", &actions, nil, &cArguments, environ)
    guard result == 0 else {
      throw RepositoryError.programNotRunnable(path: executable, reason: String(cString: strerror(result)))
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 {
      guard errno == EINTR else {
        throw RepositoryError.programNotRunnable(
          path: executable, reason: "waiting for it failed: \(String(cString: strerror(errno)))")
      }
    }
    let signal = status & 0x7f
    return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
  }
}
