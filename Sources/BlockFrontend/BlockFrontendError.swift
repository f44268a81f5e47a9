import Blkif
import XenPlatform

/// Errors of the block frontend. Backend answers name the operation and the sector range
/// (in 512-byte sectors) of the request that failed.
public enum BlockFrontendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The backend answered `io/blkif.h: BLKIF_RSP_ERROR` for this request.
    case ioError(operation: String, sector: UInt64, count: UInt64)
    /// The backend answered `io/blkif.h: BLKIF_RSP_EOPNOTSUPP` for this request.
    case notSupported(operation: String, sector: UInt64, count: UInt64)
    /// The backend did not advertise the feature node the operation needs.
    case featureNotOffered(operation: String, feature: String)
    /// The range lies outside the disk or is not aligned to its logical sector size.
    case invalidRange(operation: String, sector: UInt64, count: UInt64, diskSectors: UInt64, alignment: UInt64)
    /// The data length is not `count` x 512 bytes.
    case invalidLength(operation: String, bytes: Int, expected: Int)
    /// The backend published `info` with VDISK_READONLY (or VDISK_CDROM): no writes.
    case readOnly(operation: String, sector: UInt64, count: UInt64)
    /// The frontend was closed before the request completed.
    case closed
    /// A request was submitted before the backend first connected.
    case notConnected
    /// A backend node was missing or malformed; names the key, the value and the limit.
    case backendNode(String)
    /// The backend broke the ring protocol (index overrun, unknown id, bad status).
    case protocolViolation(String)
    /// A configuration value outside its limits.
    case configuration(name: String, value: Int, limit: ClosedRange<Int>)
    /// A grant, event-channel or system call failed.
    case platform(PlatformError)
    /// The I/O thread's wait on the connection's event channel failed (poll, the
    /// channel's descriptor, or reading its pending ports, as the error says); the thread
    /// stopped waiting on the channel and looks at the rings on a timer instead, until the
    /// next connection.
    case eventChannelFailed(PlatformError)

    public var description: String {
        switch self {
        case let .ioError(op, sector, count):
            return "\(op) of sectors \(sector)..<\(sector &+ count): backend answered BLKIF_RSP_ERROR"
        case let .notSupported(op, sector, count):
            return "\(op) of sectors \(sector)..<\(sector &+ count): backend answered BLKIF_RSP_EOPNOTSUPP"
        case let .featureNotOffered(op, feature):
            return "\(op): the backend does not advertise \(feature)"
        case let .invalidRange(op, sector, count, disk, alignment):
            return "\(op) of sectors \(sector)..<\(sector &+ count): outside a disk of \(disk) sectors or not a multiple of \(alignment)"
        case let .invalidLength(op, bytes, expected):
            return "\(op): \(bytes) bytes given, \(expected) expected"
        case let .readOnly(op, sector, count):
            return "\(op) of sectors \(sector)..<\(sector &+ count): the disk is read-only"
        case .closed:
            return "the block frontend was closed"
        case .notConnected:
            return "the block frontend has not connected to its backend yet"
        case let .backendNode(what):
            return "backend node: \(what)"
        case let .protocolViolation(what):
            return "backend broke the ring protocol: \(what)"
        case let .configuration(name, value, limit):
            return "configuration \(name) = \(value) outside \(limit)"
        case let .platform(error):
            return "platform: \(error)"
        case let .eventChannelFailed(error):
            return "waiting on the event channel failed: \(error)"
        }
    }
}
