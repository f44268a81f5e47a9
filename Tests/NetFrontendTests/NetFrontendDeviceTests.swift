import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenTesting
import XenBus
import XenStore
@testable import NetFrontend

/// The frontend against the scripted backend, its guest side a TAP device in a namespace
/// the test makes: the keys it negotiates, reconnect after a backend restart, clean close.
@Suite(.serialized)
struct NetFrontendDeviceTests {
    @Test(arguments: [false, true])
    func negotiatesTheKeysOfIoNetif(split: Bool) async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(split: split)
        defer { ns.delete() }
        let read = try #require(rig.hooks.frontendsRead.withLock { $0.last })
        #expect(read.features.requestRxCopy && read.features.rxNotify && read.features.scatterGather)
        #expect(read.features.gsoTCPv4 && read.features.gsoTCPv6 && read.features.ipv6ChecksumOffload)
        #expect(read.entries[NetifFrontendFeatures.Key.noChecksumOffload] == "0")
        #expect(read.features.queueCount == nil)
        // The toolstack's `trusted` stays as it wrote it.
        #expect(read.entries[NetifFrontendFeatures.Key.trusted] == "0")
        switch read.connection.queues[0].eventChannels {
        case .shared: #expect(!split)
        case .split: #expect(split)
        }
        #expect((read.entries[NetifConnectionKeys.Key.eventChannel] == nil) == split)
        #expect((read.entries[NetifConnectionKeys.Key.eventChannelTx] != nil) == split)
        #expect((read.entries[NetifConnectionKeys.Key.eventChannelRx] != nil) == split)
        // connected() returns as the connect hook starts the rings, just before the driver writes Connected.
        try await eventually("frontend Connected") { frontend.state == .connected }
        let link = try #require(frontend.link)
        #expect(link.vif.mac.description == NetRig.mac)
        #expect(try tap.hardwareAddress().description == NetRig.mac)
        #expect(try tap.mtu() == NetRig.mtu)
        #expect(try rig.hooks.connected?.postedRx() == 256)

        let second = try TapDevice(name: "nf1", in: ns.namespace)
        #expect(throws: NetFrontendError.tapAlreadyAttached("nf0")) { try frontend.attachTap(second) }
        second.close()

        let pages = frontend.grantedPageSets
        #expect(pages == 4)
        #expect(await frontend.close() == 0)
        tap.close()
        #expect(frontend.grantedPageSets == 0)
        #expect(frontend.state == .closed)
        #expect(try await rig.toolstack.readString(rig.paths.frontend + "/" + NetifFrontendFeatures.Key.trusted) == "0")
        try await eventually("backend disconnected") { !rig.hooks.disconnects.withLock { $0.isEmpty } }
        await rig.shutdown()
    }

    @Test("two queue pairs: keys under queue-N/ with multi-queue-num-queues, a TAP queue and rx ring each delivering, a lie on pair 1 disconnects the device")
    func twoQueuePairs() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(split: true, queues: 2, maxQueues: 4)
        defer { ns.delete() }
        let read = try #require(rig.hooks.frontendsRead.withLock { $0.last })
        #expect(read.features.queueCount == 2)
        #expect(read.connection.queues.count == 2)
        typealias Key = NetifConnectionKeys.Key
        // Nothing of a single pair at the top level (io/netif.h: "must not write").
        let node = XenbusNodeReader(store: rig.toolstack, path: rig.paths.frontend)
        for key in [Key.txRingRef, Key.rxRingRef, Key.eventChannel, Key.eventChannelTx, Key.eventChannelRx] {
            #expect(try await node.optionalString(key) == nil, "\(key)")
        }
        #expect(try await node.optionalString(Key.queue(1) + "/" + Key.eventChannelRx) != nil)
        for queue in read.connection.queues {
            guard case .split = queue.eventChannels else { Issue.record("pair without split event channels: \(queue)"); continue }
        }
        #expect(Set(read.connection.queues.map(\.txRingRef)).count == 2)
        #expect(frontend.link?.queues == 2)
        #expect(tap.queues.count == 2)
        let pairs = rig.hooks.connectedQueues
        try #require(pairs.count == 2)
        try await eventually("rx pages posted on both pairs") { try pairs.allSatisfy { try $0.postedRx() == 256 } }

        let receiver = try GuestSide.udpSocket(in: ns, bindPort: GuestSide.port)
        defer { close(receiver) }
        for (index, rings) in pairs.enumerated() {
            let payload = Frames.payload(600 + index, seed: index)
            try rings.deliver(Frames.udp4(payload: payload, port: GuestSide.port), flags: .dataValidated)
            #expect(GuestSide.receive(receiver) == payload, "pair \(index)")
        }
        // Counted just after the write the socket may already have seen.
        try await eventually("one packet counted on each pair") { frontend.queueCounters.map(\.rxPackets) == [1, 1] }

        try pairs[1].answerRx(id: 9, size: 60)
        try await eventually("the lie seen") { frontend.violation != nil }
        #expect(frontend.violation == .rxResponseID(found: 9, expected: 1))
        try await eventually("backend disconnected") { !rig.hooks.disconnects.withLock { $0.isEmpty } }
        #expect(await frontend.close() == 0)
        tap.close()
        #expect(frontend.grantedPageSets == 0)
        // The queue-N directories went with the keys under them.
        let left = try await rig.toolstack.directory(rig.paths.frontend)
        #expect(!left.contains(Key.queue(0)) && !left.contains(Key.queue(1)), "\(left)")
        await rig.shutdown()
    }

    @Test func reconnectsAfterABackendRestartWithTheCarrierFollowing() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected()
        defer { ns.delete() }
        let carrier = { () throws -> Bool in
            let result = try Command.run("/usr/sbin/ip", ["netns", "exec", ns.name, "cat", "/sys/class/net/nf0/carrier"])
            return result.status == 0 && result.stdout.hasPrefix("1")
        }
        #expect(try carrier())
        await rig.stopBackend()
        try await eventually("frontend followed the backend down") { frontend.state == .closed }
        #expect(try !carrier())
        #expect(frontend.grantedPageSets == 0)
        rig.startBackend()
        try await eventually("frontend connected again") { frontend.state == .connected && frontend.connections == 2 }
        #expect(try carrier())
        let rings = try #require(rig.hooks.connected)
        let receiver = try GuestSide.udpSocket(in: ns, bindPort: GuestSide.port)
        defer { close(receiver) }
        let payload = Frames.payload(500, seed: 3)
        try await eventually("rx pages posted on the new rings") { try rings.postedRx() == 256 }
        try rings.deliver(Frames.udp4(payload: payload, port: GuestSide.port), flags: .dataValidated)
        #expect(GuestSide.receive(receiver) == payload)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }
}
