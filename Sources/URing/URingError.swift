import SystemCalls

/// Errors of the URing module.
public enum URingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A system call or liburing function failed; names the call and the errno.
    case system(call: String, Errno)
    /// io_uring cannot be used on this machine (disabled by sysctl, blocked by seccomp,
    /// or a kernel without the operations the engine needs); says why.
    case unavailable(reason: String)
    /// An argument was outside what the call accepts; names it, its value and the limit.
    case invalidArgument(name: String, value: Int, limit: Int)
    /// `XENSPLIT_IO_ENGINE` named no engine; carries the value found.
    case unknownEngine(String)
    /// The ring or engine was used after `close()`.
    case closed

    public var description: String {
        switch self {
        case let .system(call, errno):
            return "\(call) failed: \(errno)"
        case let .unavailable(reason):
            return "io_uring is unavailable: \(reason)"
        case let .invalidArgument(name, value, limit):
            return "\(name) \(value) is outside the accepted range (limit \(limit))"
        case let .unknownEngine(value):
            return "\(BlockIOEngineKind.environmentVariable)=\(value) names no engine (use uring or threads)"
        case .closed:
            return "used after close"
        }
    }
}
