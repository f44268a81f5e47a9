import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenBus
import XenStore
@testable import NetFrontend

/// The frontend against the scripted backend, its guest side a TAP device in a namespace
/// the test makes: the keys it negotiates, a datagram the namespace's stack sends arriving
/// as a tx chain, packets the backend delivers arriving at a socket in the namespace, a
/// lying backend disconnected, and a clean close.
@Suite(.serialized)
struct NetFrontendDeviceTests {
    static let port: UInt16 = 40_321

    /// A UDP socket made inside `ns`, bound to the guest's address and `port` when given.
    static func udpSocket(in ns: TestNamespace, bindPort: UInt16?) throws -> Int32 {
        try ns.namespace.run { () throws(Errno) -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Errno.current }
            guard let bindPort else { return fd }
            var address = sockaddr_in(ip: Frames.guestIP, port: bindPort)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                let error = Errno.current
                close(fd)
                throw error
            }
            return fd
        }.get()
    }

    /// Receives one datagram within a bound (20 s: a hang becomes a failure, not a timing test).
    static func receive(_ fd: Int32) -> [UInt8]? {
        var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard Glibc.poll(&poll, 1, 20_000) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 70_000)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count >= 0 ? Array(buffer[..<count]) : nil
    }

    /// A rig, a connected frontend and its TAP device `nf0` up in a fresh namespace with
    /// the guest address and a static neighbour for the peer.
    static func connected(split: Bool = false, ipv6: Bool = true) async throws -> (NetRig, NetFrontend, TapDevice, TestNamespace) {
        let ns = try TestNamespace()
        if !ipv6 {
            // No neighbour discovery or MLD frames: the tx ring carries only the test's own.
            let result = try Command.run("/usr/sbin/ip", ["netns", "exec", ns.name, "sysctl", "-qw",
                                                          "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1"])
            try #require(result.status == 0, "sysctl: \(result.stderr)")
        }
        do {
            let rig = try await NetRig(offered: NetRig.features(split: split))
            let frontend = try rig.frontend()
            let tap = try TapDevice(name: "nf0", in: ns.namespace)
            try frontend.attachTap(tap)
            _ = try await frontend.connected()
            try ns.ip("addr", "add", "198.18.0.1/24", "dev", "nf0")
            try ns.ip("link", "set", "nf0", "up")
            try ns.ip("neigh", "add", "198.18.0.2", "lladdr", Frames.peerMAC.description, "dev", "nf0")
            try await eventually("backend connected") { rig.hooks.connected != nil }
            return (rig, frontend, tap, ns)
        } catch {
            ns.delete()
            throw error
        }
    }

    @Test(arguments: [false, true])
    func negotiatesTheKeysOfIoNetif(split: Bool) async throws {
        let (rig, frontend, tap, ns) = try await Self.connected(split: split)
        defer { ns.delete() }
        let read = try #require(rig.hooks.frontendsRead.withLock { $0.last })
        #expect(read.features.requestRxCopy && read.features.rxNotify && read.features.scatterGather)
        #expect(read.features.gsoTCPv4 && read.features.gsoTCPv6 && read.features.ipv6ChecksumOffload)
        #expect(read.entries[NetifFrontendFeatures.Key.noChecksumOffload] == "0")
        #expect(read.features.queueCount == nil)
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
        try await eventually("backend disconnected") { !rig.hooks.disconnects.withLock { $0.isEmpty } }
        await rig.shutdown()
    }

    @Test func datagramSentOnTheTapArrivesAsATxChain() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let sender = try Self.udpSocket(in: ns, bindPort: nil)
        defer { close(sender) }
        let payload = Frames.payload(6000)
        var peer = sockaddr_in(ip: Frames.peerIP, port: Self.port)
        let sent = withUnsafePointer(to: &peer) { to in
            to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                payload.withUnsafeBytes { sendto(sender, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        #expect(sent == payload.count)
        // The kernel may send other frames first (IPv6 neighbour discovery): skip them.
        var found: ScriptedNetBackend.Rings.TxPacket?
        try await eventually("the datagram as a tx chain") {
            while let packet = try rings.takeTx() {
                let data = packet.data
                if data.count > 42, Frames.u16(data, 12) == 0x0800, data[23] == 17, Frames.u16(data, 36) == Self.port {
                    found = packet
                    return true
                }
            }
            return false
        }
        let packet = try #require(found)
        // One frame over the MTU of 9000 from the toolstack: two pages.
        #expect(packet.data.count == 42 + payload.count)
        #expect(packet.packet.length == packet.data.count)
        #expect(packet.packet.fragments.map(\.size) == [4096, UInt16(packet.data.count - 4096)])
        #expect(packet.packet.flags == [.checksumBlank, .dataValidated])
        #expect(Array(packet.data[42...]) == payload)
        #expect(Array(packet.data[6 ..< 12]) == (try tap.hardwareAddress()).octets)
        #expect(frontend.counters.txPackets >= 1 && frontend.counters.txDropped == 0)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func checksummedDatagramLeavesThePartialChecksumToTheBackend() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let sender = try Self.udpSocket(in: ns, bindPort: nil)
        defer { close(sender) }
        let payload = Frames.payload(300)
        var peer = sockaddr_in(ip: Frames.peerIP, port: Self.port)
        _ = withUnsafePointer(to: &peer) { to in
            to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                payload.withUnsafeBytes { sendto(sender, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var found: ScriptedNetBackend.Rings.TxPacket?
        try await eventually("the datagram as a tx chain") {
            while let packet = try rings.takeTx() {
                if packet.data.count == 42 + payload.count, Frames.u16(packet.data, 36) == Self.port {
                    found = packet
                    return true
                }
            }
            return false
        }
        let packet = try #require(found)
        #expect(packet.packet.flags == [.checksumBlank, .dataValidated])
        #expect(packet.packet.fragments.count == 1)
        #expect(Array(packet.data[42...]) == payload)
        // The field holds the pseudo-header sum; finishing it gives a checksum that verifies.
        var data = packet.data
        try data.withUnsafeMutableBytes { bytes in
            try NetifChecksumOffload.completePartialChecksum(in: bytes, at: try NetifChecksumOffload.locate(in: UnsafeRawBufferPointer(bytes)))
        }
        #expect(try Frames.checksumVerifies(data))
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func packetsFromTheBackendReachASocketOnTheGuestSide() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let receiver = try Self.udpSocket(in: ns, bindPort: Self.port)
        defer { close(receiver) }
        // A plain datagram with validated data, one slot.
        let small = Frames.payload(200, seed: 1)
        try rings.deliver(Frames.udp4(payload: small, port: Self.port), flags: .dataValidated)
        #expect(Self.receive(receiver) == small)
        // A partial checksum left to the guest side, over three slots.
        let large = Frames.payload(9000, seed: 2)
        var frame = Frames.udp4(payload: large, port: Self.port)
        _ = try Frames.makePartial(&frame)
        try rings.deliver(frame, flags: [.checksumBlank, .dataValidated])
        #expect(Self.receive(receiver) == large)
        // Counted just after the write the socket saw.
        try await eventually("both packets counted") { frontend.counters.rxPackets == 2 }
        #expect(frontend.counters.rxBytes == 42 + 200 + frame.count)
        // The posted pages are posted again.
        try await eventually("rx ring refilled") { try rings.postedRx() == 256 }
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func reconnectsAfterABackendRestartWithTheCarrierFollowing() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected()
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
        let receiver = try Self.udpSocket(in: ns, bindPort: Self.port)
        defer { close(receiver) }
        let payload = Frames.payload(500, seed: 3)
        try await eventually("rx pages posted on the new rings") { try rings.postedRx() == 256 }
        try rings.deliver(Frames.udp4(payload: payload, port: Self.port), flags: .dataValidated)
        #expect(Self.receive(receiver) == payload)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    /// Sends `payload` to the peer's `port` from a socket made in `ns`.
    static func send(_ payload: [UInt8], port: UInt16, in ns: TestNamespace) throws {
        let sender = try Self.udpSocket(in: ns, bindPort: nil)
        defer { close(sender) }
        var peer = sockaddr_in(ip: Frames.peerIP, port: port)
        let sent = withUnsafePointer(to: &peer) { to in
            to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                payload.withUnsafeBytes { sendto(sender, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        #expect(sent == payload.count)
    }

    /// Takes tx chains until one to `port` arrives.
    static func awaitDatagram(_ rings: ScriptedNetBackend.Rings, port: UInt16) async throws {
        try await eventually("a datagram to port \(port)") {
            while let packet = try rings.takeTx() {
                if packet.data.count > 42, Frames.u16(packet.data, 36) == port { return true }
            }
            return false
        }
    }

    /// io/ring.h's event suppression from the frontend's side: it notifies a port only
    /// when a push crosses the backend's req_event, so a backend that does not ask again
    /// hears nothing, and one that does (its final check) hears the next push.
    @Test func notifiesOnlyWhenTheBackendAsks() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected(split: true, ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let read = try #require(rig.hooks.frontendsRead.withLock { $0.last })
        guard case let .split(txPort, rxPort) = read.connection.queues[0].eventChannels else {
            Issue.record("split event channels were offered")
            return
        }
        let count = { (port: UInt32) in rig.hypervisor.notificationCount(domain: rig.guest, port: port) }
        // The first post of the rx ring crossed the initial req_event.
        try await eventually("the first rx post notified") { count(rxPort) == 1 }
        while try rings.takeTx() != nil {}
        #expect(try !rings.tx.finalCheckForRequests())
        let armed = count(txPort)
        try Self.send([1], port: 7001, in: ns)
        try await Self.awaitDatagram(rings, port: 7001)
        try await eventually("the armed push notified") { count(txPort) == armed + 1 }
        // Not asked again: the next frame goes out without a notification.
        try Self.send([2], port: 7002, in: ns)
        try await Self.awaitDatagram(rings, port: 7002)
        #expect(try !rings.tx.finalCheckForRequests())
        try Self.send([3], port: 7003, in: ns)
        try await Self.awaitDatagram(rings, port: 7003)
        try await eventually("the re-armed push notified") { count(txPort) >= armed + 2 }
        #expect(count(txPort) == armed + 2)
        // Rx pages posted again after a delivery cross no req_event the backend set.
        try rings.deliver(Frames.udp4(payload: [9], port: Self.port), flags: .dataValidated)
        try await eventually("rx ring refilled") { try rings.postedRx() == 256 }
        #expect(count(rxPort) == 1)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func txErrorAnswersAreCountedAndALyingIDDisconnects() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        try Self.send([1], port: 7101, in: ns)
        try await eventually("a chain answered NETIF_RSP_ERROR") { try rings.takeTx(status: .error) != nil }
        try await eventually("the error counted") { frontend.counters.txErrors == 1 }
        #expect(frontend.violation == nil)
        try Self.send([2], port: 7102, in: ns)
        try await eventually("a chain answered for an id never sent") { try rings.takeTx(lieAboutID: true) != nil }
        try await eventually("the lie seen") { frontend.violation != nil }
        guard case .txResponseID? = frontend.violation else {
            Issue.record("violation \(String(describing: frontend.violation))")
            return
        }
        try await eventually("backend disconnected") { !rig.hooks.disconnects.withLock { $0.isEmpty } }
        await frontend.close()
        tap.close()
        #expect(frontend.grantedPageSets == 0)
        await rig.shutdown()
    }

    /// A packet socket in `ns` that gets every frame with the virtio-net header the kernel
    /// makes from its socket buffer (PACKET_VNET_HDR): what the stack took a packet as.
    static func packetSocket(in ns: TestNamespace) throws -> Int32 {
        try ns.namespace.run { () throws(Errno) -> Int32 in
            // ETH_P_ALL, in network order.
            let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(3).bigEndian))
            guard fd >= 0 else { throw Errno.current }
            var on: Int32 = 1
            // SOL_PACKET (263), PACKET_VNET_HDR (15): linux/if_packet.h.
            guard setsockopt(fd, 263, 15, &on, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                let error = Errno.current
                close(fd)
                throw error
            }
            return fd
        }.get()
    }

    /// A GSO packet from the backend (a TCPv4 extra over five slots), with its checksum
    /// left blank or not, reaches the guest side's stack as one GSO packet with a partial
    /// checksum at the TCP header, which is how the kernel segments it further.
    @Test(arguments: [true, false])
    func gsoPacketFromTheBackendReachesTheStackAsGSO(checksumBlank: Bool) async throws {
        let (rig, frontend, tap, ns) = try await Self.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let capture = try Self.packetSocket(in: ns)
        defer { close(capture) }
        var frame = Frames.tcp4(payload: Frames.payload(16_000))
        if checksumBlank { _ = try Frames.makePartial(&frame) }
        let flags: NetifRxFlags = checksumBlank ? [.checksumBlank, .dataValidated] : []
        try rings.deliver(frame, flags: flags, extras: [NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))])
        var seen: [UInt8]?
        for _ in 0 ..< 16 {
            guard let packet = Self.receive(capture) else { break }
            if packet.count == VirtioNetHeader.size + frame.count, Array(packet[VirtioNetHeader.size ..< VirtioNetHeader.size + 12]) == Array(frame[0 ..< 12]) {
                seen = packet
                break
            }
        }
        let packet = try #require(seen, "the GSO packet never reached the stack")
        let header = try #require(VirtioNetHeader(decoding: packet))
        #expect(header.gsoType == .tcpv4 && header.gsoSize == 1448)
        #expect(header.flags.contains(.needsChecksum))
        #expect(header.csumStart == 34 && header.csumOffset == 16)
        #expect(frontend.counters.rxDropped == 0)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    /// A TCPv4 GSO packet the guest side's stack transmits (injected through a
    /// PACKET_VNET_HDR socket, as a TSO send would make it) comes out of the TAP device
    /// unsegmented, the TAP offering TSO4 because the backend offers feature-gso-tcpv4, and
    /// goes onto the ring as one chain with a GSO extra-info slot and NETTXF_csum_blank.
    @Test func gsoPacketFromTheStackGoesOutAsOneChain() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let injector = try Self.packetSocket(in: ns)
        defer { close(injector) }
        var frame = Frames.tcp4(payload: Frames.payload(20_000, seed: 5))
        // Outgoing: from the guest to the peer.
        frame.replaceSubrange(0 ..< 12, with: Frames.peerMAC.octets + (try tap.hardwareAddress()).octets)
        frame.replaceSubrange(26 ..< 34, with: Frames.guestIP + Frames.peerIP)
        var header = try Frames.makePartial(&frame)
        header.gsoType = .tcpv4
        header.gsoSize = 1448
        header.headerLength = 54
        // struct sockaddr_ll: family, protocol (big-endian), ifindex, hatype, pkttype, halen, addr[8].
        var address = [UInt8](repeating: 0, count: 20)
        address.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
            bytes.storeBytes(of: UInt16(0x0800).bigEndian, toByteOffset: 2, as: UInt16.self)
            bytes.storeBytes(of: tap.index, toByteOffset: 4, as: Int32.self)
        }
        let packet = header.bytes + frame
        let sent = address.withUnsafeBytes { to in
            packet.withUnsafeBytes {
                sendto(injector, $0.baseAddress, $0.count, 0, to.baseAddress!.assumingMemoryBound(to: sockaddr.self), 20)
            }
        }
        #expect(sent == packet.count, "sendto: errno \(errno)")
        var found: ScriptedNetBackend.Rings.TxPacket?
        try await eventually("the GSO packet as one tx chain") {
            while found == nil, let taken = try rings.takeTx() {
                if taken.data.count == frame.count { found = taken }
            }
            return found != nil
        }
        let chain = try #require(found)
        #expect(chain.packet.extras == [NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))])
        #expect(chain.packet.flags == [.checksumBlank, .dataValidated])
        #expect(chain.packet.fragments.count == 5)
        #expect(chain.data == frame)
        #expect(frontend.counters.txDropped == 0)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func backendThatAnswersAnotherSlotIsDisconnected() async throws {
        let (rig, frontend, tap, ns) = try await Self.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        try rings.answerRx(id: 7, size: 60)
        try await eventually("the lie seen") { frontend.violation != nil }
        #expect(frontend.violation == .rxResponseID(found: 7, expected: 0))
        try await eventually("frontend left Connected") { frontend.state == .closing || frontend.state == .closed }
        try await eventually("backend disconnected") { !rig.hooks.disconnects.withLock { $0.isEmpty } }
        await frontend.close()
        tap.close()
        #expect(frontend.grantedPageSets == 0)
        await rig.shutdown()
    }
}

extension sockaddr_in {
    init(ip: [UInt8], port: UInt16) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = port.bigEndian
        sin_addr.s_addr = UInt32(ip[0]) | UInt32(ip[1]) << 8 | UInt32(ip[2]) << 16 | UInt32(ip[3]) << 24
    }
}
