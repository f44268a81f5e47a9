import CTap
import Glibc
import Synchronization
import SystemCalls

/// A TAP device (an Ethernet interface whose other side is this process) made through
/// /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (linux/if_tun.h): every frame read
/// or written carries a ``VirtioNetHeader`` of ``vnetHeaderSize`` bytes in front.
///
/// One owner, explicit ``close()`` (deinit closes too): the device exists while one of
/// its queue descriptors is open. The descriptors are non-blocking, for io_uring. A
/// multi-queue device (IFF_MULTI_QUEUE) gets more queues from ``attachQueue()``; the
/// kernel spreads transmitted frames across them.
///
/// Interface settings (MTU, flags, address) go through a datagram socket opened with the
/// device, in the same namespace, and name the device by its name: renaming the device
/// under this object breaks them.
public final class TapDevice: Sendable {
    /// The interface's name (the kernel's choice if none was given).
    public let name: String
    /// The interface's index in its namespace.
    public let index: Int32
    /// Bytes of virtio-net header before each frame (TUNSETVNETHDRSZ).
    public let vnetHeaderSize: Int
    /// Whether the device was made with IFF_MULTI_QUEUE.
    public let isMultiQueue: Bool
    /// The namespace the device lives in, or nil for the caller's.
    public let namespace: NetworkNamespace?

    private struct Descriptors {
        var queues: [Int32]
        var control: Int32
        var closed = false
    }

    private let descriptors: Mutex<Descriptors>

    /// Makes a TAP device: named `name` (at most IFNAMSIZ-1 bytes; a "%d" in it, or nil
    /// for "tap%d", lets the kernel number it), with `vnetHeaderSize` bytes of virtio-net
    /// header (10, or 12 for struct virtio_net_hdr_mrg_rxbuf), and IFF_MULTI_QUEUE if
    /// `multiQueue`; inside `namespace` if one is given. Its first queue is open.
    public init(name: String? = nil, multiQueue: Bool = false, vnetHeaderSize: Int = VirtioNetHeader.size,
                in namespace: NetworkNamespace? = nil) throws(TapError) {
        if let name { try Self.validate(name: name) }
        guard vnetHeaderSize >= VirtioNetHeader.size else { throw .vnetHeaderSize(vnetHeaderSize) }
        var flags = ctap_iff_tap | ctap_iff_no_pi | ctap_iff_vnet_hdr
        if multiQueue { flags |= ctap_iff_multi_queue }

        let made = try Self.inside(namespace) { () throws(TapError) -> Made in
            let (queue, kernelName) = try Self.openQueue(name: name ?? "", flags: flags, vnetHeaderSize: vnetHeaderSize)
            var control: Int32 = -1
            do throws(TapError) {
                control = try Self.call(.controlSocket, kernelName) {
                    socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                }
                var index: Int32 = 0
                try Self.negated(.getIndex, kernelName) { ctap_get_ifindex(control, kernelName, &index) }
                return Made(queue: queue, name: kernelName, control: control, index: index)
            } catch {
                if control >= 0 { Glibc.close(control) }
                Glibc.close(queue)
                throw error
            }
        }
        self.name = made.name
        self.index = made.index
        self.vnetHeaderSize = vnetHeaderSize
        self.isMultiQueue = multiQueue
        self.namespace = namespace
        self.descriptors = Mutex(Descriptors(queues: [made.queue], control: made.control))
    }

    /// What creating the device in its namespace gives back.
    private struct Made {
        var queue: Int32
        var name: String
        var control: Int32
        var index: Int32
    }

    deinit { close() }

    /// The open queues' descriptors, the first queue first; empty once closed.
    public var queues: [Int32] { descriptors.withLock { $0.closed ? [] : $0.queues } }

    /// Opens one more queue of this multi-queue device (TUNSETIFF with IFF_MULTI_QUEUE on
    /// a new /dev/net/tun descriptor, in the device's namespace): its descriptor, also
    /// listed in ``queues``. A single-queue device answers EINVAL or EBUSY.
    @discardableResult
    public func attachQueue() throws(TapError) -> Int32 {
        _ = try control()
        var flags = ctap_iff_tap | ctap_iff_no_pi | ctap_iff_vnet_hdr
        if isMultiQueue { flags |= ctap_iff_multi_queue }
        let (name, size) = (self.name, vnetHeaderSize)
        let queue = try Self.inside(namespace) { () throws(TapError) -> Int32 in
            try Self.openQueue(name: name, flags: flags, vnetHeaderSize: size).0
        }
        let kept = descriptors.withLock { state in
            if state.closed { return false }
            state.queues.append(queue)
            return true
        }
        guard kept else {
            Glibc.close(queue)
            throw .closed(device: name)
        }
        return queue
    }

    /// Closes queue `descriptor` (not the first), which takes it out of the device: the
    /// kernel no longer steers packets to it. Closing the first queue is ``close()``'s job.
    public func closeQueue(_ descriptor: Int32) throws(TapError) {
        let found = descriptors.withLock { state -> Bool in
            guard !state.closed, let index = state.queues.firstIndex(of: descriptor), index > 0 else { return false }
            state.queues.remove(at: index)
            return true
        }
        guard found else { throw .closed(device: name) }
        Glibc.close(descriptor)
    }

    /// Says which offloads this side takes (TUNSETOFFLOAD); with an empty set the kernel
    /// finishes checksums and segments before a frame is read.
    public func setOffloads(_ offloads: TapOffloads) throws(TapError) {
        let queue = try firstQueue()
        try Self.negated(.setOffload, name) { ctap_set_offload(queue, offloads.rawValue) }
    }

    /// Turns the carrier on or off (TUNSETCARRIER): off, the kernel sees the link down
    /// and stops transmitting to it, as when a guest stops taking packets.
    public func setCarrier(_ on: Bool) throws(TapError) {
        let queue = try firstQueue()
        try Self.negated(.setCarrier, name) { ctap_set_carrier(queue, on ? 1 : 0) }
    }

    /// The interface MTU (SIOCGIFMTU).
    public func mtu() throws(TapError) -> Int {
        let control = try control()
        var mtu: Int32 = 0
        try Self.negated(.getMTU, name) { ctap_get_mtu(control, name, &mtu) }
        return Int(mtu)
    }

    /// Sets the interface MTU (SIOCSIFMTU); the kernel refuses one outside 68...65535.
    public func setMTU(_ mtu: Int) throws(TapError) {
        let control = try control()
        let value = Int32(clamping: mtu)
        try Self.negated(.setMTU, name) { ctap_set_mtu(control, name, value) }
    }

    /// Whether the interface is administratively up (IFF_UP, SIOCGIFFLAGS).
    public func isUp() throws(TapError) -> Bool {
        try interfaceFlags() & ctap_iff_up != 0
    }

    /// Brings the interface up or down: IFF_UP set or cleared, other flags kept.
    public func setUp(_ up: Bool) throws(TapError) {
        let control = try control()
        let flags = try interfaceFlags()
        let new = up ? flags | ctap_iff_up : flags & ~ctap_iff_up
        try Self.negated(.setFlags, name) { ctap_set_flags(control, name, new) }
    }

    /// The interface's Ethernet address (SIOCGIFHWADDR).
    public func hardwareAddress() throws(TapError) -> EthernetAddress {
        let control = try control()
        var octets = [UInt8](repeating: 0, count: 6)
        try Self.negated(.getHardwareAddress, name) { ctap_get_hwaddr(control, name, &octets) }
        return EthernetAddress(octets: octets)!
    }

    /// Sets the interface's Ethernet address (SIOCSIFHWADDR); a backend's vif takes
    /// ``EthernetAddress/netbackVif``.
    public func setHardwareAddress(_ address: EthernetAddress) throws(TapError) {
        let control = try control()
        let octets = address.octets
        try Self.negated(.setHardwareAddress, name) { ctap_set_hwaddr(control, name, octets) }
    }

    /// Closes every queue and the control socket; the kernel removes the device as the
    /// last queue closes. Later calls throw ``TapError/closed(device:)``; closing again
    /// does nothing.
    public func close() {
        let open = descriptors.withLock { state -> [Int32] in
            if state.closed { return [] }
            state.closed = true
            return state.queues + [state.control]
        }
        // close is not retried on EINTR: on Linux the descriptor is gone either way.
        for fd in open { Glibc.close(fd) }
    }

    // MARK: - Internals

    private func interfaceFlags() throws(TapError) -> Int16 {
        let control = try control()
        var flags: Int16 = 0
        try Self.negated(.getFlags, name) { ctap_get_flags(control, name, &flags) }
        return flags
    }

    private func control() throws(TapError) -> Int32 {
        let fd: Int32? = descriptors.withLock { $0.closed ? nil : $0.control }
        guard let fd else { throw .closed(device: name) }
        return fd
    }

    private func firstQueue() throws(TapError) -> Int32 {
        let fd: Int32? = descriptors.withLock { $0.closed ? nil : $0.queues[0] }
        guard let fd else { throw .closed(device: name) }
        return fd
    }

    /// The kernel's rules for an interface name (dev_valid_name), checked before asking.
    static func validate(name: String) throws(TapError) {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { throw .invalidName(name, why: "it is empty") }
        if bytes.count > Int(ctap_ifnamsiz) - 1 {
            throw .invalidName(name, why: "it is \(bytes.count) bytes, more than IFNAMSIZ-1 (\(ctap_ifnamsiz - 1))")
        }
        if name == "." || name == ".." { throw .invalidName(name, why: "it is \(name)") }
        if let bad = bytes.first(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 == 0 || $0 == 0x20 || (0x09...0x0D).contains($0) }) {
            throw .invalidName(name, why: "it holds byte 0x\(String(bad, radix: 16)) ('/', ':', NUL and whitespace are refused)")
        }
    }

    /// Opens /dev/net/tun non-blocking and attaches it to (or creates) the device.
    private static func openQueue(name: String, flags: UInt16, vnetHeaderSize: Int) throws(TapError) -> (Int32, String) {
        let fd = try call(.openCloneDevice, name) { open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK) }
        do throws(TapError) {
            var assigned = [CChar](repeating: 0, count: Int(ctap_ifnamsiz))
            try negated(.setInterface, name) { ctap_set_iff(fd, name, flags, &assigned) }
            let kernelName = String(decoding: assigned.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            try negated(.setVnetHeaderSize, kernelName) { ctap_set_vnet_hdr_size(fd, Int32(vnetHeaderSize)) }
            return (fd, kernelName)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Runs `body` in `namespace`, or right here if there is none.
    private static func inside<T>(_ namespace: NetworkNamespace?, _ body: () throws(TapError) -> T) throws(TapError) -> T {
        guard let namespace else { return try body() }
        return try namespace.run(body).get()
    }

    /// A libc call (negative and errno on failure), retried on EINTR.
    private static func call(_ operation: TapOperation, _ device: String, _ body: () -> Int32) throws(TapError) -> Int32 {
        switch SystemCall.retrying(body) {
        case let .success(value): return value
        case let .failure(errno): throw .deviceCall(operation, device: device, errno)
        }
    }

    /// A CTap call (-errno on failure), retried on EINTR.
    private static func negated(_ operation: TapOperation, _ device: String, _ body: () -> Int32) throws(TapError) {
        if case let .failure(errno) = SystemCall.retryingNegated(body) {
            throw .deviceCall(operation, device: device, errno)
        }
    }
}
