import Glibc
import Netif
import SharedMemory
import XenPlatform
import XenRing

extension NetfrontPeer {
    func takeTxID() -> UInt16 {
        defer { nextTxID &+= 1 }
        return nextTxID
    }

    // MARK: frames

    /// The EtherType of the peer's own frames (IEEE local experimental), which no stack acts on.
    static let etherType: [UInt8] = [0x88, 0xB5]

    /// A frame of `size` bytes from the guest to the vif (`toGuest` false) or back, whose
    /// payload starts with a fresh 8-byte marker, so it is recognised among others.
    func frame(size: Int = 98, toGuest: Bool = false) -> [UInt8] {
        frameSeed &+= 0x9E37_79B9
        let vif: [UInt8] = [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        let header = (toGuest ? mac + vif : vif + mac) + Self.etherType
        return header + pattern(max(size - header.count, 8), seed: frameSeed)
    }

    /// Whether `frame` carries `sent`'s marker (the 8 bytes after the Ethernet header).
    static func same(_ frame: [UInt8], as sent: [UInt8]) -> Bool {
        frame.count >= 22 && sent.count >= 22 && frame[14 ..< 22] == sent[14 ..< 22]
    }

    // MARK: tx

    /// Writes `request` (its data copied to its page at its offset first, when given) into
    /// the next tx slot of `queue` without publishing it.
    func produceTx(_ request: NetifTxRequest, data bytes: [UInt8]? = nil, queue: Int = 0) throws {
        let rings = try rings()
        guard !rings.queues[queue].tx.isFull else { throw PeerError.unusable("tx ring \(queue) is full") }
        if let bytes, let page = data.refs.firstIndex(of: request.gref) {
            bytes.withUnsafeBytes { dataPage(page).copyBytes(from: $0, to: Int(request.offset)) }
        }
        try produceTxSlot(queue: queue) { request.encode(into: $0, at: 0) }
    }

    /// Writes the next tx slot of `queue` with `body`, unpublished.
    func produceTxSlot(queue: Int = 0, _ body: (SharedView) -> Void) throws {
        let rings = try rings()
        guard !rings.queues[queue].tx.isFull else { throw PeerError.unusable("tx ring \(queue) is full") }
        let index = rings.queues[queue].tx.requestProducerPrivate
        body(rings.queues[queue].tx.requestSlot(index))
        rings.queues[queue].tx.requestProducerPrivate = index &+ 1
    }

    func produceExtra(_ extra: NetifExtraInfo, queue: Int = 0) throws {
        try produceTxSlot(queue: queue) { extra.encode(into: $0, at: 0) }
    }

    /// Publishes the tx slots of `queue` and notifies.
    func pushTx(queue: Int = 0) throws {
        let rings = try rings()
        rings.queues[queue].tx.pushRequests()
        try rings.notify(rings.queues[queue].txPort)
    }

    /// The next `count` tx responses on `queue`, in ring order; fewer when the backend
    /// gives no more within `within` (or leaves Connected).
    func txResponses(_ count: Int, queue: Int = 0, within: Duration = patience) throws -> [NetifTxResponse] {
        let found = try txResponsesWaiting(count, queue: queue, within: txStalled != nil && within == Self.patience ? Self.refusalWindow : within)
        guard within == Self.patience else { return found }
        if !found.isEmpty {
            txStalled = nil
        } else if let txStalled {
            throw PeerError.knockOn("no tx response within \(Self.refusalWindow), and none since \(txStalled)")
        } else {
            txStalled = "\(currentClause) (no tx response within \(Self.patience))"
        }
        return found
    }

    func txResponsesWaiting(_ count: Int, queue: Int, within: Duration) throws -> [NetifTxResponse] {
        let rings = try rings()
        var found: [NetifTxResponse] = []
        let deadline = ContinuousClock.now + within
        while found.count < count {
            let producer: RingIndex
            do { producer = try rings.queues[queue].tx.checkedResponseProducer() } catch { throw PeerError.badResponse("tx: \(error)") }
            while rings.queues[queue].tx.responseConsumer != producer, found.count < count {
                let index = rings.queues[queue].tx.responseConsumer
                do { found.append(try NetifTxResponse.decode(from: rings.queues[queue].tx.responseSlot(index), at: 0)) } catch {
                    throw PeerError.badResponse("tx slot \(index): \(error)")
                }
                rings.queues[queue].tx.responseConsumer = index &+ 1
            }
            if found.count == count { break }
            let more: Bool
            do { more = try rings.queues[queue].tx.finalCheckForResponses() } catch { throw PeerError.badResponse("tx: \(error)") }
            if more { continue }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { break }
            try rings.sleep(left)
        }
        return found
    }

    /// Sends `frame` in one slot from tx page `page` at `offset`; returns its id.
    @discardableResult
    func sendFrame(_ frame: [UInt8], page: Int = 0, offset: UInt16 = 0, flags: NetifTxFlags = [], queue: Int = 0) throws -> UInt16 {
        let id = takeTxID()
        try produceTx(NetifTxRequest(gref: data.refs[page], offset: offset, flags: flags, id: id, size: UInt16(frame.count)),
                      data: frame, queue: queue)
        try pushTx(queue: queue)
        return id
    }

    /// The frame with `sent`'s marker read on the host side, if it came.
    func seenOnHost(_ sent: [UInt8], within: Duration = crossing) throws -> [UInt8]? {
        try host.receive(within: within) { Self.same($0, as: sent) }
    }

    // MARK: rx

    /// Writes an rx request for buffer `id` on data page `page`, unpublished.
    func postRx(id: UInt16, page: Int, gref: UInt32? = nil, queue: Int = 0) throws {
        let rings = try rings()
        guard !rings.queues[queue].rx.isFull else { throw PeerError.unusable("rx ring \(queue) is full") }
        let index = rings.queues[queue].rx.requestProducerPrivate
        NetifRxRequest(id: id, gref: gref ?? data.refs[page]).encode(into: rings.queues[queue].rx.requestSlot(index), at: 0)
        rings.queues[queue].rx.requestProducerPrivate = index &+ 1
        rings.queues[queue].posted[id] = page
    }

    /// Posts buffers 0..<8 of `queue` again where they are not posted (a check that
    /// posted few leaves the vif able to receive).
    func refillRx(queue: Int = 0) throws {
        let rings = try rings()
        let perQueue = Self.rxPages.count / max(rings.queues.count, 1)
        var posted = false
        for id in 0 ..< UInt16(min(8, perQueue)) where rings.queues[queue].posted[id] == nil && !rings.queues[queue].rx.isFull {
            try postRx(id: id, page: Self.rxPages.lowerBound + queue * perQueue + Int(id), queue: queue)
            posted = true
        }
        if posted { pushRx(queue: queue) }
    }

    func pushRx(queue: Int = 0) {
        guard let rings = connection else { return }
        rings.queues[queue].rx.pushRequests()
        try? rings.notify(rings.queues[queue].rxPort)
    }

    /// One packet as the rx ring gave it: the responses of its slots, the extras, the bytes.
    struct RxPacket {
        var responses: [NetifRxResponse] = []
        var extras: [NetifExtraInfo] = []
        var bytes: [UInt8] = []
        /// The first response's status when negative (an error answered in the slot).
        var error: Int16? { responses.first.flatMap { $0.status < 0 ? $0.status : nil } }
    }

    /// rx packets taken off `queue` until one satisfies `until` or `within` runs out;
    /// every packet taken, in order. Consumed buffers are posted again unless `repost` is false.
    func rxPackets(queue: Int = 0, within: Duration = crossing, repost: Bool = true,
                   until: ([RxPacket]) -> Bool) throws -> [RxPacket] {
        let rings = try rings()
        var packets: [RxPacket] = []
        var current: RxPacket?
        var extraExpected = false
        let deadline = ContinuousClock.now + within
        while !until(packets) {
            let producer: RingIndex
            do { producer = try rings.queues[queue].rx.checkedResponseProducer() } catch { throw PeerError.badResponse("rx: \(error)") }
            var reposted = false
            while rings.queues[queue].rx.responseConsumer != producer {
                let index = rings.queues[queue].rx.responseConsumer
                let slot = rings.queues[queue].rx.responseSlot(index)
                rings.queues[queue].rx.responseConsumer = index &+ 1
                if extraExpected {
                    let extra: NetifExtraInfo
                    do { extra = try NetifExtraInfo.decode(from: slot, at: 0) } catch { throw PeerError.badResponse("rx extra slot \(index): \(error)") }
                    current?.extras.append(extra)
                    extraExpected = extra.flags.contains(.more)
                    if !extraExpected, let packet = current, packet.responses.last.map({ !$0.flags.contains(.moreData) }) ?? true {
                        packets.append(packet)
                        current = nil
                    }
                    continue
                }
                rxFlagsSeen.insert(slot.load(UInt16.self, at: 4))
                let response: NetifRxResponse
                do { response = try NetifRxResponse.decode(from: slot, at: 0) } catch {
                    rxDecodeErrors.append("slot \(index): \(error)")
                    throw PeerError.badResponse("rx slot \(index): \(error)")
                }
                var packet = current ?? RxPacket()
                packet.responses.append(response)
                if let page = rings.queues[queue].posted.removeValue(forKey: response.id) {
                    if let size = response.size {
                        packet.bytes += dataPage(page).bytes(at: Int(response.offset), length: size)
                    }
                    if repost {
                        try postRx(id: response.id, page: page, queue: queue)
                        reposted = true
                    }
                } else {
                    throw PeerError.badResponse("rx slot \(index) answers buffer id \(response.id), which is not posted")
                }
                extraExpected = response.flags.contains(.extraInfo)
                if extraExpected || response.flags.contains(.moreData) {
                    current = packet
                } else {
                    packets.append(packet)
                    current = nil
                }
            }
            if reposted { pushRx(queue: queue) }
            if until(packets) { break }
            let more: Bool
            do { more = try rings.queues[queue].rx.finalCheckForResponses() } catch { throw PeerError.badResponse("rx: \(error)") }
            if more { continue }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { break }
            try rings.sleep(left)
        }
        return packets
    }

    /// Writes `frame` on the host side and takes rx packets until one carries it.
    func deliver(_ frame: [UInt8], queue: Int = 0, within: Duration = crossing) throws -> (packet: RxPacket?, all: [RxPacket]) {
        try host.send(frame)
        let all = try rxPackets(queue: queue, within: within) { $0.contains { Self.same($0.bytes, as: frame) } }
        return (all.first { Self.same($0.bytes, as: frame) }, all)
    }

    // MARK: probes

    /// A frame each way: nil when the guest's frame reached the host and the host's the guest.
    func probe() async -> String? {
        do {
            let out = frame()
            let id = try sendFrame(out)
            let responses = try txResponses(1)
            guard responses == [NetifTxResponse(id: id, status: .okay)] else {
                return "the probe frame was answered \(responses) (backend \(await describeBackendState()))"
            }
            guard try seenOnHost(out) != nil else { return "the probe frame did not reach the host side" }
            try refillRx()
            let back = frame(toGuest: true)
            guard try deliver(back).packet != nil else { return "a frame from the host did not reach the guest" }
            return nil
        } catch {
            return "the probe: \(error)"
        }
    }

    func servedAfterStartOver() async -> String? {
        do {
            try await startOver()
            try await connect()
        } catch {
            return "after starting over: \(error)"
        }
        return await probe()
    }

    // MARK: control ring

    /// Sends `request` (its id replaced by the next) on the control ring and waits for its answer.
    func control(_ type: UInt16, data: (UInt32, UInt32, UInt32) = (0, 0, 0)) throws -> (NetifCtrlRequest, NetifCtrlResponse) {
        let rings = try rings()
        guard var control = rings.control else { throw PeerError.unusable("no control ring published") }
        let request = NetifCtrlRequest(id: nextCtrlID, type: type, data: data)
        nextCtrlID &+= 1
        let index = control.ring.requestProducerPrivate
        request.encode(into: control.ring.requestSlot(index), at: 0)
        control.ring.requestProducerPrivate = index &+ 1
        control.ring.pushRequests()
        rings.control = control
        try rings.notify(control.port)
        let deadline = ContinuousClock.now + Self.patience
        while true {
            let producer: RingIndex
            do { producer = try control.ring.checkedResponseProducer() } catch { throw PeerError.badResponse("ctrl: \(error)") }
            if control.ring.responseConsumer != producer {
                let at = control.ring.responseConsumer
                let response: NetifCtrlResponse
                do { response = try NetifCtrlResponse.decode(from: control.ring.responseSlot(at), at: 0) } catch {
                    throw PeerError.badResponse("ctrl slot \(at): \(error)")
                }
                control.ring.responseConsumer = at &+ 1
                rings.control = control
                return (request, response)
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw PeerError.noResponse(ids: [UInt64(request.id)], seconds: 15, backendState: "?") }
            try rings.sleep(left)
        }
    }
}
