import Netif
import Tap

/// The virtio-net header for a packet the backend delivered (`io/netif.h`, "Guest
/// receive"), so the TAP device's kernel side sees what the flags said: NETRXF_csum_blank
/// becomes VIRTIO_NET_HDR_F_NEEDS_CSUM with the checksum's place found in the frame (the
/// field holds the pseudo-header sum, as for CHECKSUM_PARTIAL); NETRXF_data_validated
/// becomes VIRTIO_NET_HDR_F_DATA_VALID; a GSO extra becomes gso_type, gso_size and
/// hdr_len. A GSO packet without NETRXF_csum_blank gets its pseudo-header sum written,
/// as the kernel takes GSO only with a partial checksum.
public enum NetFrontendRxHeader {
    /// The header for `frame`, which may be changed (the pseudo-header sum). Throws,
    /// and the packet is dropped, when a checksum to leave partial cannot be located.
    public static func make(flags: NetifRxFlags, gso: (size: UInt16, type: NetifGSOType)?,
                            frame: UnsafeMutableRawBufferPointer) throws(NetFrontendError) -> VirtioNetHeader {
        var header = VirtioNetHeader()
        let partial = flags.contains(.checksumBlank) || gso != nil
        if partial {
            let location: NetifChecksumLocation
            do { location = try NetifChecksumOffload.locate(in: UnsafeRawBufferPointer(frame)) } catch {
                throw .checksum(error)
            }
            if !flags.contains(.checksumBlank) {
                NetifChecksumOffload.writePseudoHeaderSum(into: frame, at: location)
            }
            header.flags.insert(.needsChecksum)
            header.csumStart = UInt16(location.csumStart)
            header.csumOffset = UInt16(location.csumOffset)
            if let gso {
                guard location.transport == .tcp else { throw .checksum(.unsupportedTransportProtocol(location.transport.rawValue)) }
                header.gsoType = gso.type == .tcpv6 ? .tcpv6 : .tcpv4
                header.gsoSize = gso.size
                header.headerLength = UInt16(location.headerLength)
            }
        } else if flags.contains(.dataValidated) {
            header.flags.insert(.dataValid)
        }
        return header
    }
}
