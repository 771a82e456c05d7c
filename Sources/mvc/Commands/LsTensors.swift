import ArgumentParser
import EditVCS
import Foundation

extension MVC {
  struct LsTensors: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "ls-tensors",
      abstract: "List the tensors of a revision: name, dtype, shape, content hash (plumbing).",
      discussion: """
        Like 'git ls-tree': reads only the commit's trees, never a tensor's bytes, so it costs \
        the same for any model size. Two revisions' tensors differ exactly where their hashes \
        differ, which is how the Python client finds what to copy into a loaded model.

          mvc ls-tensors
          mvc ls-tensors HEAD~3 --json        # schema mvc.ls-tensors/1
        """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The revision (default HEAD).") var revision = "HEAD"
    @Flag(help: "Write one JSON document (schema mvc.ls-tensors/1).") var json = false

    func run() throws {
      let repository = try Session.open(global)
      let commit = try repository.resolve(revision)
      let tensors = try repository.listTensors(at: commit)
      if json {
        var document = TensorListJSON(schema: "mvc.ls-tensors/1", commit: commit.hex, path: nil, tensors: tensors)
        document.workingModel = repository.modelRelativePath
        output(try Format.json(document))
        return
      }
      for t in tensors {
        output("\(t.hash) \(t.dtype.rawValue) \(Format.shape(t.shape)) \(t.kind) \(t.name)")
      }
    }
  }
}

/// `mvc.ls-tensors/1` and `mvc.cat-tensors/1`.
struct TensorListJSON: Encodable {
  struct Tensor: Encodable {
    var name: String
    var dtype: String
    var shape: [Int]
    var hash: String
    var kind: String
    var file: String
  }
  var schema: String
  var commit: String
  var path: String?
  /// ls-tensors only: the working model, relative to the folder holding `.mvc`.
  var workingModel: String?
  var tensors: [Tensor]

  init(schema: String, commit: String, path: String?, tensors: [TensorListingEntry]) {
    self.schema = schema
    self.commit = commit
    self.path = path
    self.tensors = tensors.map {
      Tensor(name: $0.name, dtype: $0.dtype.rawValue, shape: $0.shape, hash: $0.hash, kind: $0.kind, file: $0.file)
    }
  }

  enum CodingKeys: String, CodingKey {
    case schema, commit, path, tensors
    case workingModel = "working_model"
  }

  /// Each schema has one fixed key set (docs/JSON.md): `working_model` in ls-tensors, `path` in
  /// cat-tensors, both always written.
  func encode(to encoder: Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(schema, forKey: .schema)
    try container.encode(commit, forKey: .commit)
    if schema == "mvc.ls-tensors/1" {
      try container.encode(workingModel, forKey: .workingModel)
    } else {
      try container.encode(path, forKey: .path)
    }
    try container.encode(tensors, forKey: .tensors)
  }
}
