/// How a driver ended.
public enum XenbusStopReason: Sendable, Equatable, CustomStringConvertible {
    /// `close()` walked the device to Closed.
    case closed
    /// The toolstack removed the device's own node; nothing more was written.
    case nodeRemoved
    /// The xenstore connection ended (the client was closed, or xenstored went away): the
    /// disconnect hook ran, nothing could be written, the other end sees the last state.
    case connectionLost

    public var description: String {
        switch self {
        case .closed: return "closed"
        case .nodeRemoved: return "node removed"
        case .connectionLost: return "xenstore connection lost"
        }
    }
}
