/// Flags of a transmit request (`io/netif.h: NETTXF_*`).
public struct NetifTxFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NETTXF_csum_blank`: the protocol checksum is left for the backend to fill.
    public static let checksumBlank = NetifTxFlags(rawValue: 1 << 0)
    /// `NETTXF_data_validated`: the checksum has been validated.
    public static let dataValidated = NetifTxFlags(rawValue: 1 << 1)
    /// `NETTXF_more_data`: the packet continues in the next request.
    public static let moreData = NetifTxFlags(rawValue: 1 << 2)
    /// `NETTXF_extra_info`: an extra-info slot follows.
    public static let extraInfo = NetifTxFlags(rawValue: 1 << 3)
    /// Every bit `io/netif.h` defines.
    public static let known: NetifTxFlags = [.checksumBlank, .dataValidated, .moreData, .extraInfo]
}

/// Flags of a receive response (`io/netif.h: NETRXF_*`).
public struct NetifRxFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NETRXF_data_validated`: the checksum has been validated.
    public static let dataValidated = NetifRxFlags(rawValue: 1 << 0)
    /// `NETRXF_csum_blank`: the protocol checksum is blank (offloaded).
    public static let checksumBlank = NetifRxFlags(rawValue: 1 << 1)
    /// `NETRXF_more_data`: the packet continues in the next response.
    public static let moreData = NetifRxFlags(rawValue: 1 << 2)
    /// `NETRXF_extra_info`: an extra-info slot follows.
    public static let extraInfo = NetifRxFlags(rawValue: 1 << 3)
    /// `NETRXF_gso_prefix`: deprecated GSO prefix slot.
    public static let gsoPrefix = NetifRxFlags(rawValue: 1 << 4)
    /// Every bit `io/netif.h` defines.
    public static let known: NetifRxFlags = [.dataValidated, .checksumBlank, .moreData, .extraInfo, .gsoPrefix]
}

/// Flags of an extra-info slot (`io/netif.h: XEN_NETIF_EXTRA_FLAG_*`).
public struct NetifExtraFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
    public static let more = NetifExtraFlags(rawValue: 1 << 0)
    /// Every bit `io/netif.h` defines.
    public static let known: NetifExtraFlags = [.more]
}

/// The protocol of a GSO packet (`io/netif.h: XEN_NETIF_GSO_TYPE_*`).
public enum NetifGSOType: UInt8, Sendable, Hashable, CaseIterable {
    /// `XEN_NETIF_GSO_TYPE_NONE`: never valid inside a GSO extra.
    case none = 0
    /// `XEN_NETIF_GSO_TYPE_TCPV4`.
    case tcpv4 = 1
    /// `XEN_NETIF_GSO_TYPE_TCPV6`.
    case tcpv6 = 2
}

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

/// Limits from `io/netif.h`.
public enum NetifLimits {
    /// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet every backend must accept.
    public static let minimumSlotsPerPacket = 18
    /// `XEN_NETIF_MAX_TX_SIZE`: largest packet a transmit request can announce.
    public static let maxTransmitSize = 0xFFFF
}
