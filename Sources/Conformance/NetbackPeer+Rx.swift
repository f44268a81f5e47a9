import Netif
import SharedMemory
import XenPlatform
import XenRing

extension NetbackPeer {
    /// The next posted rx buffer, consumed: its slot index, id and grant; nil when the
    /// frontend has none posted.
    func takeRxBuffer() throws -> (id: UInt16, gref: UInt32)? {
        guard var ring = rxRing else { throw PeerError.unusable(mapProblem ?? "no rx ring attached") }
        defer { rxRing = ring }
        let producer = ring.shared.loadRequestProducer()
        guard producer &- ring.requestConsumer <= ring.size else {
            throw PeerError.badResponse("the frontend's rx req_prod \(producer) is more than a ring past req_cons \(ring.requestConsumer)")
        }
        guard ring.requestConsumer != producer else { return nil }
        let request = try NetifRxRequest.decode(from: ring.requestSlot(ring.requestConsumer), at: 0)
        ring.requestConsumer &+= 1
        return (request.id, request.gref)
    }

    /// Writes `bytes` at `offset` of the frontend's rx buffer `gref`.
    func fill(_ gref: UInt32, with bytes: [UInt8], at offset: Int = 0) throws {
        let page = try platform.grantMapper.map([GrantRef(gref)], from: frontendID, writable: true)
        defer { try? platform.grantMapper.unmap(page) }
        bytes.withUnsafeBytes { page.view.copyBytes(from: $0, to: offset) }
    }

    /// Writes `responses` on the rx ring (raw: whatever a lie needs), pushes and notifies.
    func respondRx(_ responses: [NetifRxResponse], extras: [Int: [UInt8]] = [:]) throws {
        guard var ring = rxRing else { throw PeerError.unusable("no rx ring attached") }
        for (index, response) in responses.enumerated() {
            response.encode(into: ring.responseSlot(ring.responseProducerPrivate), at: 0)
            ring.responseProducerPrivate &+= 1
            if let extra = extras[index] {
                let slot = ring.responseSlot(ring.responseProducerPrivate)
                slot.fill(0, at: 0, length: NetifLayout.rxSlotSize)
                extra.withUnsafeBytes { slot.copyBytes(from: $0, to: 0) }
                ring.responseProducerPrivate &+= 1
            }
        }
        rxRing = ring
        // Always notified: a lie must reach the frontend whatever rsp_event says.
        _ = ring.pushResponsesAndCheckNotify()
        notifyFrontend()
    }

    /// Places `frame` in posted rx buffers, `piece` bytes a buffer (more_data on all but
    /// the last), answers them, and returns the responses written.
    @discardableResult
    func deliver(_ frame: [UInt8], piece: Int = pageSize, flags: NetifRxFlags = []) async throws -> [NetifRxResponse] {
        var responses: [NetifRxResponse] = []
        var start = 0
        let deadline = ContinuousClock.now + Self.patience
        while start < frame.count {
            guard let buffer = try takeRxBuffer() else {
                guard ContinuousClock.now < deadline else { throw PeerError.unusable("no rx buffer posted within \(Self.patience)") }
                try await Task.sleep(for: .milliseconds(1))
                continue
            }
            let end = min(frame.count, start + piece)
            try fill(buffer.gref, with: Array(frame[start ..< end]))
            var slotFlags = start == 0 ? flags : []
            if end < frame.count { slotFlags.insert(.moreData) }
            responses.append(NetifRxResponse(id: buffer.id, offset: 0, flags: slotFlags, size: UInt16(end - start)))
            start = end
        }
        try respondRx(responses)
        return responses
    }
}
