/// Errors of the NBD module: what a peer sent that cannot be decoded, what a system call
/// or an export reported, and what configuration was refused.
public enum NBDError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A message was shorter than its layout needs.
    case truncated(message: String, length: Int, needed: Int)
    /// A magic number did not match the protocol's.
    case badMagic(field: String, value: UInt64, expected: UInt64)
    /// A length, count or offset field lies outside what the protocol or this server allows.
    case fieldOutOfRange(field: String, value: UInt64, limit: UInt64)
    /// The client asked for an export this server does not have.
    case unknownExport(name: String)
    /// The client set flags that the server does not know or did not offer.
    case unknownClientFlags(value: UInt32, known: UInt32)
    /// A string field was not UTF-8 or contained a NUL byte.
    case invalidString(field: String)
    /// The peer closed the connection where more bytes were due.
    case connectionClosed
    /// A system call failed with `errno`.
    case system(call: String, errno: Int32)
    /// An export's backing I/O failed with `errno` (mapped onto an NBD error for the client).
    case exportIO(call: String, errno: Int32)
    /// An address string was not `unix:PATH` or `tcp:[HOST:]PORT`.
    case invalidAddress(String)
    /// Block-size constraints broke a rule of proto.md "Size constraints".
    case invalidBlockSizes(minimum: UInt32, preferred: UInt32, maximum: UInt32, reason: String)
    /// The server was started twice, or used after stop.
    case serverState(String)

    public var description: String {
        switch self {
        case let .truncated(message, length, needed):
            return "\(message): \(length) bytes, need \(needed)"
        case let .badMagic(field, value, expected):
            return "\(field) 0x\(String(value, radix: 16)) is not 0x\(String(expected, radix: 16))"
        case let .fieldOutOfRange(field, value, limit):
            return "\(field) \(value) exceeds limit \(limit)"
        case let .unknownExport(name):
            return "no export named \"\(name)\""
        case let .unknownClientFlags(value, known):
            return "client flags 0x\(String(value, radix: 16)) outside known 0x\(String(known, radix: 16))"
        case let .invalidString(field):
            return "\(field) is not a NUL-free UTF-8 string"
        case .connectionClosed:
            return "the peer closed the connection"
        case let .system(call, errno):
            return "\(call) failed: errno \(errno)"
        case let .exportIO(call, errno):
            return "export \(call) failed: errno \(errno)"
        case let .invalidAddress(text):
            return "address \"\(text)\" is not unix:PATH or tcp:[HOST:]PORT"
        case let .invalidBlockSizes(minimum, preferred, maximum, reason):
            return "block sizes \(minimum)/\(preferred)/\(maximum): \(reason)"
        case let .serverState(text):
            return "server: \(text)"
        }
    }
}
