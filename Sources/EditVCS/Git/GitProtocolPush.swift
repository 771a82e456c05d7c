internal import CGit2
import Foundation

/// A push over `git://` (git's receive-pack, protocol version 0, gitprotocol-pack(5)) whose
/// pack is streamed by ``PackWriter`` instead of libgit2's packbuilder, which deflates every
/// object again at zlib's default level (~50 MB/s on mvc's zstd chunks) after a delta search.
///
/// The exchange: `git-receive-pack <path>\0host=<host>\0` in a pkt-line; the server lists its
/// references (one pkt-line each, capabilities after a NUL on the first, then a flush); mvc
/// sends `<old> <new> <ref>` per update (`report-status` on the first), a flush, the pack; the
/// server answers `unpack ok` and `ok <ref>` / `ng <ref> <reason>`, then a flush. Everything
/// the server sends is length-checked before use; the fast-forward rules are libgit2's.
struct GitProtocolPush {
  let repository: GitRepository
  let url: String
  private let host: String
  private let port: UInt16
  private let path: String

  /// Nil for a URL that is not `git://host[:port]/path`.
  init?(repository: GitRepository, url: String) {
    guard url.hasPrefix("git://"), let parsed = URL(string: url), let host = parsed.host, !host.isEmpty,
      !parsed.path.isEmpty
    else { return nil }
    let port = parsed.port ?? 9418
    guard (1...65535).contains(port) else { return nil }
    self.repository = repository
    self.url = url
    self.host = host
    self.port = UInt16(port)
    self.path = parsed.path
  }

  private func failure(_ function: String, _ message: String, code: Int32 = GIT_ERROR.rawValue) -> RepositoryError {
    .libgit2(code: code, function: function, subject: url, message: message)
  }

  // MARK: socket

  private func connectSocket() throws -> Int32 {
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_family = AF_UNSPEC
    var list: UnsafeMutablePointer<addrinfo>?
    let code = getaddrinfo(host, String(port), &hints, &list)
    guard code == 0, let list else {
      throw failure("getaddrinfo", String(cString: gai_strerror(code)))
    }
    defer { freeaddrinfo(list) }
    var lastError = ECONNREFUSED
    var entry: UnsafeMutablePointer<addrinfo>? = list
    while let current = entry {
      let fd = socket(
        current.pointee.ai_family, current.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
        current.pointee.ai_protocol)
      if fd >= 0 {
        if connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 { return fd }
        lastError = errno
        close(fd)
      }
      entry = current.pointee.ai_next
    }
    throw failure("connect", "\(host):\(port): \(String(cString: strerror(lastError)))")
  }

  private func send(_ fd: Int32, _ bytes: [UInt8]) throws {
    var done = 0
    while done < bytes.count {
      let sent = bytes.withUnsafeBytes { raw in
        Glibc.send(fd, raw.baseAddress.map { $0 + done }, raw.count - done, Int32(MSG_NOSIGNAL))
      }
      if sent < 0 {
        if errno == EINTR { continue }
        throw failure("send", String(cString: strerror(errno)))
      }
      done += sent
    }
  }

  private func pktLine(_ text: String) -> [UInt8] { pktLine(Array(text.utf8)) }

  private func pktLine(_ payload: [UInt8]) -> [UInt8] {
    Array(String(format: "%04x", payload.count + 4).utf8) + payload
  }

  /// Reads exactly `count` bytes.
  private func receive(_ fd: Int32, _ count: Int) throws -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var done = 0
    while done < count {
      let got = out.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress.map { $0 + done }, count - done, 0) }
      if got < 0 {
        if errno == EINTR { continue }
        throw failure("recv", String(cString: strerror(errno)))
      }
      if got == 0 { throw failure("recv", "the remote closed the connection") }
      done += got
    }
    return out
  }

  /// One pkt-line's payload, nil for a flush packet. The length is checked (4 hex digits,
  /// 4...65520) before anything is allocated; an `ERR` line from the server is thrown.
  private func readPacket(_ fd: Int32) throws -> [UInt8]? {
    let header = try receive(fd, 4)
    guard let length = Int(String(decoding: header, as: UTF8.self), radix: 16),
      header.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
    else { throw failure("receive-pack", "not a pkt-line length: \(header)") }
    if length == 0 { return nil }
    guard (4...65520).contains(length) else { throw failure("receive-pack", "pkt-line length \(length)") }
    let payload = try receive(fd, length - 4)
    if payload.starts(with: Array("ERR ".utf8)) {
      throw failure("receive-pack", String(decoding: payload.dropFirst(4), as: UTF8.self))
    }
    return payload
  }

  // MARK: push

  /// Pushes `refspecs` (`src:dst`, no `+`); returns the references the server refused, with
  /// its reason. A non-fast-forward throws `GIT_ENONFASTFORWARD`, as libgit2's push does.
  func push(refspecs: [String]) throws -> [(ref: String, reason: String)] {
    let fd = try connectSocket()
    defer { close(fd) }
    try send(fd, pktLine(Array("git-receive-pack \(path)\0host=\(host):\(port)\0".utf8)))

    // The server's references.
    var advertised: [String: ObjectID] = [:]
    var first = true
    while let line = try readPacket(fd) {
      var payload = line
      if first, let nul = payload.firstIndex(of: 0) { payload = Array(payload[..<nul]) }
      first = false
      if payload.last == 0x0A { payload.removeLast() }
      guard payload.count > 41, payload[40] == 0x20,
        let id = ObjectID(hex: String(decoding: payload[0..<40], as: UTF8.self))
      else { throw failure("receive-pack", "malformed reference line") }
      let name = String(decoding: payload[41...], as: UTF8.self)
      if name != "capabilities^{}" { advertised[name] = id }
      guard advertised.count <= 1 << 20 else { throw failure("receive-pack", "more than 2^20 references") }
    }

    var updates: [(ref: String, new: ObjectID, old: ObjectID?)] = []
    for spec in refspecs {
      let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
      guard parts.count == 2, let new = try repository.referenceTarget(parts[0]) else {
        throw failure("push", "src refspec '\(spec)' does not match any reference", code: GIT_ENOTFOUND.rawValue)
      }
      let old = advertised[parts[1]]
      if old == new { continue }
      if let old {
        guard try repository.hasObject(old), try repository.mergeBase(new, old) == old else {
          throw failure(
            "push", "cannot push non-fastforwardable reference \(parts[1])", code: GIT_ENONFASTFORWARD.rawValue)
        }
      }
      updates.append((parts[1], new, old))
    }
    guard !updates.isEmpty else {
      try send(fd, Array("0000".utf8))
      return []
    }
    let zero = String(repeating: "0", count: 40)
    var commands: [UInt8] = []
    for (index, update) in updates.enumerated() {
      let line = "\(update.old?.hex ?? zero) \(update.new.hex) \(update.ref)"
      commands += pktLine(index == 0 ? Array((line + "\0report-status agent=mvc").utf8) : Array((line + "\n").utf8))
    }
    commands += Array("0000".utf8)
    try send(fd, commands)

    // What the server has: the commits it advertised that are known here, their history
    // (hidden from the walk) and the trees and blobs of their own trees (git's "edge").
    let known = Array(Set(try advertised.values.filter { try repository.hasObject($0) }))
    let edgeTrees = known.compactMap { try? repository.commit($0).tree }
    let theirs = Set(try repository.reachableObjects(from: edgeTrees))
    let objects = try repository.reachableObjects(from: updates.map(\.new), hiding: known) { !theirs.contains($0) }
    let writer = try PackWriter(streamingTo: fd, objectCount: objects.count, name: url)
    try repository.appendObjects(objects, to: writer, verification: .own)
    _ = try writer.finish()

    // The report.
    guard let unpack = try readPacket(fd) else { throw failure("receive-pack", "no report from the remote") }
    let unpackText = String(decoding: unpack, as: UTF8.self).trimmingCharacters(in: .newlines)
    guard unpackText == "unpack ok" else {
      throw failure("receive-pack", "the remote could not store the pack: \(unpackText)")
    }
    var rejected: [(ref: String, reason: String)] = []
    var reported = Set<String>()
    while let line = try readPacket(fd) {
      let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .newlines)
      if text.hasPrefix("ok ") {
        reported.insert(String(text.dropFirst(3)))
      } else if text.hasPrefix("ng ") {
        let rest = text.dropFirst(3)
        let ref = String(rest.prefix { $0 != " " })
        reported.insert(ref)
        rejected.append((ref, String(rest.dropFirst(ref.count + 1))))
      }
    }
    for update in updates where !reported.contains(update.ref) {
      rejected.append((update.ref, "the remote did not report on it"))
    }
    return rejected
  }
}
