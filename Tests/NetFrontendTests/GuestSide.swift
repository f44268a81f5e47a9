import Glibc
import Netif
import SystemCalls
import Tap
import Testing
import XenTesting
import XenBus
import XenStore
@testable import NetFrontend

/// The guest side the device tests share: a TAP device in a namespace the test makes,
/// sockets inside it, and the scripted backend connected to the frontend under test.
enum GuestSide {
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
    /// the guest address and a static neighbour for the peer; with `queues`, the backend
    /// offers `maxQueues`, the frontend asks for `queues` pairs and the TAP device is
    /// multi-queue.
    static func connected(split: Bool = false, ipv6: Bool = true, queues: Int? = nil,
                          maxQueues: UInt32? = nil) async throws -> (NetRig, NetFrontend, TapDevice, TestNamespace) {
        let ns = try TestNamespace()
        if !ipv6 {
            // No neighbour discovery or MLD frames: the tx ring carries only the test's own.
            let result = try Command.run("/usr/sbin/ip", ["netns", "exec", ns.name, "sysctl", "-qw",
                                                          "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1"])
            try #require(result.status == 0, "sysctl: \(result.stderr)")
        }
        do {
            let rig = try await NetRig(offered: NetRig.features(split: split, maxQueues: maxQueues))
            let frontend = try rig.frontend(queues: queues)
            let tap = try TapDevice(name: "nf0", multiQueue: queues != nil, in: ns.namespace)
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

    /// Sends `payload` to the peer's `port` from a socket made in `ns`.
    static func send(_ payload: [UInt8], port: UInt16, in ns: TestNamespace) throws {
        let sender = try GuestSide.udpSocket(in: ns, bindPort: nil)
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
}

extension sockaddr_in {
    init(ip: [UInt8], port: UInt16) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = port.bigEndian
        sin_addr.s_addr = UInt32(ip[0]) | UInt32(ip[1]) << 8 | UInt32(ip[2]) << 16 | UInt32(ip[3]) << 24
    }
}
