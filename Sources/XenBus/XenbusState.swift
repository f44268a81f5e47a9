import XenStore

/// The state one end of a split device publishes in its `state` node
/// (io/xenbus.h: enum xenbus_state). Each end writes only its own node and watches the
/// other's; the pair of states drives the handshake.
public enum XenbusState: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// io/xenbus.h: XenbusStateUnknown. Also what a missing `state` node means.
    case unknown = 0
    /// io/xenbus.h: XenbusStateInitialising. The toolstack's starting value for both ends.
    case initialising = 1
    /// io/xenbus.h: XenbusStateInitWait. A backend has written its features and waits for
    /// the frontend's keys.
    case initWait = 2
    /// io/xenbus.h: XenbusStateInitialised. A frontend has written its keys (ring refs,
    /// event channels) and waits for the backend to connect.
    case initialised = 3
    /// io/xenbus.h: XenbusStateConnected.
    case connected = 4
    /// io/xenbus.h: XenbusStateClosing. Being torn down, after an error or an unplug.
    case closing = 5
    /// io/xenbus.h: XenbusStateClosed.
    case closed = 6
    /// io/xenbus.h: XenbusStateReconfiguring (used by pciback only).
    case reconfiguring = 7
    /// io/xenbus.h: XenbusStateReconfigured (used by pciback only).
    case reconfigured = 8

    /// The name io/xenbus.h gives the value, without its `XenbusState` prefix.
    public var description: String {
        switch self {
        case .unknown: return "Unknown"
        case .initialising: return "Initialising"
        case .initWait: return "InitWait"
        case .initialised: return "Initialised"
        case .connected: return "Connected"
        case .closing: return "Closing"
        case .closed: return "Closed"
        case .reconfiguring: return "Reconfiguring"
        case .reconfigured: return "Reconfigured"
        }
    }

    /// The value as it is written to xenstore: the decimal number, as Linux's
    /// `xenbus_switch_state` prints it with "%d".
    public var nodeValue: String { String(rawValue) }

    /// Parses the value of the `state` node at `path`: one to three decimal digits naming
    /// a value of io/xenbus.h. Anything else ("banana", "99", "", "-1", " 4") is refused
    /// with an error naming the path and the value. Linux's `xenbus_read_driver_state`
    /// would read such values as Unknown or accept trailing junk; refusing is stricter.
    public init(parsing value: [UInt8], at path: String) throws(XenbusError) {
        // Three digits is plenty for 0...8 and keeps the conversion overflow-free.
        guard value.count <= 3,
              let number = XenStoreNumber.decimal(value[...], max: UInt64(XenbusState.reconfigured.rawValue)),
              let state = XenbusState(rawValue: UInt8(number))
        else {
            throw .invalidState(path: path, value: XenbusError.printable(value))
        }
        self = state
    }
}
