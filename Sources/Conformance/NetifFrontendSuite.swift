import Netif
import SharedMemory
import XenBus
import XenPlatform

/// The checks a scripted netback runs against a net frontend: the frontend-role clauses of
/// xenbus.tsv, ring.tsv and netif-frontend.tsv that the handshake and the posted rx
/// buffers show. Each check brings the device to the state it needs, so any subset runs alone.
public enum NetifFrontendSuite {
    public typealias Check = ClauseCheck<NetbackPeer>

    /// Every check written so far.
    public static var checks: [Check] { xenbus + ring + keys + tx + rx + lies }

    static let xenbus: [Check] = FrontendXenbusChecks<NetbackPeer>.checks(connectsAtInitWait: true, ringKeys: NetbackPeer.ringKeys)

    /// A handshake offering `features` on top of the honest ones, up to the frontend's
    /// Initialised; its nodes then.
    static func offered(_ peer: NetbackPeer, _ features: [String: String]) async throws -> [String: String] {
        try await peer.startOver()
        try await peer.offer(NetbackPeer.honestFeatures.merging(features) { $1 })
        return peer.atInitialised
    }

    static let ring: [Check] = [
        Check("RING-015") { peer in
            try await readyForPackets(peer)
            try await peer.sendAndServe(count: 4) { testFrame($0, size: 100, seed: 15) }
            guard let shared = peer.txRing?.shared else { return .fail(peer.mapProblem ?? "no tx ring") }
            let deadline = ContinuousClock.now + NetbackPeer.patience
            while ContinuousClock.now < deadline {
                let event = shared.loadResponseEvent(), producer = shared.loadResponseProducer()
                if event == producer &+ 1 { return .pass("tx idle after its responses: rsp_event \(event), rsp_prod \(producer)") }
                try await Task.sleep(for: .milliseconds(2))
            }
            return .fail("tx idle after its responses: rsp_event \(shared.loadResponseEvent()), rsp_prod \(shared.loadResponseProducer())")
        },
        Check("RING-016") { peer in
            try await readyForPackets(peer)
            guard let ring = peer.txRing else { return .fail("no tx ring") }
            ring.shared.storeResponseProducer(ring.responseProducerPrivate &+ ring.size)
            peer.notifyFrontend()
            let states = try await peer.watchFrontend()
            if let problem = await stillServes(peer, seed: 16) { return .fail("tx rsp_prod a ring ahead: \(problem)") }
            return .pass("tx rsp_prod a ring ahead: the frontend read \(states.joined(separator: " -> ")); \(servedAgain(peer))")
        },
        Check("RING-017") { peer in
            try await readyForPackets(peer)
            guard let tx = peer.tx, let rx = peer.rx else { return .fail("no rings") }
            for (page, seed) in [(tx, UInt64(0x17)), (rx, 0x71)] {
                pattern(pageSize, seed: seed).withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
            }
            peer.notifyFrontend()
            let states = try await peer.watchFrontend()
            if let problem = await stillServes(peer, seed: 17) { return .fail("both ring pages overwritten with noise: \(problem)") }
            return .pass("both ring pages overwritten with noise: the frontend read \(states.joined(separator: " -> ")); \(servedAgain(peer))")
        },
        Check("RING-018") { peer in
            try await readyForPackets(peer)
            for _ in 0 ..< 10000 { peer.notifyFrontend() }
            try await peer.sendAndServe(count: 1) { testFrame($0, size: 100, seed: 18) }
            let frame = testFrame(1, size: 100, seed: 18)
            try await peer.deliver(frame)
            if let problem = try arrives(peer, frame) { return .fail("after 10000 notifications: \(problem)") }
            return .pass("after 10000 notifications with nothing published, a frame went out on tx and one came in on rx")
        },
        Check("RING-012") { peer in
            try await peer.startOver()
            try await peer.offer()
            let (tx, rx) = peer.headersAtMap
            guard tx.count == 4, rx.count == 4 else { return .fail(peer.mapProblem ?? "rings not mapped") }
            // The rx ring may already hold posted buffers: its req_prod is the frontend's to move.
            return .expect(tx == [0, 1, 0, 1] && rx[1 ... 3] == [1, 0, 1],
                           "at Initialised: tx req_prod \(tx[0]) req_event \(tx[1]) rsp_prod \(tx[2]) rsp_event \(tx[3]); rx req_prod \(rx[0]) req_event \(rx[1]) rsp_prod \(rx[2]) rsp_event \(rx[3])")
        },
    ]

    static let keys: [Check] = [
        Check("NETIF-FE-001") { peer in
            try await peer.startOver()
            try await peer.offer()
            let value = peer.atInitialised[NetifFrontendFeatures.Key.requestRxCopy]
            return .expect(value == "1", "request-rx-copy reads \(value ?? "absent") at Initialised")
        },
        Check("NETIF-FE-002") { peer in
            try await peer.startOver()
            try await peer.offer()
            let (rings, _) = NetbackPeer.ringKeys(peer.atInitialised)
            return .expect(peer.isAttached, "tx/rx-ring-ref \(rings ?? "absent"): \(peer.mapProblem ?? "both map")")
        },
        Check("NETIF-FE-003") { peer in
            try await peer.startOver()
            try await peer.offer()
            let (_, port) = NetbackPeer.ringKeys(peer.atInitialised)
            return .expect(port != nil && peer.mapProblem == nil && !peer.ports.isEmpty,
                           "event channel \(port ?? "absent"): \(peer.mapProblem ?? "bound")")
        },
        Check("NETIF-FE-004") { peer in
            let unoffered = try await offered(peer, [NetifBackendFeatures.Key.splitEventChannels: "0"])
            let split = { (nodes: [String: String]) in
                nodes.keys.contains { $0.hasSuffix(NetifConnectionKeys.Key.eventChannelTx) || $0.hasSuffix(NetifConnectionKeys.Key.eventChannelRx) }
            }
            guard !split(unoffered) else { return .fail("split channels not offered, yet event-channel-tx/-rx were written") }
            if peer.takesDeviceOnce {
                try await peer.connect()
                return .pass("not offered: one shared event channel, connected; the offered half needs a second handshake, not tried (the frontend takes each device once)")
            }
            let offer = try await offered(peer, [NetifBackendFeatures.Key.splitEventChannels: "1"])
            try await peer.connect()
            let used = split(offer) ? "split" : "one shared"
            return .pass("not offered: one shared event channel; offered: \(used), connected")
        },
        Check("NETIF-FE-005") { peer in
            let nodes = try await offered(peer, [NetifBackendFeatures.Key.maxQueues: "4"])
            try await peer.startOver()
            guard let raw = nodes[NetifFrontendFeatures.Key.queueCount] else {
                return .expect(nodes[NetifConnectionKeys.Key.txRingRef] != nil, "multi-queue-num-queues absent: one queue on the top-level keys")
            }
            guard let count = Int(raw), (1 ... 4).contains(count) else { return .fail("multi-queue-num-queues reads \(raw) with 4 offered") }
            guard count > 1 else { return .expect(nodes[NetifConnectionKeys.Key.txRingRef] != nil, "multi-queue-num-queues 1, top-level keys") }
            let missing = (0 ..< count).filter { queue in
                [NetifConnectionKeys.Key.txRingRef, NetifConnectionKeys.Key.rxRingRef].contains { nodes["queue-\(queue)/\($0)"] == nil }
                    || (nodes["queue-\(queue)/event-channel"] ?? nodes["queue-\(queue)/event-channel-tx"]) == nil
            }
            return .expect(missing.isEmpty, "multi-queue-num-queues \(count)\(missing.isEmpty ? ", each queue-N with its rings and event channel" : "; queue-\(missing[0]) lacks its keys")")
        },
        Check("NETIF-FE-006") { peer in
            try await peer.ensureConnected()
            guard let rx = peer.rx else { return .fail(peer.mapProblem ?? "rx ring not mapped") }
            let shared = rx.view
            let deadline = ContinuousClock.now + NetbackPeer.patience
            var posted: UInt32 = 0
            while posted == 0, ContinuousClock.now < deadline {
                posted = shared.atomicLoad32(at: 0, ordering: .acquiring)
                if posted == 0 { try await Task.sleep(for: .milliseconds(2)) }
            }
            guard posted > 0 else { return .fail("no rx buffer posted within \(NetbackPeer.patience) of Connected") }
            let slots = (pageSize - 64) / NetifLayout.rxSlotSize
            let size = 1 << (Int.bitWidth - 1 - slots.leadingZeroBitCount)
            var ids = Set<UInt16>()
            for index in 0 ..< min(Int(posted), size) {
                let request = try NetifRxRequest.decode(from: shared, at: 64 + index * NetifLayout.rxSlotSize)
                guard ids.insert(request.id).inserted else { return .fail("rx id \(request.id) posted twice among \(posted) outstanding buffers") }
                do { try peer.platform.grantMapper.unmap(try peer.platform.grantMapper.map([GrantRef(request.gref)], from: peer.frontendID, writable: true)) } catch {
                    return .fail("rx buffer \(index) (id \(request.id), gref \(request.gref)) does not map writable: \(error)")
                }
            }
            return .pass("\(posted) rx buffers posted, ids distinct, each gref maps writable")
        },
        Check("NETIF-FE-015") { peer in
            let nodes = try await offered(peer, [NetifBackendFeatures.Key.controlRing: "1"])
            let ref = nodes[NetifConnectionKeys.Key.ctrlRingRef], port = nodes[NetifConnectionKeys.Key.eventChannelCtrl]
            try await peer.startOver()
            return .expect((ref == nil) == (port == nil), "with feature-ctrl-ring offered: ctrl-ring-ref \(ref ?? "absent"), event-channel-ctrl \(port ?? "absent")")
        },
        Check("NETIF-FE-016") { peer in
            try await peer.ensureConnected()
            let prefix = peer.queuePrefix
            let refs = [NetifConnectionKeys.Key.txRingRef, NetifConnectionKeys.Key.rxRingRef].compactMap { peer.atInitialised[prefix + $0].flatMap(GrantRef.init) }
            try await peer.writeState(.closing)
            let state = try await peer.waitForFrontend([.closed])
            // The frontend cannot end a grant the peer still maps: let go, then look.
            peer.detach()
            let deadline = ContinuousClock.now + NetbackPeer.patience
            var live = refs
            while !live.isEmpty, ContinuousClock.now < deadline {
                live = live.filter { ref in
                    guard let mapping = try? peer.platform.grantMapper.map([ref], from: peer.frontendID, writable: false) else { return false }
                    try? peer.platform.grantMapper.unmap(mapping)
                    return true
                }
                if !live.isEmpty { try await Task.sleep(for: .milliseconds(5)) }
            }
            try await peer.startOver()
            return .expect(live.isEmpty, "backend Closing: the frontend read \(state); ring grants \(refs.map(String.init).joined(separator: ", ")) \(live.isEmpty ? "ended" : "still map: \(live)")")
        },
        Check("NETIF-FE-025") { peer in
            try await peer.startOver()
            let features = NetbackPeer.honestFeatures.merging([NetifBackendFeatures.Key.maxQueues: "x"]) { $1 }
            try await peer.writeState(.initWait, keys: features)
            // Watched, not waited for: a frontend still Closed from the start over has not answered yet.
            let states = try await peer.watchFrontend()
            var seen = "the frontend read \(states.joined(separator: " -> "))"
            if states.contains("Connected") || states.contains("Initialised") {
                let nodes = try await peer.nodesWithQueues()
                let queues = nodes[NetifFrontendFeatures.Key.queueCount]
                guard queues == nil || queues == "1" else { return .fail("with multi-queue-max-queues 'x': multi-queue-num-queues \(queues!)") }
                seen += " with one queue (multi-queue-num-queues \(queues ?? "absent"))"
            }
            if peer.takesDeviceOnce { return .pass("with multi-queue-max-queues 'x': \(seen); no second handshake tried (the frontend takes each device once)") }
            try await FrontendXenbusChecks<NetbackPeer>.freshHandshake(peer)
            return .pass("with multi-queue-max-queues 'x': \(seen); connected to an honest backend after a start over")
        },
    ]

    /// Connected, the host side bound to the frontend's user side and running, the tx
    /// slots seen forgotten.
    static func readyForPackets(_ peer: NetbackPeer) async throws {
        let host = try peer.userSide()
        try await peer.ensureConnected()
        try host.attach(peer.tap!)
        guard try await host.waitRunning(within: NetbackPeer.patience) else { throw PeerError.unusable("the frontend's \(peer.tap!) never ran") }
        _ = try peer.serveTx()
        peer.forgetTx()
    }

    /// Sends `frames` through the frontend and judges every tx slot that came.
    static func underTx(_ id: String, packets: Int, batch: Int = 1, _ what: String, frame: @escaping @Sendable (Int) -> [UInt8],
                        _ violates: @escaping @Sendable (SeenTxSlot, NetbackPeer) -> String?) -> Check {
        Check(id) { peer in
            try await readyForPackets(peer)
            try await peer.sendAndServe(count: packets, batch: batch, frame: frame)
            let bad = peer.txSeen.compactMap { slot in violates(slot, peer).map { "slot \(slot.index): \($0)" } }
            return .expect(bad.isEmpty, bad.isEmpty ? "\(peer.txSeen.count) tx slots for \(peer.txPackets) packets, \(what)" : bad.prefix(3).joined(separator: "; "))
        }
    }

    static let tx: [Check] = [
        underTx("NETIF-FE-007", packets: 8, "each within its page", frame: { testFrame($0, size: $0 % 2 == 0 ? 60 : 1400, seed: 7) }) { slot, _ in
            if let problem = slot.problem { return problem }
            guard let request = slot.request else { return nil }
            // A chain's first slot carries the packet's size; every other slot its own.
            let inPage = slot.first && request.flags.contains(.moreData) ? Int(request.offset) < pageSize
                : Int(request.offset) + Int(request.size) <= pageSize
            if !inPage { return "offset \(request.offset) size \(request.size) passes the page" }
            return nil
        },
        underTx("NETIF-FE-008", packets: 8, "more_data clear on all (feature-sg not offered)", frame: { testFrame($0, size: 1000, seed: 8) }) { slot, _ in
            slot.request?.flags.contains(.moreData) == true ? "more_data set" : nil
        },
        underTx("NETIF-FE-009", packets: 8, "no GSO extra (feature-gso-tcpv4 not offered)", frame: { testFrame($0, size: 1400, seed: 9) }) { slot, _ in
            // XEN_NETIF_EXTRA_TYPE_GSO is 1.
            slot.extraType == 1 ? "a GSO extra" : nil
        },
        underTx("NETIF-FE-013", packets: 1000, batch: 8, "answered 8 at a time, no id reused while its request was unanswered",
                frame: { testFrame($0, size: 200, seed: 13) }) { slot, _ in
            slot.idInFlight ? "id \(slot.request?.id ?? 0) reused while unanswered" : nil
        },
    ]

    /// Nil when `frame` reaches the frontend's host side within the patience, else why not.
    static func arrives(_ peer: NetbackPeer, _ frame: [UInt8]) throws -> String? {
        let got = try peer.userSide().receive(within: NetbackPeer.patience) { $0 == frame }
        return got == nil ? "the \(frame.count)-byte frame never reached the frontend's user side" : nil
    }

    /// Nil when, on a fresh connection, a frame delivered reaches the host side.
    /// What the evidence says of the connection after a lie: served afresh, or not asked.
    static func servedAgain(_ peer: NetbackPeer) -> String {
        peer.takesDeviceOnce ? "no fresh connection tried (the frontend takes each device once)" : "a fresh connection serves"
    }

    static func stillServes(_ peer: NetbackPeer, seed: UInt64) async -> String? {
        // A frontend that takes each device once cannot be asked for a fresh connection.
        if peer.takesDeviceOnce { return nil }
        do {
            try await FrontendXenbusChecks<NetbackPeer>.freshHandshake(peer)
            try await readyForPackets(peer)
            let frame = testFrame(0, size: 300, seed: seed)
            try await peer.deliver(frame)
            return try arrives(peer, frame).map { "afterwards: \($0)" }
        } catch {
            return "afterwards: \(error)"
        }
    }

    static let rx: [Check] = [
        Check("NETIF-FE-010") { peer in
            try await readyForPackets(peer)
            for (index, size) in [60, 500, 1514].enumerated() {
                let frame = testFrame(index, size: size, seed: 10)
                try await peer.deliver(frame, flags: .dataValidated)
                if let problem = try arrives(peer, frame) { return .fail(problem) }
            }
            return .pass("frames of 60, 500 and 1514 bytes placed in rx buffers reached the frontend's user side byte for byte")
        },
        Check("NETIF-FE-011") { peer in
            try await readyForPackets(peer)
            guard peer.atInitialised[NetifFrontendFeatures.Key.scatterGather] == "1" else {
                return .notApplicable("the frontend does not ask for feature-sg, so no frame may span buffers")
            }
            let frame = testFrame(0, size: 3000, seed: 11)
            let responses = try await peer.deliver(frame, piece: 1500, flags: .dataValidated)
            if let problem = try arrives(peer, frame) { return .fail("\(problem) (sent over \(responses.count) buffers)") }
            return .pass("a 3000-byte frame over \(responses.count) buffers with more_data reached the frontend's user side as one frame")
        },
        Check("NETIF-FE-014") { peer in
            try await readyForPackets(peer)
            var least = Int.max
            for index in 0 ..< 1000 {
                try await peer.deliver(testFrame(index, size: 100, seed: 14))
                if index % 50 == 49, let ring = peer.rxRing {
                    // Let the frontend catch up, then see how far ahead it posts.
                    try await Task.sleep(for: .milliseconds(5))
                    least = min(least, Int(ring.shared.loadRequestProducer() &- ring.shared.loadResponseProducer()))
                }
            }
            return .expect(least >= 16, "over 1000 frames delivered, rx req_prod stayed at least \(least) ahead of rsp_prod")
        },
    ]

    /// One rx lie: `lie` writes it on a posted buffer (the frame `frame` in it); no frame
    /// of it may reach the host side, and the frontend must serve a fresh connection.
    static func rxLie(_ id: String, _ what: String, _ lie: @escaping @Sendable (NetbackPeer, (id: UInt16, gref: UInt32), [UInt8]) throws -> Void) -> Check {
        Check(id) { peer in
            try await readyForPackets(peer)
            let frame = testFrame(0, size: 200, seed: UInt64(id.utf8.reduce(0) { $0 &+ Int($1) }))
            let deadline = ContinuousClock.now + NetbackPeer.patience
            var buffer = try peer.takeRxBuffer()
            while buffer == nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(1))
                buffer = try peer.takeRxBuffer()
            }
            guard let buffer else { return .fail("no rx buffer posted") }
            try peer.fill(buffer.gref, with: frame)
            try lie(peer, buffer, frame)
            let leaked = try peer.userSide().receive(within: NetbackPeer.refusalWindow) { $0 == frame }
            let states = try await peer.watchFrontend(for: .milliseconds(200))
            guard leaked == nil else { return .fail("\(what): the frame reached the frontend's user side") }
            if let problem = await stillServes(peer, seed: 99) { return .fail("\(what): no frame leaked, but \(problem)") }
            return .pass("\(what): no frame reached the frontend's user side (frontend: \(states.joined(separator: " -> "))); \(servedAgain(peer))")
        }
    }

    static let lies: [Check] = [
        rxLie("NETIF-FE-017", "an rx response with an id never posted") { peer, buffer, frame in
            try peer.respondRx([NetifRxResponse(id: buffer.id ^ 0x4000, offset: 0, flags: [], size: UInt16(frame.count))])
        },
        rxLie("NETIF-FE-018", "an rx response with offset 4000, size 200") { peer, buffer, frame in
            try peer.respondRx([NetifRxResponse(id: buffer.id, offset: 4000, flags: [], size: 200)])
        },
        Check("NETIF-FE-019") { peer in
            try await readyForPackets(peer)
            guard var ring = peer.txRing else { return .fail("no tx ring") }
            NetifTxResponse(id: 0x7FF0, status: .okay).encode(into: ring.responseSlot(ring.responseProducerPrivate), at: 0)
            ring.responseProducerPrivate &+= 1
            peer.txRing = ring
            _ = ring.pushResponsesAndCheckNotify()
            peer.notifyFrontend()
            let states = try await peer.watchFrontend()
            if let problem = await stillServes(peer, seed: 19) { return .fail("a tx response for an id never sent: \(problem)") }
            return .pass("a tx response for an id never sent: the frontend read \(states.joined(separator: " -> ")); \(servedAgain(peer))")
        },
        rxLie("NETIF-FE-020", "rx rsp_prod set a ring ahead") { peer, buffer, frame in
            guard let ring = peer.rxRing else { throw PeerError.unusable("no rx ring") }
            ring.shared.storeResponseProducer(ring.responseProducerPrivate &+ ring.size)
            peer.notifyFrontend()
        },
        rxLie("NETIF-FE-021", "an rx extra slot of type 9") { peer, buffer, frame in
            try peer.respondRx([NetifRxResponse(id: buffer.id, offset: 0, flags: .extraInfo, size: UInt16(frame.count))], extras: [0: [9, 0]])
        },
        rxLie("NETIF-FE-022", "more_data on every rx response") { peer, buffer, frame in
            var responses = [NetifRxResponse(id: buffer.id, offset: 0, flags: .moreData, size: UInt16(frame.count))]
            while let next = try peer.takeRxBuffer() {
                try peer.fill(next.gref, with: frame)
                responses.append(NetifRxResponse(id: next.id, offset: 0, flags: .moreData, size: UInt16(frame.count)))
            }
            try peer.respondRx(responses)
        },
        rxLie("NETIF-FE-023", "an rx response with status -77") { peer, buffer, _ in
            try peer.respondRx([NetifRxResponse(id: buffer.id, offset: 0, flags: [], status: -77)])
        },
    ]
}
