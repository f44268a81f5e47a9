import Glibc
import Netif
import SystemCalls
import Tap
import Testing
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
