import Foundation
import NetBackend
import Netif
import Tap
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// A frontend that abuses its control ring or its queue keys ([netmq] item 6): content is
/// answered with a status and never disconnects; a ring-index lie or a missing key
/// refuses only that vif; a bystander vif is served throughout and dom0 keeps nothing of
/// the hostile guest once it is gone (HostileArena's checks).
@Suite("netback control ring with a hostile frontend", .serialized)
struct NetbackControlRingHostileTests {
    static let key = NetifHashTests_rssKey

    @Test("2000 random requests (any type, any data): each answered once, id and type echoed, a defined status; the vif keeps serving")
    func garbage() async throws {
        try await HostileArena.run(controlRing: true) { arena, hostile in
            let frontend = hostile.frontend
            var generator = SystemRandomNumberGenerator()
            let refs = frontend.controlPages!.refs
            for batch in 0..<20 {
                let requests = (0..<100).map { i -> NetifCtrlRequest in
                    // Mostly the defined types, with grants that exist half the time.
                    let type = Bool.random(using: &generator) ? UInt16.random(in: 0...11, using: &generator)
                        : UInt16.random(in: 0...UInt16.max, using: &generator)
                    func word() -> UInt32 {
                        switch Int.random(in: 0..<4, using: &generator) {
                        case 0: return refs[Int.random(in: 0..<2, using: &generator)]
                        case 1: return UInt32.random(in: 0...200, using: &generator)
                        case 2: return UInt32.max - UInt32.random(in: 0...4, using: &generator)
                        default: return UInt32.random(in: 0...UInt32.max, using: &generator)
                        }
                    }
                    return NetifCtrlRequest(id: UInt16(batch * 100 + i), type: type, data: (word(), word(), word()))
                }
                let responses = try await frontend.ctrl(requests)
                #expect(responses.map(\.id) == requests.map(\.id))
                #expect(responses.map(\.type) == requests.map(\.type))
                for (request, response) in zip(requests, responses) where request.kind == nil || request.kind == .invalid {
                    #expect(response.status == .notSupported)
                }
            }
            // Hashing off again, so the arena's echo reads plain responses.
            #expect(try await frontend.ctrl(NetifCtrlRequest(id: 1, .setHashAlgorithm, data: (0, 0, 0))).status == .success)
            try await arena.expectServing(hostile)
        }
    }

    @Test("an oversized key, a table naming queue 1 of 1, a sub-table past its page and one past the table: each refused with its status, nothing applied, the vif serving")
    func oversizedAndOutOfRange() async throws {
        try await HostileArena.run(controlRing: true) { arena, hostile in
            let frontend = hostile.frontend
            let keyRef = try frontend.controlPage(0, Array(repeating: 0xAB, count: 4096))
            let tableRef = try frontend.controlPage(1, [0, 0, 0, 0, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
            let cases: [(NetifCtrlRequest, NetifCtrlStatus)] = [
                (.init(id: 1, .setHashKey, data: (keyRef, 41, 0)), .bufferOverflow),
                (.init(id: 2, .setHashKey, data: (keyRef, 4096, 0)), .bufferOverflow),
                (.init(id: 3, .setHashKey, data: (keyRef, .max, 0)), .bufferOverflow),
                (.init(id: 4, .setHashMappingSize, data: (4, 0, 0)), .success),
                (.init(id: 5, .setHashMapping, data: (tableRef, 2, 0)), .invalidParameter),
                (.init(id: 6, .setHashMapping, data: (tableRef, 3, 1)), .invalidParameter),
                (.init(id: 7, .setHashMapping, data: (tableRef, 1025, 0)), .bufferOverflow),
                (.init(id: 8, .setHashMapping, data: (tableRef, 1, 4)), .invalidParameter),
                (.init(id: 9, .setHashMapping, data: (tableRef, 2, .max)), .invalidParameter),
                (.init(id: 10, .setHashMapping, data: (tableRef, .max, .max)), .bufferOverflow),
            ]
            let responses = try await frontend.ctrl(cases.map(\.0))
            #expect(responses.map(\.status) == cases.map(\.1))
            let state = try #require(arena.world.daemon.hashConfiguration(of: frontend.backendPath))
            #expect(state.key.isEmpty && state.mapping == [0, 0, 0, 0])
            try await arena.expectServing(hostile)
        }
    }

    @Test("a control ring whose req_prod runs a ring ahead refuses that vif, naming the control ring; the bystander is served")
    func controlRingIndexOverrun() async throws {
        try await HostileArena.run(controlRing: true) { arena, hostile in
            let control = try #require(hostile.frontend.control)
            control.shared.storeRequestProducer(100_000)
            try control.eventChannel.notify(control.port)
            try await arena.expectRefused(
                hostile, .controlRing(.requestProducerOverrun(producer: 100_000, responsePrivate: 0, size: control.ring.size)))
        }
    }

    @Test("a vif refused for its control ring is served again once its frontend starts over with a new one")
    func refusedForControlRingStartsOver() async throws {
        try await HostileArena.run(controlRing: true) { arena, hostile in
            let control = try #require(hostile.frontend.control)
            control.shared.storeRequestProducer(control.shared.loadRequestProducer() &+ control.ring.size &+ 1)
            try control.eventChannel.notify(control.port)
            let backend = hostile.frontend.backendPath, store = arena.store
            try await eventually("\(backend) refused") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.closing.rawValue)
            }
            let frontendPath = hostile.frontend.frontendPath
            try await hostile.frontend.store.write(frontendPath + "/state", String(XenbusState.closed.rawValue))
            try await eventually("\(backend) Closed") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.closed.rawValue)
            }
            try await hostile.frontend.store.write(frontendPath + "/state", String(XenbusState.initialising.rawValue))
            try await eventually("\(backend) InitWait") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.initWait.rawValue)
            }
            let again = try await arena.world.reconnect(hostile, controlRing: true)
            let size = try await again.frontend.ctrl(NetifCtrlRequest(id: 5, .getHashMappingSize))
            #expect(size == NetifCtrlResponse(id: 5, type: 4, status: .success, data: 128))
            #expect(try await again.echo(), "the new connection passes traffic")
        }
    }

    @Test("multi-queue-num-queues changed after connect is ignored: the vif keeps its 2 queues, tables are checked against 2")
    func queueCountChangedAfterConnect() async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 4
        try await HostileArena.run(limits: limits, queues: 2, controlRing: true) { arena, hostile in
            let frontend = hostile.frontend, store = arena.store
            for count in ["4", "1", "banana"] {
                try await store.write(frontend.frontendPath + "/" + NetifFrontendFeatures.Key.queueCount, count)
            }
            let tableRef = try frontend.controlPage(1, [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])
            let responses = try await frontend.ctrl([
                NetifCtrlRequest(id: 1, .setHashMappingSize, data: (2, 0, 0)),
                NetifCtrlRequest(id: 2, .setHashMapping, data: (tableRef, 2, 0)),  // queue 2 of 2
                NetifCtrlRequest(id: 3, .setHashMapping, data: (tableRef, 1, 0)),  // queue 1
                NetifCtrlRequest(id: 4, .getGrefMappingSize, data: (1, 0, 0)),
                NetifCtrlRequest(id: 5, .getGrefMappingSize, data: (2, 0, 0)),
            ])
            #expect(responses.map(\.status) == [.success, .invalidParameter, .success, .success, .invalidParameter])
            #expect(try await store.readString(frontend.backendPath + "/state") == String(XenbusState.connected.rawValue))
            // The bystander's queue and the hostile's 2 (its control ring rides on queue 0's worker).
            #expect(arena.world.daemon.queuesPerWorker.reduce(0, +) == 1 + 2)
            // Everything steered to queue 1 (of the 2 it has): the echo reply arrives there.
            try await frontend.enableHashing(types: [.ipv4], key: Self.key, mapping: [1, 1])
            let (frame, sequence) = hostile.echoFrame()
            try frontend.send(frame, id: 77)
            let reply = try await frontend.awaitRx { bytes in
                bytes.count == frame.count && bytes[23] == 1 && bytes[34] == 0 && TestFrames.u16(bytes, 40) == sequence
            }
            #expect(reply.queue == 1)
        }
    }

    @Test("a flood steered to a queue whose guest posts no more buffers: the inbox fills and drops, the bystander is served, the queue delivers again once buffers come")
    func floodSteeredToAStarvedQueue() async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 2
        try await HostileArena.run(limits: limits, queues: 2, controlRing: true) { arena, hostile in
            let frontend = hostile.frontend
            try await frontend.enableHashing(types: [.ipv4], key: Self.key, mapping: [1])
            // Nobody reads queue 1's ring: its 8 buffers go to the first packets, then its
            // own buffers and its inbox hold what they can. 16 flows: the kernel spreads
            // them over both TAP queues, so queue 0 reads some and hands them over until
            // queue 1's inbox is full, and drops (and counts) the rest.
            try await arena.blast(to: hostile, count: 320, flows: 16)
            let daemon = arena.world.daemon, backend = frontend.backendPath
            try await eventually("queue 0 drops what queue 1's full inbox cannot take") {
                (await daemon.counters(of: backend)?.rxDropped ?? 0) > 0
            }
            // Reading queue 1 posts its buffers again: what was held comes, then new traffic.
            let port: UInt16 = 45000
            let syn = CtrlFrames.tcpSyn(from: hostile.address, to: hostile.dom0Address, sourcePort: port, destinationPort: 9,
                                        sourceMAC: hostile.mac)
            try frontend.send(syn, id: 99)
            let reset = try await frontend.awaitRx { CtrlFrames.isReset($0, toPort: port) }
            #expect(reset.queue == 1)
            #expect(reset.packet.extras.count == 1)
        }
    }

    @Test("a missing queue-1 or control-ring key refuses the vif with the key named in the error node; nothing stays mapped",
          arguments: ["queue-1/tx-ring-ref", "queue-1/rx-ring-ref", "queue-1/event-channel-rx", "event-channel-ctrl", "ctrl-ring-ref"])
    func missingKey(key: String) async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 2
        try await NetWorld.with(try NetWorld(limits: limits)) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain, queues: 2, controlRing: true)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.publish(features: features, omitting: [key])
            let error = try await NetbackRefusalTests.errorNode(world, frontend.backendPath)
            // Without event-channel-rx the split pair falls back to event-channel, also absent.
            let named = key.hasSuffix("event-channel-rx") ? "queue-1/event-channel" : key
            #expect(error.contains(named), "\(error)")
            #expect(try world.dom0.domainUsage()[domain]?.pinnedGrants ?? 0 == 0)
            #expect(world.daemon.queuesPerWorker.reduce(0, +) == 0)
        }
    }
}
