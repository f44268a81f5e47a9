import Netif
import SharedMemory
import Tap
import XenRing

/// Puts received packets back together from the rx ring (`io/netif.h`, "Guest receive"),
/// one slot at a time, each slot read once: a packet's first response, its extra-info
/// slots while NETRXF_extra_info and then XEN_NETIF_EXTRA_FLAG_MORE say so, further
/// responses while NETRXF_more_data does. Every response must sit in the slot of the
/// request it answers (its id is that slot's) and its data inside the page; a chain longer
/// than a packet can be is a lie. Data is copied out of the page as each response is
/// taken, so the page can be posted again at once.
public struct NetFrontendRxAssembler {
    /// What taking one slot came to.
    public enum Outcome: Equatable {
        /// The packet goes on in the next slot.
        case more
        /// A whole packet: its virtio-net header and frame are in ``packet``.
        case packet
        /// A whole packet to drop (the backend's error status, a checksum not found).
        case dropped(NetFrontendError)
    }

    /// Data slots a packet may take: XEN_NETIF_NR_SLOTS_MIN, as io/netif.h bounds a chain.
    public static let maxDataSlots = NetifLimits.minimumSlotsPerPacket

    let mask: UInt32
    /// The packet: room for a virtio-net header, then the frame.
    public private(set) var packet: [UInt8]
    /// Bytes of frame after the header room.
    public private(set) var frameLength = 0
    private var inPacket = false
    private var firstFlags: NetifRxFlags = []
    private var extrasLeft = false
    private var moreData = false
    private var dataSlots = 0
    private var gso: (size: UInt16, type: NetifGSOType)?
    private var failure: NetFrontendError?

    /// An assembler for an rx ring of `ringSize` slots (a power of two).
    public init(ringSize: UInt32) {
        mask = ringSize &- 1
        packet = [UInt8](repeating: 0, count: VirtioNetHeader.size + Self.maxDataSlots * pageSize)
    }

    /// The finished packet, header first, valid after ``Outcome/packet``.
    public var packetLength: Int { VirtioNetHeader.size + frameLength }

    /// Takes the response in `slot`, ring index `index`, whose posted page is `page`.
    /// Throws when the backend lied; the ring must not be read further.
    public mutating func take(slot: SharedView, index: RingIndex, page: SharedView) throws(NetFrontendError) -> Outcome {
        if inPacket, extrasLeft {
            let extra: NetifExtraInfo
            do { extra = try NetifExtraInfo.decode(from: slot, at: 0) } catch { throw .malformedResponse(ring: .rx, error) }
            switch extra.kind {
            case let .gso(size, type, _): gso = (size, type)
            case .hash: break
            case .multicastAdd, .multicastDelete: throw .rxUnexpectedExtra(type: extra.typeCode)
            }
            extrasLeft = extra.flags.contains(.more)
            return finishIfDone()
        }
        let response: NetifRxResponse
        do { response = try NetifRxResponse.decode(from: slot, at: 0) } catch {
            throw .malformedResponse(ring: .rx, error)
        }
        let expected = UInt16(truncatingIfNeeded: index & mask)
        guard response.id == expected else { throw .rxResponseID(found: response.id, expected: expected) }
        guard !response.flags.contains(.gsoPrefix) else { throw .rxGSOPrefix }
        if !inPacket {
            inPacket = true
            firstFlags = response.flags
            extrasLeft = response.flags.contains(.extraInfo)
            frameLength = 0
            dataSlots = 0
            gso = nil
            failure = nil
        } else if response.flags.contains(.extraInfo) {
            throw .rxExtraInfoNotFirst
        }
        dataSlots += 1
        guard dataSlots <= Self.maxDataSlots else { throw .rxChainTooLong(slots: Self.maxDataSlots) }
        moreData = response.flags.contains(.moreData)
        if let size = response.size {
            // decode checked offset + size against the page; the buffer holds a page per slot.
            let start = VirtioNetHeader.size + frameLength
            packet.withUnsafeMutableBytes { bytes in
                page.copyBytes(at: Int(response.offset),
                               into: UnsafeMutableRawBufferPointer(rebasing: bytes[start ..< start + size]))
            }
            frameLength += size
        } else if failure == nil {
            failure = .rxErrorStatus(response.status)
        }
        return finishIfDone()
    }

    private mutating func finishIfDone() -> Outcome {
        guard !extrasLeft, !moreData else { return .more }
        inPacket = false
        if let failure { return .dropped(failure) }
        guard frameLength >= 14 else { return .dropped(.frameTooShort(length: frameLength)) }
        let flags = firstFlags
        let gso = self.gso
        let length = frameLength
        let header: Result<VirtioNetHeader, NetFrontendError> = packet.withUnsafeMutableBytes { bytes in
            let frame = UnsafeMutableRawBufferPointer(rebasing: bytes[VirtioNetHeader.size ..< VirtioNetHeader.size + length])
            do throws(NetFrontendError) { return .success(try NetFrontendRxHeader.make(flags: flags, gso: gso, frame: frame)) } catch {
                return .failure(error)
            }
        }
        switch header {
        case let .success(header):
            packet.withUnsafeMutableBytes { _ = header.encode(into: $0) }
            return .packet
        case let .failure(error):
            return .dropped(error)
        }
    }
}
