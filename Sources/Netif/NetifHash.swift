/// A set of hash types (`io/netif.h: XEN_NETIF_CTRL_HASH_TYPE_*`), as the control ring's
/// hash flags carry them.
public struct NetifHashTypes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `XEN_NETIF_CTRL_HASH_TYPE_IPV4`: over the IPv4 addresses.
    public static let ipv4 = NetifHashTypes(rawValue: 1 << 0)
    /// `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`: over IPv4 addresses and TCP ports.
    public static let ipv4TCP = NetifHashTypes(rawValue: 1 << 1)
    /// `XEN_NETIF_CTRL_HASH_TYPE_IPV6`: over the IPv6 addresses.
    public static let ipv6 = NetifHashTypes(rawValue: 1 << 2)
    /// `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`: over IPv6 addresses and TCP ports.
    public static let ipv6TCP = NetifHashTypes(rawValue: 1 << 3)
}

/// One hash type, as a hash extra-info slot names it: the bit number
/// (`io/netif.h: _XEN_NETIF_CTRL_HASH_TYPE_*`).
public enum NetifHashType: UInt8, Sendable, Hashable, CaseIterable {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_IPV4`.
    case ipv4 = 0
    /// `_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`.
    case ipv4TCP = 1
    /// `_XEN_NETIF_CTRL_HASH_TYPE_IPV6`.
    case ipv6 = 2
    /// `_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`.
    case ipv6TCP = 3

    /// The same type as a one-element set.
    @inlinable
    public var set: NetifHashTypes { NetifHashTypes(rawValue: 1 << UInt32(rawValue)) }
}

/// A hash algorithm (`io/netif.h: XEN_NETIF_CTRL_HASH_ALGORITHM_*`).
public enum NetifHashAlgorithm: UInt8, Sendable, Hashable, CaseIterable {
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`.
    case none = 0
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`.
    case toeplitz = 1
}
