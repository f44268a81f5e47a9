/// How one packet towards the frontend spreads over the rx buffers it posted (io/netif.h,
/// "Guest receive"): data in page-sized pieces, one per posted buffer, from offset 0; the
/// first response carries NETRXF_extra_info when extra-info slots follow it and
/// NETRXF_more_data when more data does; the extra-info slots (GSO, hash) come right after
/// the first response. Every response and every extra slot lands in the ring slot of the
/// request it consumed, as io/netif.h's note requires (Linux's netfront reads responses
/// by slot, not by id); an extra slot uses up its request's buffer.
public struct NetifRxPlan: Sendable, Hashable {
    /// What goes in one ring slot.
    public enum Slot: Sendable, Hashable {
        /// Copy `length` bytes of the packet from `packetOffset` into the request's buffer
        /// at offset 0, and answer it with `flags` and the length.
        case data(packetOffset: Int, length: Int, flags: NetifRxFlags)
        /// This extra-info slot overlays the response.
        case extra(NetifExtraInfo)
    }

    /// One slot per request consumed, in ring order (slot i answers the i-th posted request).
    public var slots: [Slot]

    /// Requests the packet consumes.
    public var requestsNeeded: Int { slots.count }

    /// The plan for a packet of `length` bytes (at least 1) with the first response's
    /// checksum `flags` (NETRXF_data_validated, NETRXF_csum_blank) and `extras` (at most
    /// one of each type, in the order given), each buffer a page of `bufferSize` bytes.
    public init(length: Int, flags: NetifRxFlags = [], extras: [NetifExtraInfo] = [], bufferSize: Int = 4096) throws(NetifError) {
        guard length >= 1, length <= NetifLimits.maxTransmitSize else {
            throw .featureRange(key: "rx packet length", value: UInt64(max(length, 0)),
                                limit: 1...UInt64(NetifLimits.maxTransmitSize))
        }
        var seen: Set<UInt8> = []
        for extra in extras where !seen.insert(extra.typeCode).inserted { throw .duplicateExtra(type: extra.typeCode) }
        let pieces = (length + bufferSize - 1) / bufferSize
        var slots: [Slot] = []
        slots.reserveCapacity(pieces + extras.count)
        for piece in 0..<pieces {
            let offset = piece * bufferSize
            var pieceFlags: NetifRxFlags = piece == 0 ? flags.intersection([.dataValidated, .checksumBlank]) : []
            if piece + 1 < pieces { pieceFlags.insert(.moreData) }
            if piece == 0, !extras.isEmpty { pieceFlags.insert(.extraInfo) }
            slots.append(.data(packetOffset: offset, length: min(bufferSize, length - offset), flags: pieceFlags))
            if piece == 0 {
                for (index, extra) in extras.enumerated() {
                    var chained = extra
                    chained.flags = index + 1 < extras.count ? [.more] : []
                    slots.append(.extra(chained))
                }
            }
        }
        self.slots = slots
    }
}
