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

