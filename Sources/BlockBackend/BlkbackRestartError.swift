import XenRing

/// Why a queue's persistent state (Protocols/blkback-restart.md) cannot be used: the
/// device is then not taken over.
public enum BlkbackRestartError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call on the state file failed (`ENOENT` from open: there is none).
    case file(path: String, call: String, errno: Int32)
    /// The file is shorter than its header and records need.
    case truncated(path: String, size: Int, needed: Int)
    /// The file does not start with the magic (never finished, or not ours).
    case badMagic
    /// A layout version, header size, record count or record size other than this
    /// backend writes for the ring.
    case layout(field: String, found: UInt32, expected: UInt32)
    /// The file describes another ring (another frontend, ABI, order, refs or port): the
    /// frontend reconnected since it was written.
    case otherRing(field: String, found: String, expected: String)
    /// The records and indices contradict each other, or the shared ring's indices
    /// contradict them: the state cannot tell which requests are owed.
    case inconsistent(String)

    public var description: String {
        switch self {
        case let .file(path, call, errno):
            return "restart state \(path): \(call) failed: errno \(errno)"
        case let .truncated(path, size, needed):
            return "restart state \(path) holds \(size) bytes, needs \(needed)"
        case .badMagic:
            return "restart state has no valid header (magic)"
        case let .layout(field, found, expected):
            return "restart state \(field) is \(found), this backend writes \(expected)"
        case let .otherRing(field, found, expected):
            return "restart state is for another ring: \(field) is \(found), the frontend's is \(expected)"
        case let .inconsistent(what):
            return "restart state is inconsistent: \(what)"
        }
    }
}
