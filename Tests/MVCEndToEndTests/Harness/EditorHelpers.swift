import Foundation
import TestSupport
import Testing

// Helpers for the bisect and edit/score/merge suites: the stand-in editor, shell scripts,
// tensors read back as floats, and a small Float64 linear solver for reference formulas.

/// `mvc-demo-editor`, built beside `mvc`.
let demoEditorExecutable: URL? = {
  guard let mvc = mvcExecutable else { return nil }
  let url = mvc.deletingLastPathComponent().appendingPathComponent("mvc-demo-editor")
  return FileManager.default.isExecutableFile(atPath: url.path) ? url : nil
}()

/// Runs `mvc-demo-editor args` in `dir`.
@discardableResult
func runEditor(_ args: [String], in dir: URL) -> (status: Int32, stdout: String, stderr: String) {
  guard let editor = demoEditorExecutable else {
    return (-1, "", "test harness: no mvc-demo-editor beside mvc")
  }
  return runProcessOutcome(editor, args, in: dir).tuple
}

/// Writes an executable `/bin/sh` script.
func writeScript(_ url: URL, _ body: String) throws {
  try Data("#!/bin/sh\n\(body)\n".utf8).write(to: url)
  try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
}

/// Every tensor of a safetensors file as Float32 values, by name.
func floatTensors(_ url: URL) throws -> [String: (shape: [Int], values: [Float])] {
  var out: [String: (shape: [Int], values: [Float])] = [:]
  for t in try readSafetensorsFixture(url).tensors { out[t.name] = (t.shape, t.decodedFloats) }
  return out
}

/// The full 40-hex ids in `[<id>]` brackets of a bisect step's output, in order.
func bracketedIDs(_ text: String) -> [String] {
  var ids: [String] = []
  for line in text.split(separator: "\n") where line.hasPrefix("[") {
    let inner = line.dropFirst().prefix { $0 != "]" }
    if inner.count == 40, inner.allSatisfy(\.isHexDigit) { ids.append(String(inner)) }
  }
  return ids
}

/// The id in "<id> is the first bad commit", if printed.
func firstBadID(_ text: String) -> String? {
  for line in text.split(separator: "\n") where line.hasSuffix(" is the first bad commit") {
    return String(line.prefix { $0 != " " })
  }
  return nil
}

/// The symbolic target of `.mvc/HEAD` ("refs/heads/main") or the detached id.
func headReference(_ dir: URL) -> String {
  let text =
    (try? String(contentsOf: dir.appendingPathComponent(".mvc/HEAD"), encoding: .utf8)) ?? ""
  let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
  return line.hasPrefix("ref: ") ? String(line.dropFirst(5)) : line
}

// MARK: Float64 linear algebra (row-major)

/// A row-major Float64 matrix.
struct Matrix {
  var rows: Int
  var cols: Int
  var a: [Double]

  init(rows: Int, cols: Int, _ a: [Double]? = nil) {
    self.rows = rows
    self.cols = cols
    self.a = a ?? [Double](repeating: 0, count: rows * cols)
    precondition(self.a.count == rows * cols)
  }

  static func identity(_ n: Int) -> Matrix {
    var m = Matrix(rows: n, cols: n)
    for i in 0..<n { m[i, i] = 1 }
    return m
  }

  subscript(i: Int, j: Int) -> Double {
    get { a[i * cols + j] }
    set { a[i * cols + j] = newValue }
  }

  var transposed: Matrix {
    var t = Matrix(rows: cols, cols: rows)
    for i in 0..<rows { for j in 0..<cols { t[j, i] = self[i, j] } }
    return t
  }

  static func * (x: Matrix, y: Matrix) -> Matrix {
    precondition(x.cols == y.rows)
    var z = Matrix(rows: x.rows, cols: y.cols)
    for i in 0..<x.rows {
      for k in 0..<x.cols {
        let xik = x[i, k]
        if xik == 0 { continue }
        for j in 0..<y.cols { z.a[i * y.cols + j] += xik * y.a[k * y.cols + j] }
      }
    }
    return z
  }

  static func + (x: Matrix, y: Matrix) -> Matrix {
    Matrix(rows: x.rows, cols: x.cols, zip(x.a, y.a).map(+))
  }
  static func - (x: Matrix, y: Matrix) -> Matrix {
    Matrix(rows: x.rows, cols: x.cols, zip(x.a, y.a).map(-))
  }
  static func * (s: Double, x: Matrix) -> Matrix {
    Matrix(rows: x.rows, cols: x.cols, x.a.map { s * $0 })
  }

  /// The inverse by Gauss-Jordan elimination with partial pivoting.
  var inverse: Matrix {
    precondition(rows == cols)
    let n = rows
    var m = self
    var inv = Matrix.identity(n)
    for c in 0..<n {
      var p = c
      for r in (c + 1)..<max(n, c + 1) where abs(m[r, c]) > abs(m[p, c]) { p = r }
      if p != c {
        for j in 0..<n {
          m.a.swapAt(c * n + j, p * n + j)
          inv.a.swapAt(c * n + j, p * n + j)
        }
      }
      let d = m[c, c]
      for j in 0..<n {
        m[c, j] /= d
        inv[c, j] /= d
      }
      for r in 0..<n where r != c {
        let f = m[r, c]
        if f == 0 { continue }
        for j in 0..<n {
          m[r, j] -= f * m[c, j]
          inv[r, j] -= f * inv[c, j]
        }
      }
    }
    return inv
  }

  var frobenius: Double { a.reduce(0) { $0 + $1 * $1 }.squareRoot() }
}
