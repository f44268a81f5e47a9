import Blkif
import Glibc
import SharedMemory
import XenBus
import XenPlatform
import XenRing

/// The checks a scripted blkfront runs against a block backend: the backend-role clauses
/// of ring.tsv, xenbus.tsv and blkif-backend.tsv. Each check brings the device to the
/// state it needs (``BlkfrontPeer/ensureConnected()`` or a fresh handshake), so any
/// subset runs alone.
public enum BlkifBackendSuite {
    public typealias Check = ClauseCheck<BlkfrontPeer>

    /// Every check, ring and xenbus first.
    public static var checks: [Check] { ring + xenbus + nodes + io + features + badRequests + [doubleFetch] + badHandshakes }

    /// A ring's worth of one-sector reads at once, after `warmUp` single reads so the
    /// indices are not at 0, then one more read: every id answered once, OKAY.
    static func fillRing(_ peer: BlkfrontPeer, warmUp: Int = 5, sector: UInt64 = 0,
                         expect status: BlkifStatus = .okay) async throws -> String? {
        for _ in 0 ..< warmUp { if let problem = await peer.probe() { return "warming up: \(problem)" } }
        let rings = try peer.rings()
        let size = Int(rings.queues[0].ring.size)
        var ids = Set<UInt64>()
        for _ in 0 ..< size {
            let request = try peer.direct(.read, sector: sector, sectors: 1)
            ids.insert(request.id)
            try rings.produce(request)
        }
        try rings.push()
        let (responses, _) = try rings.awaitResponses(ids)
        let wrong = responses.values.filter { $0.status != status }
        guard wrong.isEmpty else { return "\(wrong.count) of \(size) answered other than \(status): \(wrong.first!.status)" }
        guard responses.count == size else { return "\(responses.count) responses to \(size) requests" }
        if let problem = await peer.probe() { return "after the batch: \(problem)" }
        return nil
    }

    // MARK: ring.tsv

    static let ring: [Check] = [
        Check("RING-001") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            let response = try await peer.exchange(peer.direct(.read, sector: 0, sectors: 1))
            let index = rings.queues[0].ring.responseConsumer &- 1
            let shared = rings.queues[0].ring.shared
            let offset = SharedRing.Header.size + Int(index & (shared.size - 1)) * shared.entrySize
            let raw = try BlkifResponse.decode(from: rings.queues[0].pages.view, at: offset, abi: rings.handshake.abi)
            return .expect(raw.id == response.id && response.status == .okay,
                           "request at index \(index) answered \(response.status); byte \(offset) of the page holds the response to id \(raw.id)")
        },
        Check("RING-002") { peer in
            try await peer.ensureConnected()
            let size = try peer.rings().queues[0].ring.size
            if let problem = try await fillRing(peer) { return .fail(problem) }
            return .pass("a ring of \(size) slots: \(size) reads at once from index 5 and one past the wrap answered OKAY")
        },
        Check("RING-003") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            let shared = rings.queues[0].ring.shared
            let published = try peer.direct(.read, sector: 0, sectors: 1)
            let hidden = try peer.direct(.read, sector: 0, sectors: 1)
            let index = try rings.produce(published)
            try rings.produce(hidden)
            // Only the first is published: req_prod stops short of the second slot.
            shared.storeRequestProducer(index &+ 1)
            try rings.notify()
            _ = try rings.awaitResponses([published.id])
            try await Task.sleep(for: .milliseconds(200))
            let responses = shared.loadResponseProducer() &- index
            guard responses == 1 else { return .fail("\(responses) responses published for 1 published request and 1 unpublished") }
            rings.queues[0].ring.pushRequests()
            try rings.notify()
            let (late, _) = try rings.awaitResponses([hidden.id])
            return .expect(late[hidden.id]?.status == .okay,
                           "the unpublished request stayed unanswered 200 ms after the published one; once published it was answered \(late[hidden.id]!.status)")
        },
        Check("RING-004") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            try rings.channel.takePending(atMost: 64) { [channel = rings.channel] port throws(PlatformError) in try channel.unmask(port) }
            let request = try peer.direct(.read, sector: 0, sectors: 1)
            try rings.produce(request)
            // Ask for an event on the next response, as RING_FINAL_CHECK_FOR_RESPONSES does.
            rings.queues[0].ring.shared.storeResponseEvent(rings.queues[0].ring.responseConsumer &+ 1)
            memoryFence(.sequentiallyConsistent)
            try rings.push()
            guard try waitReadable(rings.channel.fileDescriptor, within: BlkfrontPeer.patience) else {
                return .fail("no event within \(BlkfrontPeer.patience) with rsp_event = rsp_cons + 1 (rsp_prod reads \(rings.queues[0].ring.shared.loadResponseProducer()))")
            }
            let (responses, _) = try rings.awaitResponses([request.id])
            return .pass("woken by an event for the response (answered \(responses[request.id]!.status))")
        },
        Check("RING-005") { peer in
            try await peer.ensureConnected()
            if let problem = await peer.probe() { return .fail(problem) }
            let shared = try peer.rings().queues[0].ring.shared
            let deadline = ContinuousClock.now + BlkfrontPeer.patience
            while true {
                let (produced, event) = (shared.loadRequestProducer(), shared.loadRequestEvent())
                if event == produced &+ 1 { return .pass("idle backend: req_event \(event) = req_prod \(produced) + 1") }
                if ContinuousClock.now > deadline { return .fail("idle backend: req_event \(event), req_prod \(produced)") }
                try await Task.sleep(for: .milliseconds(5))
            }
        },
        Check("RING-006") { peer in
            try await peer.ensureConnected()
            // awaitResponses refuses an rsp_prod past the requests and a second answer.
            if let problem = try await fillRing(peer, warmUp: 1) { return .fail(problem) }
            let shared = try peer.rings().queues[0].ring.shared
            let (req, rsp) = (shared.loadRequestProducer(), shared.loadResponseProducer())
            return .expect(req == rsp, "a ring's worth answered, each id once; rsp_prod \(rsp) = req_prod \(req)")
        },
        Check("RING-007") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            let shared = rings.queues[0].ring.shared
            let before = shared.loadResponseProducer()
            shared.storeRequestProducer(before &+ shared.size &+ 1)
            try rings.notify()
            return await afterRingLie(peer, shared: shared, before: before, lie: "req_prod set \(shared.size + 1) past rsp_prod")
        },
        Check("RING-008") { peer in
            try await peer.ensureConnected()
            for _ in 0 ..< 4 { if let problem = await peer.probe() { return .fail(problem) } }
            let rings = try peer.rings()
            let shared = rings.queues[0].ring.shared
            let before = shared.loadResponseProducer()
            shared.storeRequestProducer(before &- 3)
            try rings.notify()
            return await afterRingLie(peer, shared: shared, before: before, lie: "req_prod moved 3 behind the consumed requests")
        },
        Check("RING-009") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            let page = rings.queues[0].pages.view
            pattern(page.count, seed: 0x5C1B).withUnsafeBytes { page.copyBytes(from: $0, to: 0) }
            peer.isConnected = false
            try rings.notify()
            let states = try await peer.watchBackend()
            if let problem = await peer.servedAfterStartOver() { return .fail("after the scribble (states \(states)): \(problem)") }
            return .pass("after the ring page was scribbled the backend read \(states.joined(separator: " -> ")); served again after a start over")
        },
        Check("RING-010") { peer in
            try await peer.ensureConnected()
            let rings = try peer.rings()
            for _ in 0 ..< 10_000 { try rings.notify() }
            if let problem = await peer.probe() { return .fail("after 10000 notifications: \(problem)") }
            return .pass("after 10000 notifications with nothing published, a read was answered OKAY")
        },
    ]

    /// After a ring lie: no response for the bogus slots, and served after a start over.
    static func afterRingLie(_ peer: BlkfrontPeer, shared: SharedRing, before: RingIndex, lie: String) async -> ClauseVerdict {
        // The ring is spoilt whatever the backend did: the next check starts over.
        peer.isConnected = false
        let states = (try? await peer.watchBackend()) ?? []
        let after = shared.loadResponseProducer()
        guard after == before else { return .fail("\(lie): rsp_prod moved from \(before) to \(after)") }
        if let problem = await peer.servedAfterStartOver() { return .fail("\(lie): \(problem)") }
        return .pass("\(lie): rsp_prod stayed \(before), backend read \(states.joined(separator: " -> ")); served again after a start over")
    }
}

/// Polls `fd` readable for up to `within`.
func waitReadable(_ fd: Int32, within: Duration) throws -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let deadline = ContinuousClock.now + within
    while ContinuousClock.now < deadline {
        let ready = poll(&p, 1, 100)
        if ready > 0 { return true }
        if ready < 0, errno != EINTR { throw PeerError.platform("poll: errno \(errno)") }
    }
    return false
}
