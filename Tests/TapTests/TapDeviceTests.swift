import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenTesting

/// TAP devices in network namespaces each test makes and deletes: settings seen by the
/// kernel, frames through the kernel's own IPv4 stack, carrier, multi-queue, teardown.
@Suite struct TapDeviceTests {
    static let local: [UInt8] = [198, 18, 0, 1]
    static let peer: [UInt8] = [198, 18, 0, 2]
    static let localMAC = EthernetAddress(0x02, 0x00, 0x00, 0x5E, 0x00, 0x01)
    static let peerMAC = EthernetAddress(0x02, 0x00, 0x00, 0x5E, 0x00, 0x02)

    /// A TAP in `ns`, MTU 9000, the local address and MAC, up, with a permanent
    /// neighbour entry for the made-up peer so no ARP is needed.
    static func configuredTap(in ns: TestNamespace, offloads: TapOffloads = []) throws -> TapDevice {
        let tap = try TapDevice(name: "xstap0", in: ns.namespace)
        do {
            try tap.setOffloads(offloads)
            try tap.setMTU(9000)
            try tap.setHardwareAddress(localMAC)
            try tap.setUp(true)
            try ns.ip("addr", "add", "198.18.0.1/24", "dev", tap.name)
            try ns.ip("neigh", "add", "198.18.0.2", "lladdr", peerMAC.description, "dev", tap.name, "nud", "permanent")
        } catch {
            tap.close()
            throw error
        }
        return tap
    }

    /// Writes one frame (virtio-net header first) to a non-blocking TAP queue.
    static func write(_ frame: [UInt8], to fd: Int32) throws {
        let written = frame.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == frame.count else { throw Errno.current }
    }

    /// Reads frames from `fd` until `match` accepts one (the kernel also sends IPv6
    /// router solicitations and the like); nil if none comes within `limit` frames or a
    /// long quiet spell, which the caller reports as the failure.
    static func read(from fd: Int32, limit: Int = 200, until match: ([UInt8]) -> Bool) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65_536 + 64)
        for _ in 0..<limit {
            var poll = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&poll, 1, 20_000) == 1 else { return nil }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { continue }
            let frame = Array(buffer[..<count])
            if match(frame) { return frame }
        }
        return nil
    }

    @Test func refusesNamesTheKernelWouldRefuse() {
        for (name, start) in [("", "it is empty"), ("abcdefghijklmnop", "it is 16 bytes"), ("a/b", "it holds byte 0x2f"),
                              ("a b", "it holds byte 0x20"), ("eth0:1", "it holds byte 0x3a"), ("..", "it is ..")] {
            #expect {
                _ = try TapDevice(name: name)
            } throws: { error in
                guard case let TapError.invalidName(found, why) = error else { return false }
                return found == name && why.hasPrefix(start)
            }
        }
        #expect(throws: TapError.vnetHeaderSize(8)) { _ = try TapDevice(vnetHeaderSize: 8) }
    }

    @Test func refusesMissingAndMalformedNamespaces() throws {
        #expect(throws: TapError.invalidNamespaceName("a/b")) { _ = try NetworkNamespace("a/b") }
        #expect(throws: TapError.invalidNamespaceName("..")) { _ = try NetworkNamespace("..") }
        let missing = try NetworkNamespace("xensplit-absent-\(getpid())")
        #expect(throws: TapError.namespaceOpen(path: missing.path, .ENOENT)) { _ = try missing.run { 1 } }
    }

    @Test func kernelSeesTheSettings() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try Self.configuredTap(in: ns)
        defer { tap.close() }
        #expect(try tap.mtu() == 9000)
        #expect(try tap.hardwareAddress() == Self.localMAC)
        #expect(try tap.isUp())
        #expect(try ns.readSysfs("/sys/class/net/xstap0/mtu") == "9000")
        #expect(try ns.readSysfs("/sys/class/net/xstap0/address") == Self.localMAC.description)
        #expect(try ns.readSysfs("/sys/class/net/xstap0/ifindex") == String(tap.index))
        try tap.setHardwareAddress(.netbackVif)
        #expect(try ns.readSysfs("/sys/class/net/xstap0/address") == "fe:ff:ff:ff:ff:ff")
        try tap.setUp(false)
        #expect(try !tap.isUp())
        // The device and the control socket live in the namespace, not in the test's.
        #expect(if_nametoindex(tap.name) == 0)
    }

    @Test func kernelNamesADeviceWithNoName() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try TapDevice(in: ns.namespace)
        defer { tap.close() }
        #expect(tap.name.hasPrefix("tap"))
        #expect(try ns.hasLink(tap.name))
    }

    @Test func kernelAnswersAnEchoRequest() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try Self.configuredTap(in: ns)
        defer { tap.close() }
        let fd = tap.queues[0]

        let payload = (0..<56).map { UInt8($0 * 7 & 0xFF) }
        let icmp = TestFrames.echoRequest(identifier: 0xBEEF, sequence: 7, payload: payload)
        let request = VirtioNetHeader().bytes + TestFrames.ethernet(to: Self.localMAC, from: Self.peerMAC)
            + TestFrames.ipv4(from: Self.peer, to: Self.local, protocol: 1, payloadLength: icmp.count) + icmp
        try Self.write(request, to: fd)

        let reply = try #require(Self.read(from: fd) { frame in
            frame.count >= 10 + 14 + 20 + 8 && TestFrames.u16(frame, 22) == 0x0800 && frame[10 + 14 + 9] == 1
                && frame[10 + 34] == 0 && TestFrames.u16(frame, 10 + 38) == 0xBEEF
        }, "no echo reply came back from the TAP")
        let header = try #require(VirtioNetHeader(decoding: reply))
        #expect(header.gsoType == .none)
        let frame = Array(reply[10...])
        #expect(Array(frame[0..<6]) == Self.peerMAC.octets)
        #expect(Array(frame[6..<12]) == Self.localMAC.octets)
        #expect(Array(frame[26..<30]) == Self.local)
        #expect(Array(frame[30..<34]) == Self.peer)
        #expect(InternetChecksum.checksum(of: Array(frame[14..<34])) == 0, "IPv4 header checksum")
        let icmpReply = Array(frame[34..<(14 + Int(TestFrames.u16(frame, 16)))])
        #expect(InternetChecksum.checksum(of: icmpReply) == 0, "ICMP checksum")
        #expect(TestFrames.u16(icmpReply, 6) == 7)
        #expect(Array(icmpReply[8...]) == payload)
    }

    @Test func partialChecksumReachesAUDPSocket() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try Self.configuredTap(in: ns, offloads: [.checksum, .tso4, .tso6])
        defer { tap.close() }

        // The socket is made in the namespace's thread, so it stays in the namespace.
        let port: UInt16 = 40_123
        let socketFD = try ns.namespace.run { () throws(Errno) -> Int32 in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Errno.current }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(198) | UInt32(18) << 8 | UInt32(0) << 16 | UInt32(1) << 24
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
        defer { close(socketFD) }

        let payload = (0..<333).map { UInt8(($0 * 13 + 5) & 0xFF) }
        let udp = TestFrames.udp(sourcePort: 5555, destinationPort: port, payload: payload)
        var frame = TestFrames.ethernet(to: Self.localMAC, from: Self.peerMAC)
            + TestFrames.ipv4(from: Self.peer, to: Self.local, protocol: 17, payloadLength: udp.count) + udp
        // The checksum as a guest leaves it for the backend: pseudo-header sum only.
        let location = try NetifChecksumOffload.locate(in: frame)
        frame.withUnsafeMutableBytes { NetifChecksumOffload.writePseudoHeaderSum(into: $0, at: location) }
        let header = VirtioNetHeader(flags: .needsChecksum, csumStart: UInt16(location.csumStart),
                                     csumOffset: UInt16(location.csumOffset))
        try Self.write(header.bytes + frame, to: tap.queues[0])

        var poll = pollfd(fd: socketFD, events: Int16(POLLIN), revents: 0)
        let ready = Glibc.poll(&poll, 1, 20_000)
        try #require(ready == 1, "no datagram reached the socket")
        var received = [UInt8](repeating: 0, count: 2048)
        let count = received.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, 0) }
        #expect(count == payload.count)
        #expect(Array(received[..<max(count, 0)]) == payload)
    }

    /// A datagram the namespace's stack sends out through the TAP: with TUN_F_CSUM its
    /// checksum comes partial, at the place NetifChecksumOffload finds, and finishing it
    /// there gives a checksum that verifies; without, it comes finished.
    @Test(arguments: [true, false])
    func kernelLeavesPartialChecksumsOnlyWhenOffered(offered: Bool) throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try Self.configuredTap(in: ns, offloads: offered ? [.checksum] : [])
        defer { tap.close() }

        let port: UInt16 = 40_999
        let payload = (0..<200).map { UInt8(($0 * 31 + 1) & 0xFF) }
        try ns.namespace.run { () throws(Errno) in
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Errno.current }
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(198) | UInt32(18) << 8 | UInt32(0) << 16 | UInt32(2) << 24
            let sent = withUnsafePointer(to: &address) { to in
                to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                    payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
            guard sent == payload.count else { throw Errno.current }
        }.get()

        let read = try #require(Self.read(from: tap.queues[0]) { frame in
            frame.count >= 10 + 42 && TestFrames.u16(frame, 22) == 0x0800 && frame[10 + 23] == 17
                && TestFrames.u16(frame, 10 + 36) == port
        }, "the datagram did not come out of the TAP")
        let header = try #require(VirtioNetHeader(decoding: read))
        var frame = Array(read[10...])
        #expect(Array(frame[42...]) == payload)
        let location = try NetifChecksumOffload.locate(in: frame)
        if offered {
            #expect(header.flags.contains(.needsChecksum))
            #expect(Int(header.csumStart) == location.csumStart)
            #expect(Int(header.csumOffset) == location.csumOffset)
            try frame.withUnsafeMutableBytes { buffer in
                try NetifChecksumOffload.completePartialChecksum(in: buffer, start: Int(header.csumStart),
                                                                 offset: Int(header.csumOffset), end: location.end)
            }
        } else {
            #expect(!header.flags.contains(.needsChecksum))
        }
        // The pseudo-header and the segment, with a finished checksum, sum to zero.
        let length = location.transportLength
        let pseudo = Array(frame[26..<34]) + [0, 17, UInt8(length >> 8), UInt8(length & 0xFF)]
        #expect(InternetChecksum.checksum(of: pseudo + Array(frame[location.csumStart..<location.end])) == 0)
    }

    @Test func carrierOffIsSeenByTheKernel() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try Self.configuredTap(in: ns)
        defer { tap.close() }
        #expect(try ns.readSysfs("/sys/class/net/xstap0/carrier") == "1")
        try tap.setCarrier(false)
        #expect(try ns.readSysfs("/sys/class/net/xstap0/carrier") == "0")
        try tap.setCarrier(true)
        #expect(try ns.readSysfs("/sys/class/net/xstap0/carrier") == "1")
    }

    @Test func deviceGoesWhenItsQueuesClose() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try TapDevice(name: "xstap1", multiQueue: true, in: ns.namespace)
        let second = try tap.attachQueue()
        #expect(tap.queues.count == 2 && tap.queues[1] == second)
        #expect(try ns.hasLink("xstap1"))
        tap.close()
        #expect(tap.queues.isEmpty)
        #expect(try !ns.hasLink("xstap1"))
        #expect(throws: TapError.closed(device: "xstap1")) { try tap.mtu() }
        #expect(throws: TapError.closed(device: "xstap1")) { try tap.attachQueue() }
        tap.close()
    }

    @Test func singleQueueDeviceRefusesASecondQueue() throws {
        let ns = try TestNamespace()
        defer { ns.delete() }
        let tap = try TapDevice(name: "xstap2", in: ns.namespace)
        defer { tap.close() }
        #expect(throws: TapError.deviceCall(.setInterface, device: "xstap2", .EBUSY)) { try tap.attachQueue() }
        #expect(tap.queues.count == 1)
    }
}
