import Netif
import SharedMemory
import XenPlatform
import XenRing

/// One tx slot the scripted netback consumed.
struct SeenTxSlot: Sendable {
    let index: RingIndex
    /// The request, or nil for an extra-info slot (`extraType` its type) or one that did
    /// not decode (`problem`).
    let request: NetifTxRequest?
    let extraType: UInt8?
    let problem: String?
    /// Whether its id was that of a request not yet answered.
    let idInFlight: Bool
    /// The packet's bytes in this slot (read through its grant), when it mapped.
    let bytes: [UInt8]?
    /// Whether it is a packet's first slot (whose size is the whole packet's).
    var first = false
}

extension NetbackPeer {
    /// The frontend's user side (its TAP device, or a guest's interface through an agent),
    /// or why the run has none.
    func userSide() throws -> any FrontendFrames {
        guard let host else {
            throw CheckCannotRun("the clause sends and reads frames through the frontend's user side (its TAP device, or the guest's interface through an agent), and this run was given none (xensplit conformance --tap, or --agent with --agent-device)")
        }
        return host
    }

    /// Consumes the tx slots published, answering each request OKAY (and each extra slot
    /// NETIF_RSP_NULL) once `batch` are waiting or `flush`; pushes and notifies. Returns
    /// how many slots it consumed.
    func serveTx(batch: Int = 1, flush: Bool = true) throws -> Int {
        guard var ring = txRing else { throw PeerError.unusable(mapProblem ?? "no tx ring attached") }
        defer { txRing = ring }
        let producer = ring.shared.loadRequestProducer()
        guard producer &- ring.requestConsumer <= ring.size else {
            throw PeerError.badResponse("the frontend's tx req_prod \(producer) is more than a ring (\(ring.size)) past req_cons \(ring.requestConsumer)")
        }
        var consumed = 0
        var extraNext = false
        while ring.requestConsumer != producer {
            let index = ring.requestConsumer
            let slot = ring.requestSlot(index)
            ring.requestConsumer = index &+ 1
            consumed += 1
            if extraNext || pendingExtra {
                let type = slot.load(UInt8.self, at: 0), flags = slot.load(UInt8.self, at: 1)
                txSeen.append(SeenTxSlot(index: index, request: nil, extraType: type, problem: nil, idInFlight: false, bytes: nil))
                txUnanswered.append((index, nil))
                // NETIF_EXTRA_FLAG_MORE: another extra follows.
                extraNext = flags & 1 != 0
                pendingExtra = false
                continue
            }
            do {
                let request = try NetifTxRequest.decode(from: slot, at: 0)
                var bytes: [UInt8]?
                if let page = try? platform.grantMapper.map([GrantRef(request.gref)], from: frontendID, writable: false) {
                    if Int(request.offset) + Int(min(request.size, 4096)) <= pageSize {
                        bytes = page.view.bytes(at: Int(request.offset), length: Int(min(request.size, 4096)))
                    }
                    try? platform.grantMapper.unmap(page)
                }
                txSeen.append(SeenTxSlot(index: index, request: request, extraType: nil, problem: nil,
                                         idInFlight: txUnanswered.contains { $0.id == request.id }, bytes: bytes, first: !inPacket))
                if !inPacket { txPackets += 1 }
                inPacket = request.flags.contains(.moreData)
                txUnanswered.append((index, request.id))
                extraNext = request.flags.contains(.extraInfo)
            } catch {
                txSeen.append(SeenTxSlot(index: index, request: nil, extraType: nil, problem: "\(error)", idInFlight: false, bytes: nil))
                txUnanswered.append((index, slot.load(UInt16.self, at: 8)))
            }
        }
        pendingExtra = extraNext
        if flush || txUnanswered.count >= batch {
            for (_, id) in txUnanswered {
                NetifTxResponse(id: id ?? 0, status: id == nil ? .null : .okay).encode(into: ring.responseSlot(ring.responseProducerPrivate), at: 0)
                ring.responseProducerPrivate &+= 1
            }
            txUnanswered = []
            if ring.pushResponsesAndCheckNotify() { notifyFrontend() }
        }
        drainEvents()
        return consumed
    }

    /// Sends frames from the frontend's host side (`frame(i)` is the i-th) and serves tx
    /// until `count` packets (first slots) have been consumed since the call, answering in
    /// batches of `batch`. A TAP device drops what it cannot queue: the peer keeps at most
    /// 16 frames unseen, and sends on after 20 ms without a packet.
    func sendAndServe(count: Int, batch: Int = 1, frame: (Int) -> [UInt8]) async throws {
        let host = try userSide()
        let start = txPackets
        let deadline = ContinuousClock.now + Self.patience
        var sent = 0
        var lastProgress = ContinuousClock.now
        var seen = 0
        while txPackets - start < count {
            guard ContinuousClock.now < deadline else { throw PeerError.unusable("\(txPackets - start) of \(count) packets came on the tx ring within \(Self.patience) (\(sent) frames sent)") }
            let now = txPackets - start
            if now != seen { (seen, lastProgress) = (now, .now) }
            if ContinuousClock.now - lastProgress > .milliseconds(20) { (seen, lastProgress) = (sent, .now) }
            while sent - seen < 16 {
                try host.send(frame(sent))
                sent += 1
            }
            if try serveTx(batch: batch, flush: false) == 0 {
                _ = try serveTx(flush: true)
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        _ = try serveTx(flush: true)
    }

    func notifyFrontend() {
        if let events, let port = ports.first { try? events.notify(port) }
    }

    /// Takes and unmasks whatever the frontend signalled: the peer polls the rings.
    func drainEvents() {
        guard let events else { return }
        try? events.takePending(atMost: 64) { port throws(PlatformError) in try events.unmask(port) }
    }
}

/// Ethernet frames for the host side to send: broadcast, an experimental EtherType
/// (0x88B5), a payload that differs per frame.
func testFrame(_ index: Int, size: Int, seed: UInt64) -> [UInt8] {
    [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xB5] + pattern(size - 14, seed: seed &+ UInt64(index))
}
