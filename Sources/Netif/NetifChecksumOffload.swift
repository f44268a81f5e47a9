/// A header layer of a transmitted frame, as ``NetifError/packetTruncated(layer:needed:available:)``
/// names where a frame ended too soon.
public enum NetifPacketLayer: String, Sendable, Hashable {
    case ethernet = "Ethernet header"
    case vlan = "802.1Q/802.1ad tag"
    case ipv4 = "IPv4 header"
    case ipv4Payload = "IPv4 total length"
    case ipv6 = "IPv6 header"
    case ipv6Payload = "IPv6 payload length"
    case ipv6ExtensionHeader = "IPv6 extension header"
    case tcp = "TCP header"
    case udp = "UDP header"
}

/// The network layer under the transport header.
public enum NetifNetworkProtocol: Sendable, Hashable {
    /// IPv4 (ethertype 0x0800).
    case ipv4
    /// IPv6 (ethertype 0x86DD).
    case ipv6
}

/// The transport protocols whose checksum a backend finishes: the two a frontend may
/// leave blank (io/netif.h, NETTXF_csum_blank).
public enum NetifTransportProtocol: UInt8, Sendable, Hashable {
    /// TCP (IP protocol 6): the checksum is 16 bytes into its header.
    case tcp = 6
    /// UDP (IP protocol 17): the checksum is 6 bytes into its header.
    case udp = 17

    /// Where the checksum field sits in the transport header.
    public var checksumOffset: Int { self == .tcp ? 16 : 6 }
}

/// Where a frame's transport checksum is, found by ``NetifChecksumOffload/locate(in:)``.
/// Its offsets are from the start of the frame (the Ethernet header), as struct
/// virtio_net_hdr wants them: `csumStart`, `csumOffset` and `headerLength` go straight into
/// its `csum_start`, `csum_offset` and `hdr_len`.
public struct NetifChecksumLocation: Sendable, Hashable {
    /// IPv4 or IPv6.
    public var network: NetifNetworkProtocol
    /// Where the IP header starts (after the Ethernet header and any VLAN tag).
    public var networkOffset: Int
    /// TCP or UDP.
    public var transport: NetifTransportProtocol
    /// Where the transport header starts: the checksum covers from here to ``end``.
    public var csumStart: Int
    /// Where the checksum field is, from ``csumStart`` (16 for TCP, 6 for UDP).
    public var csumOffset: Int
    /// Where the transport header ends: the `hdr_len` of a GSO packet.
    public var headerLength: Int
    /// Where the IP packet ends, as its length fields say; bytes after it are Ethernet
    /// padding, outside every checksum.
    public var end: Int

    /// A location with every field given; ``NetifChecksumOffload/locate(in:)`` makes them
    /// from a frame.
    public init(network: NetifNetworkProtocol, networkOffset: Int, transport: NetifTransportProtocol, csumStart: Int,
                csumOffset: Int, headerLength: Int, end: Int) {
        self.network = network
        self.networkOffset = networkOffset
        self.transport = transport
        self.csumStart = csumStart
        self.csumOffset = csumOffset
        self.headerLength = headerLength
        self.end = end
    }

    /// The transport segment's length: the length in the pseudo-header.
    public var transportLength: Int { end - csumStart }
    /// Where the checksum field is, from the start of the frame.
    public var checksumField: Int { csumStart + csumOffset }
}

/// What a net backend does for a packet its frontend sent with NETTXF_csum_blank
/// (io/netif.h): the frontend left the TCP or UDP checksum for the backend, with the
/// pseudo-header sum already in the checksum field (as Linux's netfront does for
/// CHECKSUM_PARTIAL). Pure functions over a contiguous copy of the frame, every read
/// bounds-checked against it; nothing here trusts a length the frame claims.
public enum NetifChecksumOffload {
    static let etherTypeIPv4: UInt16 = 0x0800
    static let etherTypeIPv6: UInt16 = 0x86DD
    static let etherTypeVLAN: UInt16 = 0x8100
    static let etherTypeQinQ: UInt16 = 0x88A8

    /// Finds the transport checksum of an Ethernet frame: one optional 802.1Q/802.1ad
    /// tag, IPv4 (not a fragment) or IPv6 with hop-by-hop, routing and destination-options
    /// headers (not a fragment), then TCP or UDP.
    public static func locate(in frame: UnsafeRawBufferPointer) throws(NetifError) -> NetifChecksumLocation {
        let reader = FrameReader(bytes: frame)
        try reader.need(14, at: 0, .ethernet)
        var etherType = reader.u16(12)
        var networkOffset = 14
        if etherType == etherTypeVLAN || etherType == etherTypeQinQ {
            try reader.need(4, at: 14, .vlan)
            etherType = reader.u16(16)
            networkOffset = 18
        }
        switch etherType {
        case etherTypeIPv4: return try locateIPv4(reader, at: networkOffset)
        case etherTypeIPv6: return try locateIPv6(reader, at: networkOffset)
        default: throw .unsupportedEtherType(etherType)
        }
    }

    /// Finds the transport checksum of the Ethernet frame in `frame`.
    public static func locate(in frame: [UInt8]) throws(NetifError) -> NetifChecksumLocation {
        // withUnsafeBytes rethrows untyped, so the outcome crosses it as a Result.
        try frame.withUnsafeBytes { bytes in Result { () throws(NetifError) in try locate(in: bytes) } }.get()
    }

    /// The pseudo-header's ones' complement sum, folded: what a partial checksum field
    /// holds (the IP addresses, the protocol and ``NetifChecksumLocation/transportLength``).
    /// With an IPv6 routing header this uses the header's destination, as Linux's netback
    /// does, not the final destination RFC 8200 names. `location` must come from
    /// ``locate(in:)`` on the same frame (its offsets are trusted).
    public static func pseudoHeaderSum(of frame: UnsafeRawBufferPointer, at location: NetifChecksumLocation) -> UInt16 {
        var sum = InternetChecksum()
        let n = location.networkOffset
        switch location.network {
        case .ipv4:
            sum.add(UnsafeRawBufferPointer(rebasing: frame[(n + 12)..<(n + 20)]))
            sum.add(word: UInt16(location.transport.rawValue))
            sum.add(word: UInt16(truncatingIfNeeded: location.transportLength))
        case .ipv6:
            sum.add(UnsafeRawBufferPointer(rebasing: frame[(n + 8)..<(n + 40)]))
            sum.add(word: UInt16(truncatingIfNeeded: location.transportLength >> 16))
            sum.add(word: UInt16(truncatingIfNeeded: location.transportLength))
            sum.add(word: UInt16(location.transport.rawValue))
        }
        return sum.sum16
    }

    /// Writes the pseudo-header sum into the checksum field, making the frame a partial
    /// checksum a receiver can finish: what Linux's netback does (skb_checksum_setup with
    /// recalculation) when a GSO packet arrives without NETTXF_csum_blank. `location`
    /// must come from ``locate(in:)`` on the same frame.
    public static func writePseudoHeaderSum(into frame: UnsafeMutableRawBufferPointer, at location: NetifChecksumLocation) {
        let sum = pseudoHeaderSum(of: UnsafeRawBufferPointer(frame), at: location)
        frame[location.checksumField] = UInt8(sum >> 8)
        frame[location.checksumField + 1] = UInt8(truncatingIfNeeded: sum)
    }

    /// Finishes a partial checksum in software, as a device without checksum offload must
    /// (virtio NEEDS_CSUM semantics): the sum from `start` to `end`, the field at
    /// `start + offset` included with the pseudo-header sum in it, complemented and stored
    /// there. A result of 0 is stored as 0xFFFF, which verifies the same and means "has a
    /// checksum" to UDP.
    public static func completePartialChecksum(in frame: UnsafeMutableRawBufferPointer, start: Int, offset: Int,
                                               end: Int) throws(NetifError) {
        guard start >= 0, offset >= 0, end <= frame.count, start <= end, end - start >= 2, offset <= end - start - 2 else {
            throw .checksumOutOfBounds(start: start, offset: offset, end: end, length: frame.count)
        }
        var sum = InternetChecksum()
        sum.add(UnsafeRawBufferPointer(rebasing: frame[start..<end]))
        let checksum = sum.checksum == 0 ? 0xFFFF : sum.checksum
        frame[start + offset] = UInt8(checksum >> 8)
        frame[start + offset + 1] = UInt8(truncatingIfNeeded: checksum)
    }

    /// Finishes the partial checksum at `location` (from ``locate(in:)`` on this frame).
    public static func completePartialChecksum(in frame: UnsafeMutableRawBufferPointer,
                                               at location: NetifChecksumLocation) throws(NetifError) {
        try completePartialChecksum(in: frame, start: location.csumStart, offset: location.csumOffset, end: location.end)
    }

    // MARK: - Layers

    private static func locateIPv4(_ reader: FrameReader, at n: Int) throws(NetifError) -> NetifChecksumLocation {
        try reader.need(20, at: n, .ipv4)
        let version = reader.u8(n) >> 4
        guard version == 4 else { throw .ipVersion(found: version, expected: 4) }
        let ihl = reader.u8(n) & 0x0F
        guard ihl >= 5 else { throw .ipv4HeaderLength(ihl: ihl) }
        let headerLength = Int(ihl) * 4
        try reader.need(headerLength, at: n, .ipv4)
        let totalLength = Int(reader.u16(n + 2))
        guard totalLength >= headerLength else { throw .ipv4TotalLength(total: totalLength, headerLength: headerLength) }
        try reader.need(totalLength, at: n, .ipv4Payload)
        // More-fragments set or a non-zero offset: this is a fragment, and only the first
        // one has a transport header (which covers the whole reassembled datagram).
        let fragment = reader.u16(n + 6)
        guard fragment & 0x3FFF == 0 else { throw .ipFragment(.ipv4) }
        return try locateTransport(reader, protocol: reader.u8(n + 9), network: .ipv4, networkOffset: n,
                                   at: n + headerLength, end: n + totalLength)
    }

    private static func locateIPv6(_ reader: FrameReader, at n: Int) throws(NetifError) -> NetifChecksumLocation {
        try reader.need(40, at: n, .ipv6)
        let version = reader.u8(n) >> 4
        guard version == 6 else { throw .ipVersion(found: version, expected: 6) }
        let payloadLength = Int(reader.u16(n + 4))
        // Zero means a jumbogram (RFC 2675), its length in a hop-by-hop option: not on Ethernet.
        guard payloadLength > 0 else { throw .ipv6Jumbogram }
        let end = n + 40 + payloadLength
        try reader.need(40 + payloadLength, at: n, .ipv6Payload)
        var next = reader.u8(n + 6)
        var cursor = n + 40
        // Each extension header is at least 8 bytes inside the payload, so this ends.
        while true {
            switch next {
            case NetifTransportProtocol.tcp.rawValue, NetifTransportProtocol.udp.rawValue:
                return try locateTransport(reader, protocol: next, network: .ipv6, networkOffset: n, at: cursor, end: end)
            case 0, 43, 60: // hop-by-hop options, routing, destination options
                try reader.need(2, at: cursor, .ipv6ExtensionHeader, end: end)
                let length = (Int(reader.u8(cursor + 1)) + 1) * 8
                try reader.need(length, at: cursor, .ipv6ExtensionHeader, end: end)
                next = reader.u8(cursor)
                cursor += length
            case 44:
                throw .ipFragment(.ipv6)
            case 50, 51, 59, 135, 139, 140, 253, 254: // ESP, AH, no next header, mobility, HIP, shim6, experiments
                throw .unsupportedIPv6ExtensionHeader(next)
            default:
                throw .unsupportedTransportProtocol(next)
            }
        }
    }

    private static func locateTransport(_ reader: FrameReader, protocol value: UInt8, network: NetifNetworkProtocol,
                                        networkOffset: Int, at start: Int,
                                        end: Int) throws(NetifError) -> NetifChecksumLocation {
        guard let transport = NetifTransportProtocol(rawValue: value) else { throw .unsupportedTransportProtocol(value) }
        let headerEnd: Int
        switch transport {
        case .tcp:
            try reader.need(20, at: start, .tcp, end: end)
            let dataOffset = reader.u8(start + 12) >> 4
            guard dataOffset >= 5 else { throw .tcpDataOffset(dataOffset) }
            try reader.need(Int(dataOffset) * 4, at: start, .tcp, end: end)
            headerEnd = start + Int(dataOffset) * 4
        case .udp:
            try reader.need(8, at: start, .udp, end: end)
            headerEnd = start + 8
        }
        return NetifChecksumLocation(network: network, networkOffset: networkOffset, transport: transport,
                                     csumStart: start, csumOffset: transport.checksumOffset,
                                     headerLength: headerEnd, end: end)
    }
}

/// Big-endian reads from a frame, each after a bounds check that names the layer.
private struct FrameReader {
    let bytes: UnsafeRawBufferPointer

    /// Throws unless `count` bytes at `offset` lie inside the frame (and before `end`,
    /// the end of the IP packet, when given).
    func need(_ count: Int, at offset: Int, _ layer: NetifPacketLayer, end: Int? = nil) throws(NetifError) {
        let limit = min(end ?? bytes.count, bytes.count)
        guard offset + count <= limit else { throw .packetTruncated(layer: layer, needed: offset + count, available: limit) }
    }

    func u8(_ offset: Int) -> UInt8 { bytes[offset] }
    func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
}
