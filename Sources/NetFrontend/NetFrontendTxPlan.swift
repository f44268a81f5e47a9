import Netif
import SharedMemory
import Tap

/// How one frame read from the TAP device goes onto the tx ring (`io/netif.h`, "Guest
/// transmit"): page-sized pieces, each in a granted page of its own from offset 0, the
/// first request's `size` the whole frame; NETTXF_more_data on all but the last;
/// checksum flags and a GSO extra-info slot on the first. Pure: made from the virtio-net
/// header, the frame and the backend's features, finishing the checksum in the frame when
/// the backend would not.
public struct NetFrontendTxPlan: Sendable, Hashable {
    /// The first request's flags (NETTXF_csum_blank, NETTXF_data_validated, and
    /// NETTXF_extra_info when ``gso`` is set); NETTXF_more_data is per fragment.
    public var flags: NetifTxFlags
    /// The GSO extra-info slot after the first request, if any.
    public var gso: NetifExtraInfo?
    /// The frame's length: the first request's `size`.
    public var length: Int

    /// Data slots (granted pages) the frame takes.
    public var fragmentCount: Int { (length + pageSize - 1) / pageSize }

    /// Ring slots the frame takes: its fragments and its extra-info slot.
    public var slotCount: Int { fragmentCount + (gso == nil ? 0 : 1) }

    /// Where fragment `index` lies in the frame.
    public func fragment(_ index: Int) -> Range<Int> {
        index * pageSize ..< min(length, (index + 1) * pageSize)
    }

    /// The `index`-th data request: its `size` (the whole frame for the first) and flags.
    public func request(_ index: Int, gref: UInt32, id: UInt16) -> NetifTxRequest {
        var requestFlags: NetifTxFlags = index == 0 ? flags : []
        if index + 1 < fragmentCount { requestFlags.insert(.moreData) }
        let size = index == 0 ? length : fragment(index).count
        return NetifTxRequest(gref: gref, offset: 0, flags: requestFlags, id: id, size: UInt16(size))
    }

    /// Most data slots a frame ever takes: XEN_NETIF_MAX_TX_SIZE bytes in pages.
    public static let maxFragments = (NetifLimits.maxTransmitSize + pageSize - 1) / pageSize
    /// Most ring slots a frame ever takes.
    public static let maxSlots = maxFragments + 1

    /// Plans `frame` as the TAP device gave it with `header`, for a backend offering
    /// `backend`. A partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) is left for the backend
    /// when it takes checksum offload for the frame's IP version (always for IPv4,
    /// `feature-ipv6-csum-offload` for IPv6), else finished here in `frame`. Throws, and the
    /// frame is dropped, when it is too short, too long, or GSO of a type not offered.
    public init(header: VirtioNetHeader, frame: UnsafeMutableRawBufferPointer,
                backend: NetifBackendFeatures) throws(NetFrontendError) {
        length = frame.count
        guard length >= 14 else { throw .frameTooShort(length: length) }
        let limit = backend.scatterGather ? NetifLimits.maxTransmitSize : pageSize
        guard length <= limit else { throw .frameTooLarge(length: length, limit: limit) }
        flags = []
        gso = nil
        switch header.gsoType {
        case .none: break
        case .tcpv4 where backend.gsoTCPv4:
            gso = NetifExtraInfo(.gso(size: header.gsoSize, type: .tcpv4, features: 0))
        case .tcpv6 where backend.gsoTCPv6:
            gso = NetifExtraInfo(.gso(size: header.gsoSize, type: .tcpv6, features: 0))
        default: throw .gsoNotOffered(header.gsoType)
        }
        if gso != nil {
            guard header.gsoSize > 0 else { throw .gsoNotOffered(header.gsoType) }
            flags.insert(.extraInfo)
        }
        if header.flags.contains(.needsChecksum) {
            if Self.backendFinishes(frame: UnsafeRawBufferPointer(frame), backend: backend) {
                flags.formUnion([.checksumBlank, .dataValidated])
            } else if gso != nil {
                // Segments need a partial checksum each: only the backend can make them.
                throw .gsoNotOffered(header.gsoType)
            } else {
                do {
                    try NetifChecksumOffload.completePartialChecksum(
                        in: frame, start: Int(header.csumStart), offset: Int(header.csumOffset), end: length)
                } catch {
                    throw .checksum(error)
                }
                flags.insert(.dataValidated)
            }
        } else if header.flags.contains(.dataValid) {
            flags.insert(.dataValidated)
        } else if gso != nil {
            // A GSO frame always comes with a partial checksum from the kernel.
            throw .gsoNotOffered(header.gsoType)
        }
    }

    /// Whether the backend finishes this frame's partial checksum: IPv4 always, IPv6 with
    /// `feature-ipv6-csum-offload`; a frame whose IP version cannot be told is finished here.
    static func backendFinishes(frame: UnsafeRawBufferPointer, backend: NetifBackendFeatures) -> Bool {
        guard let location = try? NetifChecksumOffload.locate(in: frame) else { return false }
        return location.network == .ipv4 || backend.ipv6ChecksumOffload
    }
}
