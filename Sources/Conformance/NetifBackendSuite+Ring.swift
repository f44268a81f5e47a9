import Glibc
import Netif
import SharedMemory
import XenBus
import XenPlatform
import XenRing

extension NetifBackendSuite {
    /// A ring's worth of one-slot frames on the tx ring at once, after `warmUp` probes so
    /// the indices are not at 0, then one more: every id answered once, OKAY.
    static func fillTxRing(_ peer: NetfrontPeer, warmUp: Int = 5) async throws -> String? {
        for _ in 0 ..< warmUp { if let problem = await peer.probe() { return "warming up: \(problem)" } }
        let rings = try peer.rings()
        let size = Int(rings.queues[0].tx.size)
        var expected: [NetifTxResponse] = []
        for slot in 0 ..< size {
            let frame = peer.frame()
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[slot % NetfrontPeer.txPages.count], offset: 0, flags: [], id: id,
                                              size: UInt16(frame.count)), data: slot < NetfrontPeer.txPages.count ? frame : nil)
            expected.append(NetifTxResponse(id: id, status: .okay))
        }
        try peer.pushTx()
        let responses = try peer.txResponses(size)
        guard responses == expected else {
            return "\(responses.count) responses to \(size) slots, \(responses.filter { $0.status != .okay }.count) not OKAY"
                + (responses.count == size ? ", ids \(responses.map(\.id) == expected.map(\.id) ? "in order" : "out of order")" : "")
        }
        peer.host.drain()
        if let problem = await peer.probe() { return "after the batch: \(problem)" }
        return nil
    }

    /// After a ring lie: no response for the bogus slots, and served after a start over.
    static func afterTxRingLie(_ peer: NetfrontPeer, shared: SharedRing, before: RingIndex, lie: String) async -> ClauseVerdict {
        let states = (try? await peer.watchBackend()) ?? []
        let after = shared.loadResponseProducer()
        guard after == before else { return .fail("\(lie): tx rsp_prod moved from \(before) to \(after)") }
        if let problem = await peer.servedAfterStartOver() { return .fail("\(lie): \(problem)") }
        return .pass("\(lie): tx rsp_prod stayed \(before), backend read \(states.joined(separator: " -> ")); served again after a start over")
    }

    // MARK: ring.tsv, on the tx ring

    static let ring: [Check] = [
        Check("RING-001") { peer in
            try await peer.startOver(force: true)
            try await peer.connect()
            let rings = try peer.rings()
            let frame = peer.frame()
            let id = try peer.sendFrame(frame)
            let responses = try peer.txResponses(1)
            let raw = try NetifTxResponse.decode(from: rings.queues[0].txPages.view, at: SharedRing.Header.size)
            return .expect(responses == [NetifTxResponse(id: id, status: .okay)] && raw.id == id,
                           "the first tx request, at byte 64, answered \(describe(responses)); byte 64 of the page holds the response to id \(raw.id)")
        },
        connected("RING-002") { peer in
            let size = try peer.rings().queues[0].tx.size
            if let problem = try await fillTxRing(peer) { return .fail(problem) }
            return .pass("a tx ring of \(size) slots: \(size) frames at once from index 5 and one past the wrap answered OKAY")
        },
        connected("RING-003") { peer in
            let rings = try peer.rings()
            let shared = rings.queues[0].tx.shared
            let index = rings.queues[0].tx.requestProducerPrivate
            let first = peer.frame(), second = peer.frame()
            let firstID = peer.takeTxID(), secondID = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [], id: firstID, size: UInt16(first.count)), data: first)
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[1], offset: 0, flags: [], id: secondID, size: UInt16(second.count)), data: second)
            // Only the first is published.
            shared.storeRequestProducer(index &+ 1)
            try rings.notify(rings.queues[0].txPort)
            let answered = try peer.txResponses(1)
            try await Task.sleep(for: .milliseconds(200))
            let published = shared.loadResponseProducer() &- index
            guard answered == [NetifTxResponse(id: firstID, status: .okay)], published == 1 else {
                return .fail("published 1 of 2: answered \(describe(answered)), \(published) responses published")
            }
            try peer.pushTx()
            let late = try peer.txResponses(1)
            return .expect(late == [NetifTxResponse(id: secondID, status: .okay)],
                           "the unpublished slot stayed unanswered 200 ms after the published one; once published it was answered \(describe(late))")
        },
        connected("RING-004") { peer in
            let rings = try peer.rings()
            try rings.channel.takePending(atMost: 64) { [channel = rings.channel] port throws(PlatformError) in try channel.unmask(port) }
            let frame = peer.frame()
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [], id: id, size: UInt16(frame.count)), data: frame)
            rings.queues[0].tx.shared.storeResponseEvent(rings.queues[0].tx.responseConsumer &+ 1)
            memoryFence(.sequentiallyConsistent)
            try peer.pushTx()
            let window = peer.txStalled == nil ? NetfrontPeer.patience : NetfrontPeer.refusalWindow
            guard try waitReadable(rings.channel.fileDescriptor, within: window) else {
                return .fail("no event within \(window) with tx rsp_event = rsp_cons + 1\(peer.txStalled.map { " (knock-on: no tx response since \($0))" } ?? "")")
            }
            return .pass("woken by an event for the tx response (answered \(describe(try peer.txResponses(1))))")
        },
        connected("RING-005") { peer in
            if let problem = await peer.probe() { return .fail(problem) }
            let shared = try peer.rings().queues[0].tx.shared
            let deadline = ContinuousClock.now + NetfrontPeer.patience
            while true {
                let (produced, event) = (shared.loadRequestProducer(), shared.loadRequestEvent())
                if event == produced &+ 1 { return .pass("idle backend: tx req_event \(event) = req_prod \(produced) + 1") }
                if ContinuousClock.now > deadline { return .fail("idle backend: tx req_event \(event), req_prod \(produced)") }
                try await Task.sleep(for: .milliseconds(5))
            }
        },
        connected("RING-006") { peer in
            if let problem = try await fillTxRing(peer, warmUp: 1) { return .fail(problem) }
            let shared = try peer.rings().queues[0].tx.shared
            let (req, rsp) = (shared.loadRequestProducer(), shared.loadResponseProducer())
            return .expect(req == rsp, "a tx ring's worth answered, each id once; rsp_prod \(rsp) = req_prod \(req)")
        },
        connected("RING-007") { peer in
            let rings = try peer.rings()
            let shared = rings.queues[0].tx.shared
            let before = shared.loadResponseProducer()
            shared.storeRequestProducer(before &+ shared.size &+ 1)
            try rings.notify(rings.queues[0].txPort)
            return await afterTxRingLie(peer, shared: shared, before: before, lie: "tx req_prod set \(shared.size + 1) past rsp_prod")
        },
        connected("RING-008") { peer in
            for _ in 0 ..< 4 { if let problem = await peer.probe() { return .fail(problem) } }
            let rings = try peer.rings()
            let shared = rings.queues[0].tx.shared
            let before = shared.loadResponseProducer()
            shared.storeRequestProducer(before &- 3)
            try rings.notify(rings.queues[0].txPort)
            return await afterTxRingLie(peer, shared: shared, before: before, lie: "tx req_prod moved 3 behind the consumed requests")
        },
        connected("RING-009") { peer in
            let rings = try peer.rings()
            let page = rings.queues[0].txPages.view
            pattern(page.count, seed: 0x5C1F).withUnsafeBytes { page.copyBytes(from: $0, to: 0) }
            try rings.notify(rings.queues[0].txPort)
            let states = try await peer.watchBackend()
            if let problem = await peer.servedAfterStartOver() { return .fail("after the scribble (states \(states)): \(problem)") }
            return .pass("after the tx ring page was scribbled the backend read \(states.joined(separator: " -> ")); served again after a start over")
        },
        connected("RING-010") { peer in
            let rings = try peer.rings()
            for _ in 0 ..< 10_000 { try rings.notify(rings.queues[0].txPort) }
            return await stillServing(peer, "10000 notifications on the tx port with nothing published")
        },
    ]

    // MARK: xenbus.tsv, the rest that fit a vif

    /// A fatal key error (no tx-ring-ref) after a start over; the states the backend read.
    static func fatalKeyError(_ peer: NetfrontPeer) async throws -> [String] {
        try await peer.startOver()
        try await peer.publish(tampered { $0[NetifConnectionKeys.Key.txRingRef] = nil })
        return try await peer.watchBackend()
    }

    static let moreXenbus: [Check] = [
        connected("XENBUS-001") { peer in
            let seen = peer.stateValuesSeen.sorted()
            let bad = seen.filter { value in !(1 ... 3).contains(value.count) || UInt8(value).map { $0 > 8 } ?? true }
            return .expect(bad.isEmpty && !seen.isEmpty, "backend state values read over the run so far: \(seen)")
        },
        Check("XENBUS-002") { peer in
            try await peer.startOver(force: true)
            let features = peer.atInitWait.filter { $0.key.hasPrefix("feature-") }
            try await peer.connect()
            let differing = features.keys.filter { features[$0] != peer.atConnected[$0] }.sorted()
            return .expect(!features.isEmpty && differing.isEmpty && features["feature-rx-copy"] != nil,
                           "at the first InitWait: \(features.keys.sorted()); different at Connected: \(differing)")
        },
        Check("XENBUS-008") { peer in
            try await peer.ensureConnected()
            try await peer.startOver(force: true)
            try await peer.connect()
            if let problem = await peer.probe() { return .fail("on the second handshake's rings: \(problem)") }
            return .pass("on the second handshake's rings a frame crossed each way")
        },
        Check("XENBUS-009") { peer in
            guard peer.platform.grantTable.reportsStillMapped else { return .notApplicable(stillMappedUnseen) }
            try await peer.ensureConnected()
            try await peer.writeState(.closing)
            try await peer.waitForBackend([.closing, .closed])
            try await peer.writeState(.closed)
            try await peer.waitForBackend([.closed])
            let before = peer.stale.count
            peer.release()
            let kept = peer.stale.count - before
            return .expect(kept == 0, kept == 0 ? "after Closed the frontend ended access to its ring pages"
                                                 : "after Closed \(kept) ring page(s) still mapped by the backend")
        },
        Check("XENBUS-023") { peer in
            try await peer.startOver()
            try await peer.writeState(.closing)
            let closing = try await peer.waitForBackend([.closing, .closed])
            try await peer.writeState(.closed)
            let closed = try await peer.waitForBackend([.closed])
            if let problem = await peer.servedAfterStartOver() { return .fail(problem) }
            return .pass("frontend Closing, Closed from InitWait: backend read \(closing), \(closed); served again after a start over")
        },
        Check("XENBUS-013") { peer in
            let states = try await fatalKeyError(peer)
            guard let error = await peer.errorNode() else {
                return peer.observer == nil ? ClauseVerdict(.notExecuted, "the error node cannot be read here")
                    : .fail("no tx-ring-ref: no error node (backend read \(states))")
            }
            let parts = error.split(separator: " ", maxSplits: 1)
            let wellFormed = parts.count == 2 && Int32(parts[0]) != nil && !parts[1].isEmpty
            return .expect(wellFormed, "no tx-ring-ref: backend read \(states.joined(separator: " -> ")); error node '\(error)'")
        },
        Check("XENBUS-014") { peer in
            let states = try await fatalKeyError(peer)
            let before = await peer.errorNode()
            if let problem = await peer.servedAfterStartOver() { return .fail("after the fatal error (\(states)): \(problem)") }
            // io/xenbus.h does not describe the error node: what became of it is evidence.
            let after = await peer.errorNode()
            return .pass("after the fatal error (\(states.joined(separator: " -> "))) and a start over: served; error node \(before.map { "'\($0)'" } ?? "absent or unreadable"), then \(after.map { "'\($0)'" } ?? "absent or unreadable")")
        },
        Check("XENBUS-015") { peer in
            let states = try await fatalKeyError(peer)
            // The state the keys went with (a netif frontend's Connected), written again.
            try await peer.writeState(.connected)
            let after = try await peer.watchBackend(stopOnRefusal: false)
            return .expect(!after.contains("Connected"),
                           "after the fatal error (\(states.joined(separator: " -> "))) and Connected rewritten, the backend read \(after.joined(separator: " -> "))")
        },
    ]
}
