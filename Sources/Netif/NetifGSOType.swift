/// The protocol of a GSO packet (`io/netif.h: XEN_NETIF_GSO_TYPE_*`).
public enum NetifGSOType: UInt8, Sendable, Hashable, CaseIterable {
    /// `XEN_NETIF_GSO_TYPE_NONE`: never valid inside a GSO extra.
    case none = 0
    /// `XEN_NETIF_GSO_TYPE_TCPV4`.
    case tcpv4 = 1
    /// `XEN_NETIF_GSO_TYPE_TCPV6`.
    case tcpv6 = 2
}
