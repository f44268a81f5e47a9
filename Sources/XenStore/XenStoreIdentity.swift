/// Who a connection is, as the party that accepted it says (never the peer).
///
/// C xenstored treats its Unix-socket clients as the privileged toolstack, whose relative
/// paths are under dom0's home (`/local/domain/0`, as hotplug scripts that get a relative
/// XENBUS_PATH rely on), and ring connections as the domain that owns the ring. Whoever
/// hands a connection to ``XenStoreServer`` picks one of these.
public struct XenStoreIdentity: Sendable, Equatable, CustomStringConvertible {
    /// The domain the connection acts as.
    public var domid: UInt16
    /// Whether permission checks and quotas are bypassed (dom0 and its tools).
    public var privileged: Bool
    /// The prefix of relative paths, `/local/domain/<domid>`; nil: relative paths are invalid.
    public var home: String?
    /// A toolstack socket rather than a domain's own connection: never closed when a
    /// domain is released, even dom0.
    public var isTool: Bool

    /// A connection acting as `domid` with the given privilege and home.
    public init(domid: UInt16, privileged: Bool, home: String?, isTool: Bool = false) {
        self.domid = domid
        self.privileged = privileged
        self.home = home
        self.isTool = isTool
    }

    /// A dom0 toolstack client on the Unix socket, as C xenstored treats socket clients.
    public static let tool = XenStoreIdentity(domid: 0, privileged: true, home: XenStorePath.domainPath(0), isTool: true)

    /// A domain's own connection (its xenstore ring, or a socket the local hypervisor
    /// handed to it): privileged only for dom0, relative paths under its home.
    public static func domain(_ domid: UInt16) -> XenStoreIdentity {
        XenStoreIdentity(domid: domid, privileged: domid == 0, home: XenStorePath.domainPath(domid))
    }

    public var description: String { isTool ? "tool" : "dom\(domid)" }
}
