import Foundation
import NetBackend
import Netif
import Tap
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// The control ring end to end: a raw frontend sets hashing up over it and watches
/// which rx ring each packet arrives on and what hash extra it carries.
@Suite("netback control ring", .serialized)
struct NetbackControlRingTests {
    static let key = NetifHashTests_rssKey

    @Test("feature-ctrl-ring is offered; every message type answered over the ring with its status; the vif keeps passing traffic")
    func everyMessageType() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (_, frontend) = try await world.connectedGuest(controlRing: true)
            let store = try world.dom0.connectXenStore()
            #expect(try await store.readString(frontend.backendPath + "/" + NetifBackendFeatures.Key.controlRing) == "1")
            let keyRef = try frontend.controlPage(0, Self.key)
            let tableRef = try frontend.controlPage(1, [0, 0, 0, 0, 1, 0, 0, 0])
            let cases: [(NetifCtrlRequest, NetifCtrlStatus, UInt32)] = [
                (.init(id: 1, type: 0), .notSupported, 0),
                (.init(id: 2, type: 0xBEEF, data: (1, 2, 3)), .notSupported, 0),
                (.init(id: 3, .getHashFlags), .notSupported, 0),
                (.init(id: 4, .setHashFlags, data: (1, 0, 0)), .notSupported, 0),
                (.init(id: 5, .setHashAlgorithm, data: (9, 0, 0)), .invalidParameter, 0),
                (.init(id: 6, .setHashAlgorithm, data: (1, 0, 0)), .success, 0),
                (.init(id: 7, .getHashFlags), .success, 0xF),
                (.init(id: 8, .setHashFlags, data: (0x10, 0, 0)), .invalidParameter, 0),
                (.init(id: 9, .setHashFlags, data: (0x3, 0, 0)), .success, 0),
                (.init(id: 10, .setHashKey, data: (keyRef, 41, 0)), .bufferOverflow, 0),
                (.init(id: 11, .setHashKey, data: (0xFFFF, 16, 0)), .invalidParameter, 0),  // never granted
                (.init(id: 12, .setHashKey, data: (keyRef, 40, 0)), .success, 0),
                (.init(id: 13, .getHashMappingSize), .success, 128),
                (.init(id: 14, .setHashMappingSize, data: (129, 0, 0)), .invalidParameter, 0),
                (.init(id: 15, .setHashMappingSize, data: (2, 0, 0)), .success, 0),
                (.init(id: 16, .setHashMapping, data: (tableRef, 2, 1)), .invalidParameter, 0),  // past the table
                (.init(id: 17, .setHashMapping, data: (tableRef, 1025, 0)), .bufferOverflow, 0),  // past the page
                (.init(id: 18, .setHashMapping, data: (tableRef, 2, 0)), .invalidParameter, 0),  // queue 1 of 1
                (.init(id: 19, .setHashMapping, data: (tableRef, 1, 0)), .success, 0),
                (.init(id: 20, .getGrefMappingSize, data: (0, 0, 0)), .success, 0),
                (.init(id: 21, .getGrefMappingSize, data: (1, 0, 0)), .invalidParameter, 0),
                (.init(id: 22, .addGrefMapping, data: (0, tableRef, 1)), .notSupported, 0),
                (.init(id: 23, .delGrefMapping, data: (0, tableRef, 1)), .notSupported, 0),
            ]
            // One at a time (each after the last's answer), then all again in one push.
            for (request, status, data) in cases {
                let response = try await frontend.ctrl(request)
                #expect(response == NetifCtrlResponse(answering: request, status, data: data), "request \(request.id)")
            }
            // From no algorithm again, so the answers are the same.
            let reset = NetifCtrlRequest(id: 100, .setHashAlgorithm, data: (0, 0, 0))
            let again = try await frontend.ctrl([reset] + cases.map(\.0))
            #expect(again.map(\.status) == [.success] + cases.map(\.1))
            #expect(again.map(\.id) == [100] + cases.map(\.0.id))
            #expect(world.daemon.connectedDevices[frontend.backendPath] == true)
            try await expectEcho(frontend)
        }
    }

    /// Sends an echo request from the guest and waits for dom0's reply on any queue.
    func expectEcho(_ frontend: RawNetfront, sequence: UInt16 = 1) async throws {
        let icmp = TestFrames.echoRequest(identifier: 0x7777, sequence: sequence, payload: Array(repeating: 1, count: 32))
        let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
            + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 1,
                              payloadLength: icmp.count) + icmp
        try frontend.send(frame, id: sequence)
        _ = try await frontend.awaitRx { bytes in
            bytes.count == frame.count && bytes[23] == 1 && bytes[34] == 0 && TestFrames.u16(bytes, 40) == sequence
        }
    }

    @Test("with hashing on, each rx packet carries a hash extra (type and value of io/netif.h's function); off again, none")
    func hashExtra() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (_, frontend) = try await world.connectedGuest(controlRing: true)
            // Off (no algorithm yet): no extra.
            let before = try await ping(frontend, sequence: 1)
            #expect(before.extras.isEmpty && !before.response.flags.contains(.extraInfo))

            try await frontend.enableHashing(types: [.ipv4, .ipv4TCP], key: Self.key)
            let icmp = try await ping(frontend, sequence: 2)
            #expect(icmp.response.flags.contains(.extraInfo))
            let expectedICMP = CtrlFrames.referenceHash(icmp.bytes, key: Self.key, withPorts: false)
            #expect(icmp.extras == [NetifExtraInfo(.hash(type: .ipv4, algorithm: .toeplitz, value: expectedICMP))])

            // A TCP reset: the IPv4+TCP type, over the addresses and ports.
            let reset = try await resetFrom(frontend, port: 40000)
            let expectedTCP = CtrlFrames.referenceHash(reset.packet.bytes, key: Self.key, withPorts: true)
            #expect(reset.packet.extras == [NetifExtraInfo(.hash(type: .ipv4TCP, algorithm: .toeplitz, value: expectedTCP))])
            #expect(expectedTCP != expectedICMP)

            // Only IPv4+TCP enabled: an ICMP packet has no hash input, so no extra.
            let flags = try await frontend.ctrl(NetifCtrlRequest(id: 9, .setHashFlags, data: (NetifHashTypes.ipv4TCP.rawValue, 0, 0)))
            #expect(flags.status == .success)
            let untyped = try await ping(frontend, sequence: 3)
            #expect(untyped.extras.isEmpty)

            // Flags 0 disables hashing.
            _ = try await frontend.ctrl(NetifCtrlRequest(id: 10, .setHashFlags, data: (0, 0, 0)))
            let after = try await resetFrom(frontend, port: 40001)
            #expect(after.packet.extras.isEmpty)
        }
    }

    func ping(_ frontend: RawNetfront, sequence: UInt16) async throws -> RxPacket {
        let icmp = TestFrames.echoRequest(identifier: 0x7777, sequence: sequence, payload: Array(repeating: 1, count: 32))
        let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
            + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 1,
                              payloadLength: icmp.count) + icmp
        try frontend.send(frame, id: sequence)
        return try await frontend.awaitRx { bytes in
            bytes.count == frame.count && bytes[23] == 1 && bytes[34] == 0 && TestFrames.u16(bytes, 40) == sequence
        }.packet
    }

    /// Sends a SYN from the guest's `port` to dom0's closed port 9 (on tx queue `queue`)
    /// and waits for the reset dom0's stack answers with.
    func resetFrom(_ frontend: RawNetfront, port: UInt16, queue: Int = 0) async throws -> (queue: Int, packet: RxPacket) {
        let syn = CtrlFrames.tcpSyn(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, sourcePort: port,
                                    destinationPort: 9, sourceMAC: NetbackDataTests.guestMACBytes)
        try frontend.send(syn, id: port, queue: queue)
        return try await frontend.awaitRx { CtrlFrames.isReset($0, toPort: port) }
    }

    @Test("4 queues: a mapping table sending everything to queue 2 delivers every reset there; a spreading table puts each on mapping[hash % 8]")
    func steering() async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 4
        try await NetWorld.with(try NetWorld(limits: limits)) { world in
            let (_, frontend) = try await world.connectedGuest(queues: 4, controlRing: true)
            try await frontend.enableHashing(types: [.ipv4, .ipv4TCP], key: Self.key, mapping: Array(repeating: 2, count: 8))
            for (index, port) in (41000..<41012).enumerated() {
                // Sent on every tx queue in turn: the kernel's own choice of TAP queue varies.
                let reset = try await resetFrom(frontend, port: UInt16(port), queue: index % 4)
                #expect(reset.queue == 2, "port \(port)")
            }
            let table: [UInt32] = [0, 1, 2, 3, 3, 2, 1, 0]
            try await frontend.enableHashing(types: [.ipv4, .ipv4TCP], key: Self.key, mapping: table)
            var seen = Set<Int>()
            for (index, port) in (42000..<42024).enumerated() {
                let reset = try await resetFrom(frontend, port: UInt16(port), queue: index % 4)
                let hash = CtrlFrames.referenceHash(reset.packet.bytes, key: Self.key, withPorts: true)
                #expect(reset.queue == Int(table[Int(hash % 8)]), "port \(port) hash \(hash)")
                seen.insert(reset.queue)
            }
            #expect(seen.count > 1, "24 flows spread over more than one queue")
            // No table: the hash modulo the queue count.
            try await frontend.enableHashing(types: [.ipv4, .ipv4TCP], key: Self.key)
            for (index, port) in (43000..<43008).enumerated() {
                let reset = try await resetFrom(frontend, port: UInt16(port), queue: index % 4)
                let hash = CtrlFrames.referenceHash(reset.packet.bytes, key: Self.key, withPorts: true)
                #expect(reset.queue == Int(hash % 4), "port \(port)")
            }
        }
    }
}

/// The 40-byte key of Microsoft's RSS verification suite.
let NetifHashTests_rssKey: [UInt8] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
]
