import Foundation

#if canImport(Glibc)
  import Glibc
#endif

/// An exclusive `flock` on `.mvc/lock`, held for the life of the object.
///
/// The kernel drops the lock when the holder dies, even by SIGKILL, so a crashed mvc never
/// blocks the next one (a pid file would). The pid written inside is only for the message.
final class RepositoryLock {
  private let descriptor: Int32

  init(path: String) throws {
    let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw RepositoryError.cannotAccess(
        path: path, operation: "open lock", reason: String(cString: strerror(errno)))
    }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      var buffer = [UInt8](repeating: 0, count: 32)
      let count = pread(fd, &buffer, buffer.count, 0)
      close(fd)
      let text = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
      throw RepositoryError.locked(
        path: path, pid: Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
    descriptor = fd
    let pid = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
  }

  deinit {
    _ = flock(descriptor, LOCK_UN)
    close(descriptor)
  }
}

/// Removes libgit2 `*.lock` files a killed process left behind; only called under `RepositoryLock`,
/// when no other mvc can be writing them.
func removeStaleGitLocks(in gitDirectory: String) {
  let manager = FileManager.default
  for name in ["HEAD.lock", "config.lock", "index.lock", "packed-refs.lock"] {
    try? manager.removeItem(atPath: gitDirectory + "/" + name)
  }
  guard let walker = manager.enumerator(atPath: gitDirectory + "/refs") else { return }
  while let relative = walker.nextObject() as? String {
    if relative.hasSuffix(".lock") { try? manager.removeItem(atPath: gitDirectory + "/refs/" + relative) }
  }
}
