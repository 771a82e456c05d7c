import EditVCS

/// The text graph of `log --graph`, drawn as git draws it: one column per line of descent, `*`
/// for the commit, `|\` where a merge opens a column for its second parent, `|/` where two
/// columns reach the same commit and join (`|/|` where the joining line crosses another).
struct LogGraph {
  /// The commit each column waits for, left to right.
  private var columns: [ObjectID] = []
  /// Columns whose line is still one step right of its place after the last joins: the next
  /// commit row draws them as `/`, as git does.
  private var stillMoving: Set<Int> = []

  /// The graph for one commit: the row that carries its first text line, then the rows that
  /// carry its further lines (fan-out and joins first, then plain columns as long as needed).
  mutating func rows(for id: ObjectID, parents: [ObjectID]) -> (first: String, rest: [String], filler: String) {
    let index =
      columns.firstIndex(of: id)
      ?? {
        columns.append(id); return columns.count - 1
      }()
    var row = ""
    var next = columns
    next.replaceSubrange(index...index, with: parents)
    var rest: [String] = []
    if parents.count > 1 {
      var fan = Array(repeating: Character(" "), count: 2 * next.count - 1)
      for column in 0...index { fan[2 * column] = "|" }
      for column in (index + 1)..<next.count { fan[2 * column - 1] = "\\" }
      rest.append(String(fan))
    }
    // Columns that wait for the same commit join the leftmost one, and columns right of a
    // removed one close the gap: each moves left one step a row, as git's graph.c does.
    var merged: [ObjectID] = []
    for commit in next where !merged.contains(commit) { merged.append(commit) }
    // A line still moving from the last joins, and moving on left after this commit, is `/`.
    row = columns.indices.map { column in
      if column == index { return "*" }
      let moving = stillMoving.contains(column) && (merged.firstIndex(of: columns[column]) ?? column) < column
      return moving ? "/" : "|"
    }.joined(separator: " ")
    row = row.padding(toLength: max(row.count, 2 * next.count - 1), withPad: " ", startingAt: 0)
    var mapping = Array(repeating: -1, count: 2 * next.count)
    for (column, commit) in next.enumerated() { mapping[2 * column] = merged.firstIndex(of: commit) ?? column }
    // Each row moves every column at least one step, so this ends within 2 × columns rows.
    for _ in 0..<(2 * next.count) {
      guard mapping.indices.contains(where: { mapping[$0] >= 0 && mapping[$0] != $0 / 2 }) else { break }
      let (line, moved) = Self.collapsingRow(mapping)
      rest.append(String(line.dropLast()))  // the last position is never drawn on
      mapping = moved
    }
    columns = merged
    stillMoving = Set(mapping.indices.filter { mapping[$0] >= 0 && $0 == 2 * mapping[$0] + 1 }.map { mapping[$0] })
    let width = ([row] + rest).map(\.count).max() ?? 0
    let filler = columns.map { _ in "|" }.joined(separator: " ").padding(toLength: width, withPad: " ", startingAt: 0)
    return (row, rest, filler)
  }

  /// One row of columns moving left towards their targets (`mapping[position]` is the target
  /// column of what is drawn at screen position `position`, -1 for nothing): git's
  /// `graph_output_collapsing_line`, with its rules for joining, crossing and long moves.
  static func collapsingRow(_ old: [Int]) -> (String, [Int]) {
    var mapping = Array(repeating: -1, count: old.count)
    var horizontalEdge = -1
    var horizontalTarget = -1
    for position in old.indices where old[position] >= 0 {
      let target = old[position]
      if target * 2 == position {
        mapping[position] = target
      } else if mapping[position - 1] < 0 {
        mapping[position - 1] = target
        if horizontalEdge == -1 {
          (horizontalEdge, horizontalTarget) = (position, target)
          for j in stride(from: target * 2 + 3, to: position - 2, by: 2) { mapping[j] = target }
        }
      } else if mapping[position - 1] != target, position >= 2 {
        // Another column is to the left: cross over it.
        mapping[position - 2] = target
        if horizontalEdge == -1 {
          (horizontalEdge, horizontalTarget) = (position - 1, target)
          for j in stride(from: target * 2 + 3, to: position - 2, by: 2) { mapping[j] = target }
        }
      }
      // Otherwise the column to the left is this one's target: the two lines join.
    }
    var line = ""
    var usedHorizontal = false
    for position in mapping.indices {
      let target = mapping[position]
      if target < 0 {
        line.append(" ")
      } else if target * 2 == position {
        line.append("|")
      } else if target == horizontalTarget && position != horizontalEdge - 1 {
        if position != target * 2 + 3 { mapping[position] = -1 }
        usedHorizontal = true
        line.append("_")
      } else {
        if usedHorizontal && position < horizontalEdge { mapping[position] = -1 }
        line.append("/")
      }
    }
    return (line, mapping)
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
    // Plain column rows after the joins settle every line (git's padding state).
    if lines.count - 1 > rest.count { stillMoving = [] }
    return out
  }

  private static func trimmed(_ line: String) -> String {
    var line = line
    while line.last == " " { line.removeLast() }
    return line
  }
}
