import CTap
import Glibc
import Tap

/// The host end of a vif as a netif backend check sees it: the interface the backend made
/// for the guest (`vifDOMID.DEVID`), in the network namespace it was made in. Frames the
/// guest sends are read there with a packet socket; frames for the guest are written
/// there. With `plugs`, the peer also does what the vif hotplug script does: the link up,
/// IPv6 off (so the kernel sends the guest nothing of its own) and `hotplug-status`.
public final class VifHostSide: @unchecked Sendable {
    // SAFETY (@unchecked): used by one NetfrontPeer, one task at a time.

    /// The namespace the backend makes its interfaces in; nil is this process's.
    public let namespace: NetworkNamespace?
    /// Whether the peer stands in for the vif hotplug script.
    public let plugs: Bool
    /// The interface's name, once the backend's directory told it.
    private(set) var interface: String = ""
    /// The packet socket bound to the interface, and the index it was bound to.
    private var socket: Int32 = -1
    private var boundIndex: Int32 = 0
    /// struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
    static let vnetHeaderSize = 10
    /// The virtio-net header of the frame ``receive(within:matching:)`` last returned.
    private(set) var lastHeader: [UInt8] = []

    public init(namespace: NetworkNamespace?, plugs: Bool) {
        self.namespace = namespace
        self.plugs = plugs
    }

    deinit { if socket >= 0 { Glibc.close(socket) } }

    /// Runs `body` in the namespace (or here when there is none).
    private func inNamespace<T>(_ body: () throws(PeerError) -> T) throws(PeerError) -> T {
        guard let namespace else { return try body() }
        let result: Result<T, PeerError>
        do { result = try namespace.run(body) } catch { throw PeerError.platform("entering \(namespace.name): \(error)") }
        return try result.get()
    }

    /// Binds to `interface` (again when the backend made it anew); with ``plugs``, brings
    /// it up with IPv6 off. Returns what it did, for evidence.
    @discardableResult
    func attach(_ interface: String) throws(PeerError) -> String {
        self.interface = interface
        let plugs = self.plugs
        let (fd, index) = try inNamespace { () throws(PeerError) -> (Int32, Int32) in
            let control = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard control >= 0 else { throw PeerError.platform("socket: errno \(errno)") }
            defer { Glibc.close(control) }
            var index: Int32 = 0
            guard ctap_get_ifindex(control, interface, &index) == 0 else {
                throw PeerError.platform("no interface \(interface) in \(namespace?.name ?? "this namespace") (errno \(errno))")
            }
            if plugs {
                // Written before the link comes up, so no address is made for it.
                let path = "/proc/sys/net/ipv6/conf/\(interface)/disable_ipv6"
                let knob = open(path, O_WRONLY | O_CLOEXEC)
                if knob >= 0 {
                    _ = write(knob, "1", 1)
                    Glibc.close(knob)
                }
                var flags: Int16 = 0
                guard ctap_get_flags(control, interface, &flags) == 0,
                      ctap_set_flags(control, interface, flags | Int16(ctap_iff_up)) == 0 else {
                    throw PeerError.platform("bringing \(interface) up: errno \(errno)")
                }
            }
            if index == boundIndex, socket >= 0 { return (socket, index) }
            // ETH_P_ALL in network order.
            let fd = Glibc.socket(AF_PACKET, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), Int32(UInt16(3).bigEndian))
            guard fd >= 0 else { throw PeerError.platform("packet socket: errno \(errno)") }
            // SOL_PACKET (263), PACKET_VNET_HDR (15): each frame comes and goes behind a
            // virtio-net header, which says how the kernel took it (checksum, GSO).
            var on: Int32 = 1
            guard setsockopt(fd, 263, 15, &on, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                let error = errno
                Glibc.close(fd)
                throw PeerError.platform("PACKET_VNET_HDR: errno \(error)")
            }
            var address = Self.linkAddress(index: index, protocol: 3)
            let bound = address.withUnsafeMutableBytes {
                bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            guard bound == 0 else {
                let error = errno
                Glibc.close(fd)
                throw PeerError.platform("binding a packet socket to \(interface): errno \(error)")
            }
            return (fd, index)
        }
        if fd != socket {
            if socket >= 0 { Glibc.close(socket) }
            socket = fd
            boundIndex = index
        }
        return "\(interface) (index \(index))\(plugs ? " up, IPv6 off" : "")"
    }

    /// struct sockaddr_ll: family, protocol (network order), ifindex, hatype, pkttype, halen, addr[8].
    static func linkAddress(index: Int32, protocol value: UInt16) -> [UInt8] {
        var address = [UInt8](repeating: 0, count: 20)
        address.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: UInt16(AF_PACKET), toByteOffset: 0, as: UInt16.self)
            bytes.storeBytes(of: value.bigEndian, toByteOffset: 2, as: UInt16.self)
            bytes.storeBytes(of: index, toByteOffset: 4, as: Int32.self)
        }
        return address
    }

    /// Waits until the interface is operationally up (IFF_RUNNING): the kernel queues
    /// frames to it only once its link watch has seen the carrier the backend turned on.
    /// False when it is not within `within`.
    func waitRunning(within: Duration) async throws -> Bool {
        let interface = self.interface
        let deadline = ContinuousClock.now + within
        while true {
            let flags = try inNamespace { () throws(PeerError) -> Int16 in
                let control = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard control >= 0 else { throw PeerError.platform("socket: errno \(errno)") }
                defer { Glibc.close(control) }
                var flags: Int16 = 0
                guard ctap_get_flags(control, interface, &flags) == 0 else { throw PeerError.platform("flags of \(interface): errno \(errno)") }
                return flags
            }
            // IFF_RUNNING (linux/if.h).
            if flags & 0x40 != 0 { return true }
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Drops whatever the socket holds.
    func drain() {
        guard socket >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while buffer.withUnsafeMutableBytes({ recv(socket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }) >= 0 {}
    }

    /// Writes `frame` on the interface, towards the guest.
    func send(_ frame: [UInt8]) throws(PeerError) {
        guard socket >= 0 else { throw PeerError.unusable("no vif interface attached") }
        let packet = [UInt8](repeating: 0, count: Self.vnetHeaderSize) + frame
        let sent = packet.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, 0) }
        guard sent == packet.count else { throw PeerError.platform("writing a frame on \(interface): errno \(errno)") }
    }

    /// The next frame the guest sent that `matches`, within `within`; nil when none came.
    /// Frames going out (our own) and others are skipped.
    func receive(within: Duration, matching matches: ([UInt8]) -> Bool) throws(PeerError) -> [UInt8]? {
        guard socket >= 0 else { throw PeerError.unusable("no vif interface attached") }
        let deadline = ContinuousClock.now + within
        var buffer = [UInt8](repeating: 0, count: 65536)
        while ContinuousClock.now < deadline {
            var p = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 50)
            if ready < 0, errno != EINTR { throw PeerError.platform("poll: errno \(errno)") }
            guard ready > 0 else { continue }
            var from = [UInt8](repeating: 0, count: 20)
            var length = socklen_t(20)
            let count = buffer.withUnsafeMutableBytes { data in
                from.withUnsafeMutableBytes { address in
                    recvfrom(socket, data.baseAddress, data.count, Int32(MSG_DONTWAIT),
                             address.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
                }
            }
            guard count >= 0 else { continue }
            // sll_pkttype 4 is PACKET_OUTGOING: a frame towards the guest, not from it.
            if from[10] == 4 || count < Self.vnetHeaderSize { continue }
            let frame = Array(buffer[Self.vnetHeaderSize ..< count])
            if matches(frame) {
                lastHeader = Array(buffer[..<Self.vnetHeaderSize])
                return frame
            }
        }
        return nil
    }
}
