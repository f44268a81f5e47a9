import CTap

/// The header in front of every packet on a TAP device opened with IFF_VNET_HDR:
/// struct virtio_net_hdr of linux/virtio_net.h. It says whether the packet still needs
/// its checksum finished (and where), whether it was already checked, and, for a GSO
/// packet, how it is to be segmented.
///
/// The 16-bit fields are little-endian: a TAP device uses the host's order for this
/// legacy header unless TUNSETVNETBE says otherwise, and this code runs on x86 (and
/// other little-endian hosts). Encoding and decoding are pure.
public struct VirtioNetHeader: Sendable, Hashable {
    /// sizeof(struct virtio_net_hdr): 10 bytes.
    public static let size = 10

    /// VIRTIO_NET_HDR_F_* (the `flags` byte).
    public struct Flags: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// VIRTIO_NET_HDR_F_NEEDS_CSUM: the L4 checksum is partial (the pseudo-header sum
        /// sits in the checksum field); finish it over `csumStart` to the end and store it
        /// at `csumStart + csumOffset`.
        public static let needsChecksum = Flags(rawValue: ctap_virtio_net_hdr_f_needs_csum)
        /// VIRTIO_NET_HDR_F_DATA_VALID: the checksum was verified already.
        public static let dataValid = Flags(rawValue: ctap_virtio_net_hdr_f_data_valid)
    }

    /// VIRTIO_NET_HDR_GSO_* without the ECN bit (the `gso_type` byte's low 7 bits).
    /// A value the constants do not name decodes as itself, for the caller to refuse.
    public struct GSOType: RawRepresentable, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// VIRTIO_NET_HDR_GSO_NONE: not a GSO packet.
        public static let none = GSOType(rawValue: ctap_virtio_net_hdr_gso_none)
        /// VIRTIO_NET_HDR_GSO_TCPV4: TCP segmentation over IPv4.
        public static let tcpv4 = GSOType(rawValue: ctap_virtio_net_hdr_gso_tcpv4)
        /// VIRTIO_NET_HDR_GSO_UDP: UDP fragmentation offload (UFO).
        public static let udp = GSOType(rawValue: ctap_virtio_net_hdr_gso_udp)
        /// VIRTIO_NET_HDR_GSO_TCPV6: TCP segmentation over IPv6.
        public static let tcpv6 = GSOType(rawValue: ctap_virtio_net_hdr_gso_tcpv6)
        /// VIRTIO_NET_HDR_GSO_UDP_L4 (5): UDP segmentation (USO). The virtio 1.2 spec and
        /// newer linux/virtio_net.h define it; the installed header does not, which is why
        /// ``TapOffloads`` offers no USO flag and a TAP never produces this type here.
        public static let udpL4 = GSOType(rawValue: 5)
    }

    /// The `flags` byte.
    public var flags: Flags
    /// The `gso_type` byte's type bits.
    public var gsoType: GSOType
    /// VIRTIO_NET_HDR_GSO_ECN in `gso_type`: the TCP segments carry ECN (CWR).
    public var ecn: Bool
    /// `hdr_len`: the length of the Ethernet, IP and L4 headers (a hint on transmit).
    public var headerLength: UInt16
    /// `gso_size`: the payload bytes per segment of a GSO packet.
    public var gsoSize: UInt16
    /// `csum_start`: where checksumming starts, from the start of the frame.
    public var csumStart: UInt16
    /// `csum_offset`: where the checksum goes, from `csumStart`.
    public var csumOffset: UInt16

    /// A header with every field given (all zero by default: a finished, non-GSO packet).
    public init(flags: Flags = [], gsoType: GSOType = .none, ecn: Bool = false, headerLength: UInt16 = 0,
                gsoSize: UInt16 = 0, csumStart: UInt16 = 0, csumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.ecn = ecn
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.csumStart = csumStart
        self.csumOffset = csumOffset
    }

    /// The `gso_type` byte: type bits and the ECN bit.
    public var gsoTypeByte: UInt8 { gsoType.rawValue | (ecn ? ctap_virtio_net_hdr_gso_ecn : 0) }

    /// Decodes the header at `offset` of `buffer`, or nil if the buffer has fewer than
    /// ``size`` bytes there.
    public init?(decoding buffer: UnsafeRawBufferPointer, at offset: Int = 0) {
        guard offset >= 0, buffer.count - offset >= Self.size else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(buffer[offset + at]) | UInt16(buffer[offset + at + 1]) << 8 }
        let gso = buffer[offset + 1]
        self.init(flags: Flags(rawValue: buffer[offset]),
                  gsoType: GSOType(rawValue: gso & ~ctap_virtio_net_hdr_gso_ecn),
                  ecn: gso & ctap_virtio_net_hdr_gso_ecn != 0,
                  headerLength: u16(2), gsoSize: u16(4), csumStart: u16(6), csumOffset: u16(8))
    }

    /// Decodes the header at `offset` of `bytes`, or nil if it does not fit.
    public init?(decoding bytes: [UInt8], at offset: Int = 0) {
        guard let header = bytes.withUnsafeBytes({ VirtioNetHeader(decoding: $0, at: offset) }) else { return nil }
        self = header
    }

    /// Writes the header's ``size`` bytes at `offset` of `buffer`; false (nothing written)
    /// if they do not fit.
    @discardableResult
    public func encode(into buffer: UnsafeMutableRawBufferPointer, at offset: Int = 0) -> Bool {
        guard offset >= 0, buffer.count - offset >= Self.size else { return false }
        func put(_ value: UInt16, _ at: Int) {
            buffer[offset + at] = UInt8(truncatingIfNeeded: value)
            buffer[offset + at + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        buffer[offset] = flags.rawValue
        buffer[offset + 1] = gsoTypeByte
        put(headerLength, 2)
        put(gsoSize, 4)
        put(csumStart, 6)
        put(csumOffset, 8)
        return true
    }

    /// The header's ``size`` bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.size)
        out.withUnsafeMutableBytes { _ = encode(into: $0) }
        return out
    }
}
