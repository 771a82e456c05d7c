import EditVCS

/// The text graph of `log --graph`, drawn as git draws it: one column per line of descent, `*`
/// for the commit, `|\` where a merge opens a column for its second parent, `|/` where two
/// columns reach the same commit and join.
struct LogGraph {
  /// The commit each column waits for, left to right.
  private var columns: [ObjectID] = []

  /// The graph for one commit: the row that carries its first text line, then the rows that
  /// carry its further lines (fan-out and joins first, then plain columns as long as needed).
  mutating func rows(for id: ObjectID, parents: [ObjectID]) -> (first: String, rest: [String], filler: String) {
    let index =
      columns.firstIndex(of: id)
      ?? {
        columns.append(id); return columns.count - 1
      }()
    var row = columns.indices.map { $0 == index ? "*" : "|" }.joined(separator: " ")
    var next = columns
    next.replaceSubrange(index...index, with: parents)
    var rest: [String] = []
    if parents.count > 1 {
      var fan = Array(repeating: Character(" "), count: 2 * next.count - 1)
      for column in 0...index { fan[2 * column] = "|" }
      for column in (index + 1)..<next.count { fan[2 * column - 1] = "\\" }
      rest.append(String(fan))
    }
    row = row.padding(toLength: max(row.count, 2 * next.count - 1), withPad: " ", startingAt: 0)
    // Columns that wait for the same commit join the leftmost one.
    while let (keep, drop) = Self.firstDuplicate(next) {
      var join = Array(repeating: Character(" "), count: 2 * next.count - 1)
      for column in next.indices where column < drop { join[2 * column] = "|" }
      for position in (2 * keep + 1)..<(2 * drop - 1) where join[position] == " " { join[position] = "_" }
      for column in drop..<next.count { join[2 * column - 1] = "/" }
      rest.append(String(join))
      next.remove(at: drop)
    }
    columns = next
    let width = ([row] + rest).map(\.count).max() ?? 0
    let filler = columns.map { _ in "|" }.joined(separator: " ").padding(toLength: width, withPad: " ", startingAt: 0)
    return (row, rest, filler)
  }

  private static func firstDuplicate(_ columns: [ObjectID]) -> (Int, Int)? {
    for drop in columns.indices {
      if let keep = columns[..<drop].firstIndex(of: columns[drop]) { return (keep, drop) }
    }
    return nil
  }

  /// Puts the graph in front of a commit's text lines, and prints rows of its own where the
  /// graph needs more lines than the text has.
  mutating func prefix(_ lines: [String], id: ObjectID, parents: [ObjectID]) -> [String] {
    let (first, rest, filler) = rows(for: id, parents: parents)
    var out: [String] = []
    for (n, line) in lines.enumerated() {
      let graph = n == 0 ? first : (n - 1 < rest.count ? rest[n - 1] : filler)
      out.append(Self.trimmed(graph + " " + line))
    }
    if lines.count - 1 < rest.count { out += rest[max(lines.count - 1, 0)...].map(Self.trimmed) }
    return out
  }

  private static func trimmed(_ line: String) -> String {
    var line = line
    while line.last == " " { line.removeLast() }
    return line
  }
}
