import Synchronization
import Foundation
import Glibc
import NetBackend
import Netif
import Tap
import SystemCalls
import Testing
import XenBus
import XenPlatform
import XenTesting

@Suite("netback data path", .serialized)
struct NetbackDataTests {
    static let guestMAC = "00:16:3e:00:00:02"
    static let guestMACBytes: [UInt8] = [0x00, 0x16, 0x3E, 0x00, 0x00, 0x02]
    static let dom0Address: [UInt8] = [198, 18, 5, 1]
    static let guestAddress: [UInt8] = [198, 18, 5, 2]

    @Test("a guest's echo request reaches dom0's kernel through the TAP device and the reply comes back on rx")
    func echoThroughTheVif() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (_, frontend) = try await world.connectedGuest(features: { $0.rxNotify = true })
            // netback gives its TAP devices Linux netback's address.
            let tapAddress = EthernetAddress.netbackVif

            let payload = (0..<56).map { UInt8($0) }
            let icmp = TestFrames.echoRequest(identifier: 0x4242, sequence: 1, payload: payload)
            let frame = tapAddress.octets + Self.guestMACBytes + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: Self.guestAddress, to: Self.dom0Address, protocol: 1, payloadLength: icmp.count) + icmp
            try frontend.send(frame, id: 7)
            let responses = try await frontend.txResponses(1)
            #expect(responses == [NetifTxResponse(id: 7, status: .okay)])

            // The kernel answers; skip anything else it sends (IPv6 router solicitations).
            var reply: [UInt8] = []
            for _ in 0..<16 {
                let (response, bytes) = try await frontend.receive()
                #expect(response.error == nil)
                if bytes.count >= 34, bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 1, bytes[34] == 0 {
                    reply = bytes
                    break
                }
            }
            #expect(reply.count == frame.count, "an echo reply of the request's size")
            #expect(Array(reply[0..<6]) == Self.guestMACBytes)
            #expect(Array(reply[26..<30]) == Self.dom0Address && Array(reply[30..<34]) == Self.guestAddress)
            #expect(Array(reply[42...]) == payload)
            #expect(InternetChecksum.checksum(of: Array(reply[34...])) == 0, "the ICMP checksum verifies")
        }
    }
}

@Suite("netback offloads and hostile frontends", .serialized)
struct NetbackOffloadTests {
    @Test("a checksum-blank UDP datagram leaves dom0 with the checksum netback located, completed by the kernel")
    func checksumBlankIsCompletedDownstream() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            // A second TAP device, read with no checksum offload, where dom0 routes the
            // guest's datagram: the kernel must finish the checksum at the place netback
            // told it, so a wrong csum_start or csum_offset shows as a bad checksum here.
            let outside = try TapDevice(name: "xsout0", in: world.namespace.namespace)
            defer { outside.close() }
            try outside.setUp(true)
            try world.namespace.ip("addr", "add", "198.18.6.1/24", "dev", "xsout0")
            try world.namespace.ip("neigh", "add", "198.18.6.2", "lladdr", "02:00:00:00:00:66", "dev", "xsout0", "nud", "permanent")
            _ = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", world.namespace.name, "sysctl", "-qw",
                                                     "net.ipv4.ip_forward=1"])
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.connect(features: features)
            // The kernel sends to the vif only once its link watch saw the carrier.
            try await world.waitUntilUp(domain)

            let payload = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            var udp = TestFrames.udp(sourcePort: 4000, destinationPort: 5000, payload: payload)
            let ip = TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: [198, 18, 6, 2], protocol: 17,
                                     payloadLength: udp.count)
            // Only the pseudo-header sum, as a frontend leaving the checksum blank writes it.
            var pseudo = InternetChecksum()
            pseudo.add(Array(ip[12..<20]))
            pseudo.add([0, 17, UInt8(udp.count >> 8), UInt8(udp.count & 0xFF)])
            udp[6] = UInt8(pseudo.sum16 >> 8)
            udp[7] = UInt8(pseudo.sum16 & 0xFF)
            let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4 + ip + udp
            try frontend.send(frame, id: 3, flags: [.checksumBlank, .dataValidated])
            #expect(try await frontend.txResponses(1) == [NetifTxResponse(id: 3, status: .okay)])

            guard let forwarded = Self.read(outside, matching: { $0.count > 34 && $0[23] == 17 }) else {
                Issue.record("the datagram did not come out of dom0's other interface")
                throw NetTestError("no datagram")
            }
            let header = VirtioNetHeader(decoding: forwarded)
            #expect(header?.flags.contains(.needsChecksum) == false, "finished by the kernel")
            let datagram = Array(forwarded[(VirtioNetHeader.size + 34)...])
            #expect(Array(datagram[8...]) == payload)
            var check = InternetChecksum()
            check.add(Array(forwarded[(VirtioNetHeader.size + 26)..<(VirtioNetHeader.size + 34)]))
            check.add([0, 17, UInt8(datagram.count >> 8), UInt8(datagram.count & 0xFF)])
            check.add(datagram)
            #expect(check.sum16 == 0xFFFF, "the UDP checksum verifies")
        }
    }

    /// Reads frames (with their virtio-net header) from `tap` until one matches, for up
    /// to about 10 s.
    static func read(_ tap: TapDevice, matching: ([UInt8]) -> Bool) -> [UInt8]? {
        guard let fd = tap.queues.first else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65_600)
        for _ in 0..<1000 {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 10) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > VirtioNetHeader.size else { continue }
            let frame = Array(buffer[0..<n])
            if matching(Array(frame[VirtioNetHeader.size...])) { return frame }
        }
        return nil
    }
}

/// A flag a test's helper thread reads until the test says stop.
final class LiveFlag: Sendable {
    let value = Mutex(true)
}

@Suite("netback with a guest that stops taking packets", .serialized)
struct NetbackStallTests {
    @Test("a guest that posts no rx buffers loses its carrier after the stall timeout and gets it back when it posts")
    func carrierFollowsTheGuestsBuffers() async throws {
        try await NetWorld.with(try NetWorld(stall: NetbackStallPolicy(drain: .seconds(1), stall: .seconds(2)))) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.connect(features: features, rxBuffers: 2)
            let carrier = "/sys/class/net/vif\(domain).0/carrier"
            #expect(try world.namespace.readSysfs(carrier) == "1")
            // dom0 keeps sending; the guest takes two packets and then posts nothing.
            let pinger = try ChildProcess("/usr/sbin/ip", ["netns", "exec", world.namespace.name, "ping", "-q", "-c", "40", "-i", "0.2", "198.18.5.2"],
                                          standardOutput: .null, standardError: .null)
            defer { pinger.signal(SIGTERM) }
            let namespace = world.namespace
            try await eventually("the carrier goes off", seconds: 30) { (try? namespace.readSysfs(carrier)) == "0" }
            // The pings end before the guest posts again: pings still coming would use the 8
            // buffers up and starve it again, and the carrier would rightly go off again
            // (a full CI run looked late and saw only that).
            pinger.signal(SIGTERM)
            _ = await pinger.exited()
            try frontend.postRx(8)
            // From here the guest is alive: it takes what comes and posts the buffers again,
            // on a thread of its own. A guest that posted 8 buffers once would be starved
            // again by what dom0's kernel sends once the carrier is on (a full CI run missed
            // the short time it was on, twice).
            let live = LiveFlag()
            let poster = Task {
                try await offThePool { [frontend] in
                    while live.value.withLock({ $0 }) {
                        if try frontend.takeAndRepostRx() == 0 { RawNetfront.waitForEvent(frontend.rx.eventChannel, milliseconds: 20) }
                    }
                }
            }
            defer { live.value.withLock { $0 = false } }
            try await eventually("the carrier comes back", seconds: 30) { (try? namespace.readSysfs(carrier)) == "1" }
            live.value.withLock { $0 = false }
            try await poster.value
        }
    }
}

@Suite("netback refusals at connect", .serialized)
struct NetbackRefusalTests {
    static func errorNode(_ world: NetWorld, _ backend: String) async throws -> String {
        let store = try world.dom0.connectXenStore()
        try await eventually("the vif is refused") {
            (try? await store.readString(backend + "/state")) == String(XenbusState.closing.rawValue)
        }
        let node = backend.hasPrefix("/local/domain/0/") ? String(backend.dropFirst("/local/domain/0/".count)) : backend
        return try await store.readString("/local/domain/0/error/" + node + "/error")
    }

    @Test("a frontend that does not ask for rx-copy is refused with an error node naming the key")
    func requestRxCopyZero() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            try await frontend.publish(features: NetifFrontendFeatures())
            let error = try await Self.errorNode(world, frontend.backendPath)
            #expect(error.contains("request-rx-copy"), "\(error)")
        }
    }

    @Test("a vif whose hotplug script failed is refused with the script's error, not connected")
    func hotplugError() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            let store = try world.dom0.connectXenStore()
            let backend = frontend.backendPath
            try await eventually("InitWait") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.initWait.rawValue)
            }
            try await store.write(backend + "/" + NetifToolstackKeys.hotplugError, "bridge xsbr9 does not exist")
            try await store.write(backend + "/" + NetifToolstackKeys.hotplugStatus, "error")
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.publish(features: features)
            let error = try await Self.errorNode(world, backend)
            #expect(error.contains("xsbr9"), "\(error)")
        }
    }
}
