/// The message types of the xenstore wire protocol (io/xs_wire.h: enum xsd_sockmsg_type).
///
/// A peer may send any 32-bit value; decoding keeps the raw value and only a value listed
/// here becomes a ``XSDSockmsgType``.
public enum XSDSockmsgType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// io/xs_wire.h: XS_CONTROL (alias XS_DEBUG). Privileged; not implemented by our server.
    case control = 0
    /// io/xs_wire.h: XS_DIRECTORY.
    case directory = 1
    /// io/xs_wire.h: XS_READ.
    case read = 2
    /// io/xs_wire.h: XS_GET_PERMS.
    case getPerms = 3
    /// io/xs_wire.h: XS_WATCH.
    case watch = 4
    /// io/xs_wire.h: XS_UNWATCH.
    case unwatch = 5
    /// io/xs_wire.h: XS_TRANSACTION_START.
    case transactionStart = 6
    /// io/xs_wire.h: XS_TRANSACTION_END.
    case transactionEnd = 7
    /// io/xs_wire.h: XS_INTRODUCE.
    case introduce = 8
    /// io/xs_wire.h: XS_RELEASE.
    case release = 9
    /// io/xs_wire.h: XS_GET_DOMAIN_PATH.
    case getDomainPath = 10
    /// io/xs_wire.h: XS_WRITE.
    case write = 11
    /// io/xs_wire.h: XS_MKDIR.
    case mkdir = 12
    /// io/xs_wire.h: XS_RM.
    case rm = 13
    /// io/xs_wire.h: XS_SET_PERMS.
    case setPerms = 14
    /// io/xs_wire.h: XS_WATCH_EVENT (server to client only).
    case watchEvent = 15
    /// io/xs_wire.h: XS_ERROR (server to client only).
    case error = 16
    /// io/xs_wire.h: XS_IS_DOMAIN_INTRODUCED.
    case isDomainIntroduced = 17
    /// io/xs_wire.h: XS_RESUME.
    case resume = 18
    /// io/xs_wire.h: XS_SET_TARGET.
    case setTarget = 19
    /// io/xs_wire.h: XS_RESET_WATCHES (20 was XS_RESTRICT, removed).
    case resetWatches = 21
    /// io/xs_wire.h: XS_DIRECTORY_PART.
    case directoryPart = 22

    /// io/xs_wire.h: XS_TYPE_COUNT, one past the last valid type.
    public static let typeCount: UInt32 = 23
    /// io/xs_wire.h: XS_INVALID, guaranteed never to be a valid type.
    public static let invalid: UInt32 = 0xffff

    /// The name C xenstored uses in its logs ("READ", "WATCH_EVENT", ...).
    public var description: String {
        switch self {
        case .control: return "CONTROL"
        case .directory: return "DIRECTORY"
        case .read: return "READ"
        case .getPerms: return "GET_PERMS"
        case .watch: return "WATCH"
        case .unwatch: return "UNWATCH"
        case .transactionStart: return "TRANSACTION_START"
        case .transactionEnd: return "TRANSACTION_END"
        case .introduce: return "INTRODUCE"
        case .release: return "RELEASE"
        case .getDomainPath: return "GET_DOMAIN_PATH"
        case .write: return "WRITE"
        case .mkdir: return "MKDIR"
        case .rm: return "RM"
        case .setPerms: return "SET_PERMS"
        case .watchEvent: return "WATCH_EVENT"
        case .error: return "ERROR"
        case .isDomainIntroduced: return "IS_DOMAIN_INTRODUCED"
        case .resume: return "RESUME"
        case .setTarget: return "SET_TARGET"
        case .resetWatches: return "RESET_WATCHES"
        case .directoryPart: return "DIRECTORY_PART"
        }
    }
}
