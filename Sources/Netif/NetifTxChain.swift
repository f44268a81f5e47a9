import SharedMemory

/// One data fragment of a transmitted packet: where its bytes are and how many.
public struct NetifTxFragment: Sendable, Hashable {
    public var gref: UInt32
    public var offset: UInt16
    /// The fragment's own data length (for the first, the packet size minus the others).
    public var size: UInt16
    /// The request id, answered in the response.
    public var id: UInt16
}

/// A packet as a frontend transmitted it over one or more tx slots (io/netif.h, "Guest
/// transmit"): the first request, its extra-info slots, then the later fragments.
public struct NetifTxPacket: Sendable, Hashable {
    /// The fragments in order, the first one's size already reduced to its own data.
    public var fragments: [NetifTxFragment]
    /// The extra-info slots (GSO, multicast control, hash), in order.
    public var extras: [NetifExtraInfo]
    /// The first request's flags (checksum blank, data validated).
    public var flags: NetifTxFlags
    /// The whole packet's length: the first request's `size`.
    public var length: Int
    /// The slots the packet took, in ring order: a request's id, or nil for an extra-info
    /// slot. Each slot gets a response in the same order: the request's status, or
    /// NETIF_RSP_NULL for an extra.
    public var slotIDs: [UInt16?]
}

/// Why a chain is answered NETIF_RSP_ERROR in every slot and dropped, the frontend
/// keeping its connection (as Linux's netback drops such a packet).
public enum NetifTxRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// More data slots than this backend takes per packet (it takes at least
    /// XEN_NETIF_NR_SLOTS_MIN).
    case tooManySlots(count: Int, limit: Int)
    /// A later fragment claims more bytes than the packet has left.
    case fragmentLargerThanPacket(index: Int, size: UInt16, left: Int)
    /// The packet is shorter than an Ethernet header.
    case packetTooShort(length: Int, minimum: Int)

    public var description: String {
        switch self {
        case let .tooManySlots(count, limit): return "packet over \(count) data slots, more than the \(limit) taken"
        case let .fragmentLargerThanPacket(index, size, left):
            return "fragment \(index) of \(size) bytes, with \(left) bytes of the packet left"
        case let .packetTooShort(length, minimum): return "packet of \(length) bytes, shorter than \(minimum)"
        }
    }
}

/// Reads one transmitted packet's chain of slots, each slot once: the first request (its
/// `size` is the whole packet), extra-info slots while NETTXF_extra_info and then
/// XEN_NETIF_EXTRA_MORE say so, further requests while NETTXF_more_data does; every data
/// fragment must lie inside its page.
///
/// Three bounds: a chain of up to ``maxSlots`` data slots is served (at least
/// XEN_NETIF_NR_SLOTS_MIN, as io/netif.h asks); a longer one, up to ``fatalSlots``, is
/// refused (every slot answered ERROR, the packet dropped); a longer one still, a fragment
/// crossing its page, an extra-info slot that does not decode or repeats a type, is a
/// protocol violation (thrown), as Linux's netback treats them.
public struct NetifTxChainParser: Sendable {
    /// Data slots served per packet.
    public var maxSlots: Int
    /// Data slots past which a chain is a protocol violation.
    public var fatalSlots: Int
    /// The shortest packet served (an Ethernet header).
    public var minimumLength = 14

    /// A parser serving `maxSlots` data slots (at least XEN_NETIF_NR_SLOTS_MIN) and
    /// refusing chains up to `fatalSlots`.
    public init(maxSlots: Int = NetifLimits.minimumSlotsPerPacket, fatalSlots: Int = 20) {
        self.maxSlots = max(maxSlots, NetifLimits.minimumSlotsPerPacket)
        self.fatalSlots = max(fatalSlots, self.maxSlots)
    }

    /// What one chain came to.
    public enum Outcome: Sendable, Hashable {
        /// A packet to forward.
        case packet(NetifTxPacket)
        /// Drop the packet: answer each request slot of `slotIDs` ERROR (extras NULL), in order.
        case refused(NetifTxRefusal, slotIDs: [UInt16?])
        /// The chain goes on past the `available` slots: wait for the frontend to push the
        /// rest (if `available` is already a whole ring, the chain can never end: a
        /// violation the caller reports).
        case incomplete
    }

    /// Parses the chain whose first slot is `slot(0)`, with `available` slots published.
    /// `slot(i)` gives the i-th slot's view (the caller's copy of it).
    public func parse(available: Int, slot: (Int) -> SharedView) throws(NetifError) -> Outcome {
        guard available > 0 else { return .incomplete }
        let first = try NetifTxRequest.decode(from: slot(0), at: 0)
        var used = 1
        var slotIDs: [UInt16?] = [first.id]
        var extras: [NetifExtraInfo] = []
        if first.flags.contains(.extraInfo) {
            var more = true
            while more {
                guard used < available else { return .incomplete }
                let extra = try NetifExtraInfo.decode(from: slot(used), at: 0)
                used += 1
                let code = extra.typeCode
                guard !extras.contains(where: { $0.typeCode == code }) else { throw .duplicateExtra(type: code) }
                extras.append(extra)
                slotIDs.append(nil)
                more = extra.flags.contains(.more)
            }
        }
        var requests = [first]
        var current = first
        while current.flags.contains(.moreData) {
            guard requests.count < fatalSlots else { throw .txChainTooLong(slots: requests.count + 1, limit: fatalSlots) }
            guard used < available else { return .incomplete }
            current = try NetifTxRequest.decode(from: slot(used), at: 0)
            used += 1
            requests.append(current)
            slotIDs.append(current.id)
        }
        if requests.count > maxSlots {
            return .refused(.tooManySlots(count: requests.count, limit: maxSlots), slotIDs: slotIDs)
        }
        let length = Int(first.size)
        // io/netif.h: multicast control rides on a dummy request; its data is not a packet.
        let dummy = extras.contains { if case .multicastAdd = $0.kind { true } else if case .multicastDelete = $0.kind { true } else { false } }
        if length < minimumLength, !dummy {
            return .refused(.packetTooShort(length: length, minimum: minimumLength), slotIDs: slotIDs)
        }
        // The first request's own data is what the later fragments leave of the packet.
        var left = length
        var fragments: [NetifTxFragment] = []
        for (index, request) in requests.enumerated().dropFirst() {
            guard Int(request.size) <= left else {
                return .refused(.fragmentLargerThanPacket(index: index, size: request.size, left: left), slotIDs: slotIDs)
            }
            left -= Int(request.size)
            try request.validateFragment(dataSize: request.size)
            fragments.append(NetifTxFragment(gref: request.gref, offset: request.offset, size: request.size, id: request.id))
        }
        try first.validateFragment(dataSize: UInt16(left))
        fragments.insert(NetifTxFragment(gref: first.gref, offset: first.offset, size: UInt16(left), id: first.id), at: 0)
        let flags = first.flags.subtracting([.moreData, .extraInfo])
        return .packet(NetifTxPacket(fragments: fragments, extras: extras, flags: flags, length: length, slotIDs: slotIDs))
    }
}

extension NetifExtraInfo {
    /// The `XEN_NETIF_EXTRA_TYPE_*` code of this slot.
    public var typeCode: UInt8 {
        switch kind {
        case .gso: return TypeCode.gso
        case .multicastAdd: return TypeCode.multicastAdd
        case .multicastDelete: return TypeCode.multicastDelete
        case .hash: return TypeCode.hash
        }
    }
}
