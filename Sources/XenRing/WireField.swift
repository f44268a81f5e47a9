/// One row of a wire-format layout table: a C struct, one of its fields, offset and size
/// in bytes, as `offsetof`/`sizeof` give them. The field `sizeof` stands for the whole
/// struct. Blkif and Netif list theirs so tests can check them against Protocols/ and C.
public struct WireField: Sendable, Hashable {
    public let structName: String
    public let field: String
    public let offset: Int
    public let size: Int

    public init(_ structName: String, _ field: String, _ offset: Int, _ size: Int) {
        self.structName = structName
        self.field = field
        self.offset = offset
        self.size = size
    }
}
