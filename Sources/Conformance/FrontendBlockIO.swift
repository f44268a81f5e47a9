/// How the suite makes a block frontend under test send requests: through whatever the
/// frontend offers its own users (our blkfront's NBD export, a guest's /dev/xvda). The
/// suite plays the backend, so it cannot push I/O into the frontend itself; the caller of
/// the run supplies this. Calls block on the frontend's user side only; the peer serves
/// the ring meanwhile.
public protocol FrontendBlockIO: Sendable {
    /// Runs `batch` with every operation in flight at once and returns, in order, what the
    /// frontend's user saw for each.
    func run(_ batch: [FrontendBlockIOOperation]) async throws -> [FrontendBlockIOResult]
    /// How much longer than the peer's patience a batch may take on this user side alone
    /// (an agent behind a guest's console moves a megabyte in tens of seconds).
    var transferAllowance: Duration { get }
}

extension FrontendBlockIO {
    public var transferAllowance: Duration { .zero }
}

/// One operation a frontend's user asks for, in bytes of the disk.
public enum FrontendBlockIOOperation: Sendable, Equatable {
    case read(offset: UInt64, length: Int)
    case write(offset: UInt64, bytes: [UInt8])
    case flush
}

/// What a frontend's user saw of one operation.
public struct FrontendBlockIOResult: Sendable, Equatable {
    /// nil when the operation succeeded, else the error the user was given.
    public var error: String?
    /// A successful read's bytes.
    public var data: [UInt8]

    public init(error: String?, data: [UInt8] = []) {
        self.error = error
        self.data = data
    }
}
