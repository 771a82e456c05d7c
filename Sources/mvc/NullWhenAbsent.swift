/// An optional field of a `--json` document that is written as `null` when absent, never left
/// out: every document of a schema has the same keys (docs/JSON.md), so a client reads
/// `doc["rank"]` without checking whether the key exists. (Synthesized `Encodable` calls
/// `encodeIfPresent` for optionals, which drops the key.)
@propertyWrapper
struct NullWhenAbsent<Value: Encodable>: Encodable {
  var wrappedValue: Value?

  init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

  func encode(to encoder: Encoder) throws {
    var container = encoder.singleValueContainer()
    if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
  }
}
