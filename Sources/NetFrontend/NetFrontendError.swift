import Netif
import Tap
import XenBus
import XenPlatform
import XenRing

/// Errors of the net frontend: a backend that breaks `io/netif.h` (each case names the
/// field and value it lied with; the frontend disconnects), a frame that cannot be sent
/// or delivered (dropped and counted), and the platform or TAP failing.
public enum NetFrontendError: Error, Sendable, Equatable, CustomStringConvertible {
    // MARK: Negotiation
    /// The backend does not offer `feature-rx-copy`; page flipping is not supported.
    case rxCopyNotOffered
    /// A backend or frontend node is missing or malformed (`io/netif.h` key and value).
    case node(NetifError)
    /// More queue pairs were asked for than the backend offers in `multi-queue-max-queues`
    /// (1 when it offers none): the frontend does not connect to it.
    case queuesNotOffered(requested: Int, offered: Int)
    /// A queue pair count outside 1...``NetFrontend/maxQueues``.
    case queueCount(Int)

    // MARK: A backend that lies (the frontend disconnects)
    /// The backend's response producer claims responses to requests never made.
    case ringOverrun(ring: NetFrontendRing, RingError)
    /// A response slot that does not decode (unknown flags or status, fragment past its page).
    case malformedResponse(ring: NetFrontendRing, NetifError)
    /// A tx response whose id names no request in flight (out of range, or already answered).
    case txResponseID(UInt16)
    /// An rx response in ring slot `expected` carrying another id: each response must answer
    /// the request posted in its own slot (`io/netif.h`, "Guest receive").
    case rxResponseID(found: UInt16, expected: UInt16)
    /// An rx packet chain still going after `slots` data slots (NETRXF_more_data never ends).
    case rxChainTooLong(slots: Int)
    /// NETRXF_extra_info on a response that is not a packet's first.
    case rxExtraInfoNotFirst
    /// NETRXF_gso_prefix, which this frontend never asked for.
    case rxGSOPrefix
    /// An rx extra-info slot of a type the frontend never asked for (multicast control).
    case rxUnexpectedExtra(type: UInt8)

    // MARK: Frames dropped (counted, the connection lives on)
    /// A frame longer than `io/netif.h` allows (XEN_NETIF_MAX_TX_SIZE) or than one page
    /// when the backend takes no `feature-sg`.
    case frameTooLarge(length: Int, limit: Int)
    /// A frame shorter than an Ethernet header.
    case frameTooShort(length: Int)
    /// A GSO frame of a kind the backend does not take (its feature-gso-* is off).
    case gsoNotOffered(VirtioNetHeader.GSOType)
    /// A frame whose checksum could not be located or finished (the Netif reason).
    case checksum(NetifError)
    /// The backend answered an rx packet with an error status (NETIF_RSP_*).
    case rxErrorStatus(Int16)

    // MARK: Platform
    /// A grant, event-channel or system call failed.
    case platform(PlatformError)
    /// The TAP device failed.
    case tap(TapError)
    /// A TAP device is attached already (its name): the frontend has one guest side.
    case tapAlreadyAttached(String)
    /// The xenbus driver failed.
    case xenbus(XenbusError)
    /// The frontend is closed.
    case closed

    public var description: String {
        switch self {
        case .rxCopyNotOffered: return "the backend does not offer feature-rx-copy"
        case let .node(error): return "xenstore: \(error)"
        case let .queuesNotOffered(requested, offered):
            return "\(requested) queue pairs asked for, but the backend offers at most \(offered) (multi-queue-max-queues)"
        case let .queueCount(count): return "queue pair count \(count) is outside 1...\(NetFrontend.maxQueues)"
        case let .ringOverrun(ring, error): return "\(ring) ring: \(error)"
        case let .malformedResponse(ring, error): return "\(ring) ring response: \(error)"
        case let .txResponseID(id): return "tx response id \(id) answers no request in flight"
        case let .rxResponseID(found, expected):
            return "rx response id \(found) in the slot of request \(expected)"
        case let .rxChainTooLong(slots): return "rx packet chain past \(slots) data slots"
        case .rxExtraInfoNotFirst: return "rx NETRXF_extra_info on a response that is not a packet's first"
        case .rxGSOPrefix: return "rx NETRXF_gso_prefix, never requested"
        case let .rxUnexpectedExtra(type): return "rx extra-info type \(type), never requested"
        case let .frameTooLarge(length, limit): return "frame of \(length) bytes, more than \(limit)"
        case let .frameTooShort(length): return "frame of \(length) bytes, shorter than an Ethernet header"
        case let .gsoNotOffered(type): return "GSO type \(type.rawValue) is not offered by the backend"
        case let .checksum(error): return "checksum: \(error)"
        case let .rxErrorStatus(status): return "backend answered rx status \(status)"
        case let .platform(error): return "platform: \(error)"
        case let .tap(error): return "TAP: \(error)"
        case let .tapAlreadyAttached(name): return "TAP device \(name) is attached already"
        case let .xenbus(error): return "xenbus: \(error)"
        case .closed: return "the net frontend is closed"
        }
    }
}

/// The two rings of a netif queue, as errors name them.
public enum NetFrontendRing: String, Sendable, Hashable, CustomStringConvertible {
    case tx, rx
    public var description: String { rawValue }
}
