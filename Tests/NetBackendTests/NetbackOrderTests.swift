import Glibc
import Netif
import Tap
import Testing
import XenTesting

/// Packet order through the vif. TCP takes packets that overtake each other for loss: a
/// backend that reorders makes the sender resend and back off (the kind of stall the
/// real-Xen runs showed, Protocols/realxen.md). Packets must leave each TAP queue and each
/// tx ring in the order they were queued, however many the backend keeps in flight.
@Suite("netback packet order", .serialized)
struct NetbackOrderTests {
    static let port: UInt16 = 40_123
    static let count = 300

    /// A UDP socket in the world's namespace (dom0's side of the vif), bound to
    /// 198.18.5.1 and `port` when given.
    static func socket(in world: NetWorld, bindPort: UInt16?) throws -> Int32 {
        try world.namespace.namespace.run { () throws(NetTestError) -> Int32 in
            let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw NetTestError("socket: errno \(errno)") }
            guard let bindPort else { return fd }
            var address = Self.address(NetbackDataTests.dom0Address, port: bindPort)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                throw NetTestError("bind: errno \(errno)")
            }
            return fd
        }.get()
    }

    static func address(_ octets: [UInt8], port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = (UInt32(octets[0]) << 24 | UInt32(octets[1]) << 16 | UInt32(octets[2]) << 8
            | UInt32(octets[3])).bigEndian
        return address
    }

    static func sequence(_ payload: some Collection<UInt8>) -> Int {
        payload.prefix(4).reduce(0) { $0 << 8 | Int($1) }
    }

    @Test("datagrams dom0 sends in a burst reach the guest's rx ring in the order they left")
    func receiveKeepsTheOrder() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (_, frontend) = try await world.connectedGuest()
            let fd = try Self.socket(in: world, bindPort: nil)
            defer { close(fd) }
            var destination = Self.address(NetbackDataTests.guestAddress, port: Self.port)
            // Fewer than the TAP queue holds (500): none is dropped while the guest's eight
            // buffers hold the backend back, so all of them come through.
            for sequence in 0..<Self.count {
                let payload = withUnsafeBytes(of: UInt32(sequence).bigEndian) { Array($0) } + [UInt8](repeating: 0x5A, count: 60)
                let sent = payload.withUnsafeBytes { bytes in
                    withUnsafePointer(to: &destination) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                }
                try #require(sent == payload.count, "sendto of datagram \(sequence): errno \(errno)")
            }
            var received: [Int] = []
            while received.count < Self.count {
                let (response, bytes) = try await frontend.receive()
                #expect(response.error == nil)
                // IPv4 UDP to our port, from an IPv4 header of 20 bytes.
                guard bytes.count >= 46, bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 17,
                      TestFrames.u16(bytes, 36) == Self.port else { continue }
                received.append(Self.sequence(bytes[42...]))
            }
            let overtaken = zip(received, received.dropFirst()).filter { $0.0 > $0.1 }.count
            #expect(received == Array(0..<Self.count), "\(overtaken) datagrams overtook an earlier one: \(received)")
        }
    }

    @Test("datagrams the guest sends in bursts of eight leave dom0's side of the vif in ring order")
    func transmitKeepsTheOrder() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (_, frontend) = try await world.connectedGuest()
            let fd = try Self.socket(in: world, bindPort: Self.port)
            defer { close(fd) }
            let tapAddress = EthernetAddress.netbackVif
            var sequence = 0
            var received: [Int] = []
            var buffer = [UInt8](repeating: 0, count: 2048)
            while sequence < Self.count {
                // A burst: eight requests published with one push, as a frontend does.
                let burst = min(RawNetfront.txPages.count, Self.count - sequence)
                for page in 0..<burst {
                    let payload = withUnsafeBytes(of: UInt32(sequence + page).bigEndian) { Array($0) }
                        + [UInt8](repeating: 0xA5, count: 60)
                    let udp = TestFrames.udp(sourcePort: 40_000, destinationPort: Self.port, payload: payload)
                    let frame = tapAddress.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
                        + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address,
                                          protocol: 17, payloadLength: udp.count) + udp
                    let base = frontend.data.view.baseAddress + page * 4096
                    frame.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    try frontend.tx.produceRequest {
                        NetifTxRequest(gref: frontend.data.refs[page], offset: 0, flags: [], id: UInt16(page),
                                       size: UInt16(frame.count)).encode(into: $0, at: 0)
                    }
                }
                _ = try frontend.tx.pushRequestsAndNotify()
                let responses = try await frontend.txResponses(burst)
                #expect(responses.allSatisfy { $0.status == .okay })
                sequence += burst
                // The burst's datagrams, read before the next burst so the socket's buffer
                // never overflows (that would lose some, not reorder them).
                while received.count < sequence {
                    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                    // Bounded: a lost datagram ends the wait as a failure, not a hang.
                    guard poll(&poller, 1, 20_000) == 1 else { break }
                    let length = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    guard length >= 4 else { continue }
                    received.append(Self.sequence(buffer[0..<length]))
                }
            }
            let overtaken = zip(received, received.dropFirst()).filter { $0.0 > $0.1 }.count
            #expect(received == Array(0..<Self.count), "\(overtaken) datagrams overtook an earlier one: \(received)")
        }
    }
}
