import SharedMemory

/// An extra-info slot that follows a packet's first fragment on the tx or rx ring
/// (`io/netif.h: struct netif_extra_info`, 8 bytes in either slot).
public struct NetifExtraInfo: Sendable, Hashable {
    /// What the slot carries (`type` and the union `u`).
    public enum Kind: Sendable, Hashable {
        /// `XEN_NETIF_EXTRA_TYPE_GSO`: segment the packet into `size`-byte payloads.
        case gso(size: UInt16, type: NetifGSOType, features: UInt16)
        /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: add an address to the multicast filter.
        case multicastAdd(NetifMACAddress)
        /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: remove an address from the multicast filter.
        case multicastDelete(NetifMACAddress)
        /// `XEN_NETIF_EXTRA_TYPE_HASH`: the packet's hash, its type and algorithm.
        case hash(type: NetifHashType, algorithm: NetifHashAlgorithm, value: UInt32)
    }

    /// `type` and `u`.
    public var kind: Kind
    /// `flags`.
    public var flags: NetifExtraFlags

    @usableFromInline static let typeOffset = 0
    @usableFromInline static let flagsOffset = 1
    @usableFromInline static let gsoSizeOffset = 2
    @usableFromInline static let gsoTypeOffset = 4
    @usableFromInline static let gsoPadOffset = 5
    @usableFromInline static let gsoFeaturesOffset = 6
    @usableFromInline static let multicastAddressOffset = 2
    @usableFromInline static let hashTypeOffset = 2
    @usableFromInline static let hashAlgorithmOffset = 3
    @usableFromInline static let hashValueOffset = 4

    /// `XEN_NETIF_EXTRA_TYPE_*` codes.
    @usableFromInline enum TypeCode {
        @usableFromInline static let gso: UInt8 = 1
        @usableFromInline static let multicastAdd: UInt8 = 2
        @usableFromInline static let multicastDelete: UInt8 = 3
        @usableFromInline static let hash: UInt8 = 4
    }

    @inlinable
    public init(_ kind: Kind, flags: NetifExtraFlags = []) {
        self.kind = kind
        self.flags = flags
    }

    /// Reads and validates the extra-info slot at `offset`: the type must be GSO,
    /// multicast add/delete or hash, the flags defined, a GSO type TCPv4 or TCPv6 with a
    /// non-zero size, a hash type and algorithm known. Each field is read once.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifExtraInfo {
        try NetifLayout.checkSlot(view, offset, NetifLayout.extraInfoSize)
        let type = view.load(UInt8.self, at: offset + typeOffset)
        let rawFlags = view.load(UInt8.self, at: offset + flagsOffset)
        guard rawFlags & ~NetifExtraFlags.known.rawValue == 0 else {
            throw .unknownFlags(field: "netif_extra_info.flags", value: UInt16(rawFlags),
                                known: UInt16(NetifExtraFlags.known.rawValue))
        }
        let kind: Kind
        switch type {
        case TypeCode.gso:
            let size = view.load(UInt16.self, at: offset + gsoSizeOffset)
            let rawType = view.load(UInt8.self, at: offset + gsoTypeOffset)
            let features = view.load(UInt16.self, at: offset + gsoFeaturesOffset)
            guard let gsoType = NetifGSOType(rawValue: rawType), gsoType != .none else {
                throw .unknownGSOType(rawType)
            }
            guard size > 0 else { throw .gsoSize(value: size, limit: 1...UInt16.max) }
            kind = .gso(size: size, type: gsoType, features: features)
        case TypeCode.multicastAdd, TypeCode.multicastDelete:
            // Two aligned loads (2 + 4 bytes) cover the 6-byte address, each byte once.
            let high = UInt64(view.load(UInt16.self, at: offset + multicastAddressOffset))
            let low = UInt64(view.load(UInt32.self, at: offset + multicastAddressOffset + 2))
            let wire = (high.byteSwapped >> 48) << 32 | UInt64(UInt32(truncatingIfNeeded: low).byteSwapped)
            let address = NetifMACAddress(rawValue: wire)
            kind = type == TypeCode.multicastAdd ? .multicastAdd(address) : .multicastDelete(address)
        case TypeCode.hash:
            let rawType = view.load(UInt8.self, at: offset + hashTypeOffset)
            let rawAlgorithm = view.load(UInt8.self, at: offset + hashAlgorithmOffset)
            let value = view.load(UInt32.self, at: offset + hashValueOffset)
            guard let hashType = NetifHashType(rawValue: rawType) else { throw .unknownHashType(rawType) }
            guard let algorithm = NetifHashAlgorithm(rawValue: rawAlgorithm) else {
                throw .unknownHashAlgorithm(rawAlgorithm)
            }
            kind = .hash(type: hashType, algorithm: algorithm, value: value)
        default:
            throw .unknownExtraType(type)
        }
        return NetifExtraInfo(kind, flags: NetifExtraFlags(rawValue: rawFlags))
    }

    /// Writes the slot's 8 bytes at `offset` (which must lie inside `view`), unused
    /// union bytes zeroed. On the tx ring the slot's last 4 bytes are left alone.
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.fill(0, at: offset, length: NetifLayout.extraInfoSize)
        view.store(flags.rawValue, at: offset + Self.flagsOffset)
        switch kind {
        case let .gso(size, type, features):
            view.store(TypeCode.gso, at: offset + Self.typeOffset)
            view.store(size, at: offset + Self.gsoSizeOffset)
            view.store(type.rawValue, at: offset + Self.gsoTypeOffset)
            view.store(features, at: offset + Self.gsoFeaturesOffset)
        case let .multicastAdd(address), let .multicastDelete(address):
            let code = if case .multicastAdd = kind { TypeCode.multicastAdd } else { TypeCode.multicastDelete }
            view.store(code, at: offset + Self.typeOffset)
            for i in 0..<6 { view.store(address[i], at: offset + Self.multicastAddressOffset + i) }
        case let .hash(type, algorithm, value):
            view.store(TypeCode.hash, at: offset + Self.typeOffset)
            view.store(type.rawValue, at: offset + Self.hashTypeOffset)
            view.store(algorithm.rawValue, at: offset + Self.hashAlgorithmOffset)
            view.store(value, at: offset + Self.hashValueOffset)
        }
    }
}
