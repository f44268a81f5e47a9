/// Why a scripted peer could not go on; a check that meets one fails with it as evidence.
public enum PeerError: Error, Sendable, CustomStringConvertible {
    /// The target's state node did not reach any of `wanted` in time; what it read last.
    case stateNotReached(path: String, wanted: String, last: String, seconds: Int)
    /// No response came for these request ids in time.
    case noResponse(ids: [UInt64], seconds: Int, backendState: String)
    /// A response broke the ring or blkif rules (decode error, unknown id, overrun).
    case badResponse(String)
    /// The peer's own platform or xenstore call failed.
    case platform(String)
    /// The frontend node lacks what the toolstack writes (`backend`, `backend-id`).
    case badFrontendNode(String)
    /// The device is not connected, or the request does not fit the peer's pages.
    case unusable(String)
    /// What the clause needs is known broken since an earlier clause (a backend that stopped
    /// answering tx for good): the clause fails at once, naming that one.
    case knockOn(String)

    public var description: String {
        switch self {
        case let .stateNotReached(path, wanted, last, seconds): return "\(path) did not reach \(wanted) within \(seconds) s (reads \(last))"
        case let .noResponse(ids, seconds, state): return "no response to id \(ids.map(String.init).joined(separator: ",")) within \(seconds) s (backend state \(state))"
        case let .badResponse(why): return "bad response: \(why)"
        case let .platform(why): return "peer platform: \(why)"
        case let .badFrontendNode(why): return "frontend node: \(why)"
        case let .unusable(why): return why
        case let .knockOn(why): return "knock-on: \(why)"
        }
    }
}
