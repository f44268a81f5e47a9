import Blkif
import URing
import XenPlatform
import XenDevice
import XenRing

/// Errors of the BlockBackend module: what the backing store, the platform or a frontend
/// did that stops a device or a queue, and why.
public enum BlockBackendError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call on the backing store at `path` failed.
    case backingStore(path: String, call: String, Errno)
    /// The backing store at `path` is neither a regular file nor a block device.
    case unsupportedBackingStore(path: String, mode: UInt32)
    /// A configuration value is outside what the queue accepts.
    case configuration(name: String, value: Int, limit: ClosedRange<Int>)
    /// A grant, copy-buffer or event-channel call failed.
    case platform(PlatformError)
    /// The I/O engine refused a call.
    case engine(URingError)
    /// The frontend broke the ring protocol (for example a req_prod overrun); the device
    /// must be disconnected.
    case ring(RingError)
    /// A request slot could not be decoded at all (not a validation failure, which is
    /// answered instead); the device must be disconnected.
    case request(BlkifError)
    /// A backend worker refused to start, or to take or give back a queue.
    case worker(BackendWorkerError)
    /// A queue's persistent restart state cannot be used.
    case restartState(BlkbackRestartError)

    public var description: String {
        switch self {
        case let .backingStore(path, call, errno):
            return "backing store \(path): \(call) failed: \(errno)"
        case let .unsupportedBackingStore(path, mode):
            return "backing store \(path) is neither a regular file nor a block device (st_mode 0o\(String(mode, radix: 8)))"
        case let .configuration(name, value, limit):
            return "\(name) \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case let .platform(error):
            return "platform: \(error)"
        case let .engine(error):
            return "I/O engine: \(error)"
        case let .ring(error):
            return "ring protocol violated: \(error)"
        case let .request(error):
            return "undecodable request: \(error)"
        case let .worker(error):
            return "backend worker: \(error)"
        case let .restartState(error):
            return "\(error)"
        }
    }
}
