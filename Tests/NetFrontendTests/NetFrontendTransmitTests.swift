import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenTesting
import XenBus
import XenStore
@testable import NetFrontend

/// Frames the guest side's stack sends, as the scripted backend finds them on the tx ring:
/// pages, checksum and GSO as negotiated, notifications only when asked, the backend's
/// error answers counted and its lies disconnected.
@Suite(.serialized)
struct NetFrontendTransmitTests {
    @Test func datagramSentOnTheTapArrivesAsATxChain() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let sender = try GuestSide.udpSocket(in: ns, bindPort: nil)
        defer { close(sender) }
        let payload = Frames.payload(6000)
        var peer = sockaddr_in(ip: Frames.peerIP, port: GuestSide.port)
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
                if data.count > 42, Frames.u16(data, 12) == 0x0800, data[23] == 17, Frames.u16(data, 36) == GuestSide.port {
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
        let (rig, frontend, tap, ns) = try await GuestSide.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let sender = try GuestSide.udpSocket(in: ns, bindPort: nil)
        defer { close(sender) }
        let payload = Frames.payload(300)
        var peer = sockaddr_in(ip: Frames.peerIP, port: GuestSide.port)
        _ = withUnsafePointer(to: &peer) { to in
            to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                payload.withUnsafeBytes { sendto(sender, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var found: ScriptedNetBackend.Rings.TxPacket?
        try await eventually("the datagram as a tx chain") {
            while let packet = try rings.takeTx() {
                if packet.data.count == 42 + payload.count, Frames.u16(packet.data, 36) == GuestSide.port {
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

    /// A TCPv4 GSO packet the guest side's stack transmits (injected through a
    /// PACKET_VNET_HDR socket, as a TSO send would make it) comes out of the TAP device
    /// unsegmented, the TAP offering TSO4 because the backend offers feature-gso-tcpv4, and
    /// goes onto the ring as one chain with a GSO extra-info slot and NETTXF_csum_blank.
    @Test func gsoPacketFromTheStackGoesOutAsOneChain() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let injector = try GuestSide.packetSocket(in: ns)
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

    /// io/ring.h's event suppression from the frontend's side: it notifies a port only
    /// when a push crosses the backend's req_event, so a backend that does not ask again
    /// hears nothing, and one that does (its final check) hears the next push.
    @Test func notifiesOnlyWhenTheBackendAsks() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(split: true, ipv6: false)
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
        try GuestSide.send([1], port: 7001, in: ns)
        try await GuestSide.awaitDatagram(rings, port: 7001)
        try await eventually("the armed push notified") { count(txPort) == armed + 1 }
        // Not asked again: the next frame goes out without a notification.
        try GuestSide.send([2], port: 7002, in: ns)
        try await GuestSide.awaitDatagram(rings, port: 7002)
        #expect(try !rings.tx.finalCheckForRequests())
        try GuestSide.send([3], port: 7003, in: ns)
        try await GuestSide.awaitDatagram(rings, port: 7003)
        try await eventually("the re-armed push notified") { count(txPort) >= armed + 2 }
        #expect(count(txPort) == armed + 2)
        // Rx pages posted again after a delivery cross no req_event the backend set.
        try rings.deliver(Frames.udp4(payload: [9], port: GuestSide.port), flags: .dataValidated)
        try await eventually("rx ring refilled") { try rings.postedRx() == 256 }
        #expect(count(rxPort) == 1)
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    @Test func txErrorAnswersAreCountedAndALyingIDDisconnects() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        try GuestSide.send([1], port: 7101, in: ns)
        try await eventually("a chain answered NETIF_RSP_ERROR") { try rings.takeTx(status: .error) != nil }
        try await eventually("the error counted") { frontend.counters.txErrors == 1 }
        #expect(frontend.violation == nil)
        try GuestSide.send([2], port: 7102, in: ns)
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
}
