/// Errors of the Netif module: a peer's ring slot or xenstore value that breaks
/// `io/netif.h`. Each case names the field, the value found and the limit it broke.
public enum NetifError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A slot of `length` bytes at `offset` does not fit in a view of `size` bytes.
    case slotOutOfBounds(offset: Int, length: Int, size: Int)
    /// The flags field `field` has bits outside the `known` mask.
    case unknownFlags(field: String, value: UInt16, known: UInt16)
    /// A status that is not a NETIF_RSP_* code (tx) or a negative rx status below them.
    case unknownStatus(Int16)
    /// An extra-info `type` that is not XEN_NETIF_EXTRA_TYPE_GSO ... _HASH.
    case unknownExtraType(UInt8)
    /// A GSO extra whose `u.gso.type` is not XEN_NETIF_GSO_TYPE_TCPV4 or _TCPV6.
    case unknownGSOType(UInt8)
    /// A GSO extra whose `u.gso.size` (the segment size) is outside `limit`.
    case gsoSize(value: UInt16, limit: ClosedRange<UInt16>)
    /// A hash extra whose `u.hash.type` is not one of the _XEN_NETIF_CTRL_HASH_TYPE_* bits.
    case unknownHashType(UInt8)
    /// A hash extra whose `u.hash.algorithm` is not a XEN_NETIF_CTRL_HASH_ALGORITHM_*.
    case unknownHashAlgorithm(UInt8)
    /// A control-ring response whose status is not a XEN_NETIF_CTRL_STATUS_*.
    case unknownCtrlStatus(UInt32)
    /// A fragment at `offset` of `size` bytes runs past the end of its `limit`-byte page.
    case pageRange(offset: UInt16, size: UInt16, limit: Int)
    /// A xenstore node holds a value that does not parse as the type `io/netif.h` gives it.
    case featureValue(key: String, value: String, expected: String)
    /// A xenstore node holds a number outside the range allowed.
    case featureRange(key: String, value: UInt64, limit: ClosedRange<UInt64>)

    /// A xenstore node `io/netif.h` requires (a ring reference, an event channel) is absent.
    case missingKey(String)
    /// A transmitted packet's chain goes on past `limit` data slots: a protocol violation.
    case txChainTooLong(slots: Int, limit: Int)
    /// A packet carries two extra-info slots of the same `type`.
    case duplicateExtra(type: UInt8)

    /// A frame whose `layer` needs bytes up to `needed` but has only `available` (the
    /// frame's length, or the end of the IP packet its length field gives).
    case packetTruncated(layer: NetifPacketLayer, needed: Int, available: Int)
    /// A frame whose ethertype (after at most one VLAN tag) is neither IPv4 nor IPv6.
    case unsupportedEtherType(UInt16)
    /// An IP header whose version field is not the one its ethertype said.
    case ipVersion(found: UInt8, expected: UInt8)
    /// An IPv4 header length (IHL, in 32-bit words) below the 5 of a bare header.
    case ipv4HeaderLength(ihl: UInt8)
    /// An IPv4 total length shorter than its own header.
    case ipv4TotalLength(total: Int, headerLength: Int)
    /// An IP fragment (IPv4 MF or offset, an IPv6 fragment header): no transport
    /// header to checksum.
    case ipFragment(NetifNetworkProtocol)
    /// An IPv6 payload length of 0: a jumbogram, which Ethernet does not carry.
    case ipv6Jumbogram
    /// An IPv6 extension header this parser does not walk (ESP, AH, mobility, ...).
    case unsupportedIPv6ExtensionHeader(UInt8)
    /// A transport protocol other than TCP and UDP, whose checksum is not offloaded.
    case unsupportedTransportProtocol(UInt8)
    /// A TCP data offset (in 32-bit words) below the 5 of a bare header.
    case tcpDataOffset(UInt8)
    /// A partial checksum whose field (`start + offset`, 2 bytes) or range
    /// (`start ..< end`) does not lie inside the `length`-byte frame.
    case checksumOutOfBounds(start: Int, offset: Int, end: Int, length: Int)

    public var description: String {
        switch self {
        case let .slotOutOfBounds(offset, length, size):
            return "netif slot of \(length) bytes at offset \(offset) is outside the \(size)-byte view"
        case let .unknownFlags(field, value, known):
            return "netif \(field) 0x\(String(value, radix: 16)) has bits outside 0x\(String(known, radix: 16))"
        case let .unknownStatus(status):
            return "netif status \(status) is not a NETIF_RSP_* code"
        case let .unknownExtraType(type):
            return "netif extra-info type \(type) is not 1...4"
        case let .unknownGSOType(type):
            return "netif u.gso.type \(type) is not TCPV4 (1) or TCPV6 (2)"
        case let .gsoSize(value, limit):
            return "netif u.gso.size \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case let .unknownHashType(type):
            return "netif u.hash.type \(type) is not 0...3"
        case let .unknownHashAlgorithm(algorithm):
            return "netif u.hash.algorithm \(algorithm) is not NONE (0) or TOEPLITZ (1)"
        case let .unknownCtrlStatus(status):
            return "netif control response status \(status) is not 0...3"
        case let .pageRange(offset, size, limit):
            return "netif fragment offset \(offset) + size \(size) exceeds the \(limit)-byte page"
        case let .featureValue(key, value, expected):
            return "xenstore \(key) = \"\(value)\": expected \(expected)"
        case let .featureRange(key, value, limit):
            return "xenstore \(key) = \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case let .missingKey(key):
            return "xenstore \(key) is missing"
        case let .txChainTooLong(slots, limit):
            return "netif tx packet over at least \(slots) data slots, past the \(limit) a backend may treat as fatal"
        case let .duplicateExtra(type):
            return "netif packet with two extra-info slots of type \(type)"
        case let .packetTruncated(layer, needed, available):
            return "packet ends in its \(layer.rawValue): needs \(needed) bytes, has \(available)"
        case let .unsupportedEtherType(type):
            return "packet ethertype 0x\(String(type, radix: 16)) is not IPv4 or IPv6 (after at most one VLAN tag)"
        case let .ipVersion(found, expected):
            return "IP header version \(found) where its ethertype says \(expected)"
        case let .ipv4HeaderLength(ihl):
            return "IPv4 header length (IHL) \(ihl) is below 5"
        case let .ipv4TotalLength(total, headerLength):
            return "IPv4 total length \(total) is shorter than its \(headerLength)-byte header"
        case let .ipFragment(network):
            return "\(network == .ipv4 ? "IPv4" : "IPv6") fragment: no transport header to checksum"
        case .ipv6Jumbogram:
            return "IPv6 payload length 0 (a jumbogram)"
        case let .unsupportedIPv6ExtensionHeader(header):
            return "IPv6 extension header \(header) is not walked (only hop-by-hop, routing, destination options)"
        case let .unsupportedTransportProtocol(value):
            return "IP protocol \(value) is not TCP (6) or UDP (17)"
        case let .tcpDataOffset(offset):
            return "TCP data offset \(offset) is below 5"
        case let .checksumOutOfBounds(start, offset, end, length):
            return "partial checksum at \(start)+\(offset) over \(start)..<\(end) is outside the \(length)-byte frame"
        }
    }
}
