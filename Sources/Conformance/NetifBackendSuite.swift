import Glibc
import Netif
import SharedMemory
import XenBus
import XenPlatform
import XenRing

/// The checks a scripted netfront runs against a net backend: the backend-role clauses
/// of netif-backend.tsv and the xenbus clauses that fit any device. Each check brings the
/// vif to the state it needs, so any subset runs alone.
public enum NetifBackendSuite {
    public typealias Check = ClauseCheck<NetfrontPeer>

    /// Every check.
    public static var checks: [Check] { ring + xenbus + moreXenbus + nodes + tx + offload + rate + rx + badPackets + badHandshakes + queues + control + stress }

    /// A check on a connected plain vif.
    static func connected(_ id: String, _ body: @escaping @Sendable (NetfrontPeer) async throws -> ClauseVerdict) -> Check {
        Check(id) { peer in
            try await peer.ensureConnected()
            return try await body(peer)
        }
    }

    /// After a lie on a connected vif: the backend must leave Connected and serve the vif
    /// again once the frontend starts over.
    static func refused(_ peer: NetfrontPeer, _ lie: String) async throws -> ClauseVerdict {
        let states = try await peer.watchBackend()
        var seen = "\(lie): backend read \(states.joined(separator: " -> "))"
        if let error = await peer.errorNode() { seen += ", error node '\(error)'" }
        guard states.contains("Closing") || states.contains("Closed") else { return .fail(seen + " (still serving the lie)") }
        if let problem = await peer.servedAfterStartOver() { return .fail("\(seen); \(problem)") }
        return .pass("\(seen); served again after a start over")
    }

    /// After a refused packet: the vif still passes a frame each way.
    static func stillServing(_ peer: NetfrontPeer, _ seen: String) async -> ClauseVerdict {
        if let problem = await peer.probe() { return .fail("\(seen); then \(problem)") }
        return .pass("\(seen); a frame then crossed each way")
    }

    // MARK: xenbus.tsv (those that fit any device)

    static let xenbus: [Check] = [
        Check("XENBUS-003") { peer in
            try await peer.startOver(force: true)
            try await peer.connect()
            return .pass("Initialised with one tx and one rx ring: the backend read Connected")
        },
        Check("XENBUS-005") { peer in
            try await peer.ensureConnected()
            try await peer.writeState(.closing)
            let state = try await peer.waitForBackend([.closing, .closed])
            return .pass("frontend Closing: backend read \(state)")
        },
        Check("XENBUS-006") { peer in
            try await peer.ensureConnected()
            try await peer.writeState(.closing)
            let first = try await peer.waitForBackend([.closing, .closed])
            try await peer.writeState(.closed)
            let second = try await peer.waitForBackend([.closed])
            return .pass("frontend Closing, Closed: backend read \(first), \(second)")
        },
        Check("XENBUS-007") { peer in
            try await peer.ensureConnected()
            try await peer.writeState(.closing)
            try await peer.waitForBackend([.closing, .closed])
            try await peer.writeState(.closed)
            try await peer.waitForBackend([.closed])
            peer.release()
            try await peer.writeState(.initialising)
            let state = try await peer.waitForBackend([.initWait])
            return .pass("frontend Closing, Closed, Initialising: backend read \(state)")
        },
        lyingState("XENBUS-010", XenbusState.connected.nodeValue),
        lyingState("XENBUS-011", "banana"),
        lyingState("XENBUS-012", "9"),
    ]

    static func lyingState(_ id: String, _ raw: String) -> Check {
        Check(id) { peer in
            try await peer.startOver()
            try await peer.writeState(raw)
            let states = try await peer.watchBackend()
            guard !states.contains("Connected") else { return .fail("state '\(raw)' with nothing published: backend read \(states)") }
            if let problem = await peer.servedAfterStartOver() { return .fail(problem) }
            return .pass("state '\(raw)': backend read \(states.joined(separator: " -> ")); served again after a start over")
        }
    }

    // MARK: nodes

    static let nodes: [Check] = {
        typealias Key = NetifBackendFeatures.Key
        return [
            Check("NETIF-BE-001") { peer in
                try await peer.startOver()
                let value = peer.atInitWait[Key.rxCopy]
                return .expect(value == "1", "\(Key.rxCopy) reads \(value.map { "'\($0)'" } ?? "absent") at InitWait")
            },
            connected("NETIF-BE-002") { peer in
                let flags = peer.atConnected.filter { $0.key.hasPrefix("feature-") }.sorted { $0.key < $1.key }
                let bad = flags.filter { $0.value != "0" && $0.value != "1" }
                return .expect(!flags.isEmpty && bad.isEmpty, flags.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            },
            connected("NETIF-BE-003") { peer in
                let value = peer.atConnected[Key.maxQueues] ?? "absent"
                return .expect(UInt32(value).map { $0 >= 1 } ?? false, "\(Key.maxQueues) reads '\(value)'")
            },
            Check("NETIF-BE-004") { peer in
                try await peer.startOver(force: true)
                let initWait = peer.atInitWait
                try await peer.connect()
                let keys = Set(initWait.keys.filter { $0.hasPrefix("feature-") } + [Key.maxQueues])
                    .union(peer.atConnected.keys.filter { $0.hasPrefix("feature-") }).sorted()
                let differing = keys.filter { initWait[$0] != peer.atConnected[$0] }
                return .expect(differing.isEmpty, differing.isEmpty ? "\(keys.count) feature nodes read the same at InitWait and Connected"
                    : "different at Connected: \(differing.map { "\($0) \(initWait[$0] ?? "absent") -> \(peer.atConnected[$0] ?? "absent")" })")
            },
            Check("NETIF-BE-005") { peer in
                try await peer.startOver(force: true)
                try await peer.connect()
                return .pass("one tx ring, one rx ring, event-channel and request-rx-copy: the backend read Connected")
            },
        ]
    }()

    // MARK: tx


    /// A slot answered OKAY with `id`, then its extra slot answered NETIF_RSP_NULL. The NULL
    /// response's id is not checked: an extra slot carries no id (io/netif.h), and Linux's
    /// netback echoes whatever the slot's bytes hold there.
    static func okayThenNull(_ responses: [NetifTxResponse], id: UInt16) -> Bool {
        responses.count == 2 && responses[0] == NetifTxResponse(id: id, status: .okay) && responses[1].status == .null
    }
    static let tx: [Check] = [
        connected("NETIF-BE-010") { peer in
            let frame = peer.frame()
            let id = try peer.sendFrame(frame)
            let responses = try peer.txResponses(1)
            let seen = try peer.seenOnHost(frame)
            return .expect(responses == [NetifTxResponse(id: id, status: .okay)] && seen == frame,
                           "answered \(describe(responses)); on the host: \(seen.map { $0 == frame ? "the frame, unchanged" : "\($0.count) bytes, different" } ?? "nothing")")
        },
        connected("NETIF-BE-011") { peer in
            var sent: [[UInt8]] = []
            let ids: [UInt16] = [0, 0x7FFF, 0xFFFF]
            for (index, id) in ids.enumerated() {
                let frame = peer.frame()
                sent.append(frame)
                try peer.produceTx(NetifTxRequest(gref: peer.data.refs[index], offset: 0, flags: [], id: id, size: UInt16(frame.count)), data: frame)
            }
            try peer.pushTx()
            let responses = try peer.txResponses(3)
            var arrived = 0
            for frame in sent where try peer.seenOnHost(frame) != nil { arrived += 1 }
            return .expect(responses == ids.map { NetifTxResponse(id: $0, status: .okay) } && arrived == 3,
                           "ids \(ids) answered \(describe(responses)); \(arrived) of 3 frames on the host")
        },
        connected("NETIF-BE-012") { peer in
            let frame = peer.frame(size: 300)
            let ids = (0 ..< 3).map { _ in peer.takeTxID() }
            for part in 0 ..< 3 {
                let bytes = Array(frame[part * 100 ..< (part + 1) * 100])
                try peer.produceTx(NetifTxRequest(gref: peer.data.refs[part], offset: 0, flags: part < 2 ? [.moreData] : [],
                                                  id: ids[part], size: part == 0 ? 300 : 100), data: bytes)
            }
            try peer.pushTx()
            let responses = try peer.txResponses(3)
            let seen = try peer.seenOnHost(frame)
            return .expect(responses == ids.map { NetifTxResponse(id: $0, status: .okay) } && seen == frame,
                           "a 3-slot chain answered \(describe(responses)); on the host: \(seen.map { $0 == frame ? "one frame, the concatenation" : "\($0.count) bytes, different" } ?? "nothing")")
        },
        connected("NETIF-BE-013") { peer in
            let frame = peer.frame(size: 200)
            let id = try peer.sendFrame(frame, page: 3, offset: 1000)
            let responses = try peer.txResponses(1)
            let seen = try peer.seenOnHost(frame)
            return .expect(responses == [NetifTxResponse(id: id, status: .okay)] && seen == frame,
                           "a frame at offset 1000 answered \(describe(responses)); on the host: \(seen == frame ? "unchanged" : "not the frame")")
        },
        connected("NETIF-BE-016") { peer in
            let frame = peer.frame()
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [.extraInfo], id: id, size: UInt16(frame.count)), data: frame)
            try peer.produceExtra(NetifExtraInfo(.multicastAdd(NetifMACAddress(0x01, 0x00, 0x5E, 0x12, 0x34, 0x56))))
            try peer.pushTx()
            let responses = try peer.txResponses(2)
            let seen = "a frame with an MCAST_ADD extra answered \(describe(responses))"
            guard okayThenNull(responses, id: id) else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-017") { peer in
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
    ]

    // MARK: rx

    static let rx: [Check] = [
        connected("NETIF-BE-020") { peer in
            let frame = peer.frame(toGuest: true)
            let (packet, all) = try peer.deliver(frame)
            guard let packet, let response = packet.responses.first else {
                return .fail("the frame did not arrive (\(all.count) other packets did)")
            }
            return .expect(packet.responses.count == 1 && response.size == frame.count && packet.bytes == frame,
                           "buffer \(response.id) answered status \(response.status) at offset \(response.offset); bytes \(packet.bytes == frame ? "equal" : "different")")
        },
        connected("NETIF-BE-021") { peer in
            if let problem = await peer.probe() { return .fail(problem) }
            let flags = peer.rxFlagsSeen.sorted()
            let unknown = flags.filter { $0 & ~NetifRxFlags.known.rawValue != 0 }
            return .expect(unknown.isEmpty && peer.rxDecodeErrors.isEmpty,
                           "rx flags seen over the run: \(flags.map { String($0, radix: 16) }); decode errors: \(peer.rxDecodeErrors)")
        },
        connected("NETIF-BE-022") { peer in
            let rings = try peer.rings()
            try rings.channel.takePending(atMost: 64) { [channel = rings.channel] port throws(PlatformError) in try channel.unmask(port) }
            rings.queues[0].rx.shared.storeResponseEvent(rings.queues[0].rx.responseConsumer &+ 1)
            memoryFence(.sequentiallyConsistent)
            let frame = peer.frame(toGuest: true)
            try peer.host.send(frame)
            guard try waitReadable(rings.channel.fileDescriptor, within: NetfrontPeer.patience) else {
                return .fail("no event within \(NetfrontPeer.patience) with rx rsp_event = rsp_cons + 1")
            }
            let packets = try peer.rxPackets { $0.contains { NetfrontPeer.same($0.bytes, as: frame) } }
            return .expect(packets.contains { NetfrontPeer.same($0.bytes, as: frame) }, "woken by an event; \(packets.count) packet(s) taken")
        },
        Check("NETIF-BE-023") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.rxBuffers = 0
            try await peer.connect(handshake)
            let order: [UInt16] = [3, 1, 0, 2]
            for id in order { try peer.postRx(id: id, page: NetfrontPeer.rxPages.lowerBound + Int(id)) }
            peer.pushRx()
            let frames = (0 ..< 4).map { _ in peer.frame(toGuest: true) }
            for frame in frames { try peer.host.send(frame) }
            let packets = try peer.rxPackets(repost: false) { $0.count >= 4 }
            let ids = packets.compactMap { $0.responses.first?.id }
            let inOrder = zip(packets, frames).allSatisfy { NetfrontPeer.same($0.bytes, as: $1) }
            return .expect(ids == order && inOrder, "buffers posted as \(order) answered as \(ids); frames \(inOrder ? "in the order sent" : "not in the order sent")")
        },
        Check("NETIF-BE-024") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.rxBuffers = 0
            try await peer.connect(handshake)
            let first = peer.frame(toGuest: true)
            try peer.host.send(first)
            let early = try peer.rxPackets(within: .seconds(1)) { !$0.isEmpty }
            guard early.isEmpty else { return .fail("with no buffer posted, \(early.count) rx responses appeared") }
            try peer.postRx(id: 0, page: NetfrontPeer.rxPages.lowerBound)
            peer.pushRx()
            let second = peer.frame(toGuest: true)
            try peer.host.send(second)
            let late = try peer.rxPackets(repost: false) { !$0.isEmpty }
            guard let packet = late.first else { return .fail("a buffer posted after the frame was never answered") }
            let which = NetfrontPeer.same(packet.bytes, as: first) ? "the held frame" : NetfrontPeer.same(packet.bytes, as: second) ? "the next frame" : "something else"
            return .expect(which != "something else", "no response while no buffer was posted; the buffer posted then got \(which)")
        },
    ]
}

/// tx responses as `id:status`, for evidence.
func describe(_ responses: [NetifTxResponse]) -> String {
    "[" + responses.map { "\($0.id):\($0.status)" }.joined(separator: " ") + "]"
}
