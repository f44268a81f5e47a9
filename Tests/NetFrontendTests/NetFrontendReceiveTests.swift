import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenTesting
import XenBus
import XenStore
@testable import NetFrontend

/// Packets the scripted backend delivers on the rx ring, as the guest side's stack takes
/// them: at a socket, as GSO with a partial checksum; a lying backend disconnected.
@Suite(.serialized)
struct NetFrontendReceiveTests {
    @Test func packetsFromTheBackendReachASocketOnTheGuestSide() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected()
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let receiver = try GuestSide.udpSocket(in: ns, bindPort: GuestSide.port)
        defer { close(receiver) }
        // A plain datagram with validated data, one slot.
        let small = Frames.payload(200, seed: 1)
        try rings.deliver(Frames.udp4(payload: small, port: GuestSide.port), flags: .dataValidated)
        #expect(GuestSide.receive(receiver) == small)
        // A partial checksum left to the guest side, over three slots.
        let large = Frames.payload(9000, seed: 2)
        var frame = Frames.udp4(payload: large, port: GuestSide.port)
        _ = try Frames.makePartial(&frame)
        try rings.deliver(frame, flags: [.checksumBlank, .dataValidated])
        #expect(GuestSide.receive(receiver) == large)
        // Counted just after the write the socket saw.
        try await eventually("both packets counted") { frontend.counters.rxPackets == 2 }
        #expect(frontend.counters.rxBytes == 42 + 200 + frame.count)
        // The posted pages are posted again.
        try await eventually("rx ring refilled") { try rings.postedRx() == 256 }
        await frontend.close()
        tap.close()
        await rig.shutdown()
    }

    /// A GSO packet from the backend (a TCPv4 extra over five slots), with its checksum
    /// left blank or not, reaches the guest side's stack as one GSO packet with a partial
    /// checksum at the TCP header, which is how the kernel segments it further.
    @Test(arguments: [true, false])
    func gsoPacketFromTheBackendReachesTheStackAsGSO(checksumBlank: Bool) async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected(ipv6: false)
        defer { ns.delete() }
        let rings = try #require(rig.hooks.connected)
        let capture = try GuestSide.packetSocket(in: ns)
        defer { close(capture) }
        var frame = Frames.tcp4(payload: Frames.payload(16_000))
        if checksumBlank { _ = try Frames.makePartial(&frame) }
        let flags: NetifRxFlags = checksumBlank ? [.checksumBlank, .dataValidated] : []
        try rings.deliver(frame, flags: flags, extras: [NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))])
        var seen: [UInt8]?
        for _ in 0 ..< 16 {
            guard let packet = GuestSide.receive(capture) else { break }
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

    @Test func backendThatAnswersAnotherSlotIsDisconnected() async throws {
        let (rig, frontend, tap, ns) = try await GuestSide.connected()
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
