/// A response status (`io/netif.h: NETIF_RSP_*`).
public enum NetifStatus: Int16, Sendable, Hashable, CaseIterable {
    /// `NETIF_RSP_DROPPED`: the packet was dropped.
    case dropped = -2
    /// `NETIF_RSP_ERROR`: the packet could not be handled.
    case error = -1
    /// `NETIF_RSP_OKAY`.
    case okay = 0
    /// `NETIF_RSP_NULL`: no response proper; the slot of an extra-info request.
    case null = 1

    /// Validates a peer's status field.
    @inlinable
    public init(validating raw: Int16) throws(NetifError) {
        guard let status = NetifStatus(rawValue: raw) else { throw .unknownStatus(raw) }
        self = status
    }
}
