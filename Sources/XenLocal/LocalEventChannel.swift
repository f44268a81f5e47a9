import CXenLocal
import Glibc
import Synchronization
import XenPlatform

/// Event channels on the local hypervisor. Each bound port has two eventfds: one the peer
/// signals (registered edge-triggered in this handle's epoll set, tagged with the port, so
/// a signal is reported once and the eventfd is never read) and the peer's, which
/// ``notify(_:)`` signals directly, without a hypervisor round trip.
final class LocalEventChannel: EventChannel, @unchecked Sendable {
    // SAFETY (@unchecked): `ports` is guarded by its Mutex; the rest is immutable.
    let client: HypervisorClient
    let fileDescriptor: Int32
    private let ports = Mutex<[EventPort: (receive: Int32, notify: Int32)]>([:])

    init(client: HypervisorClient) throws(PlatformError) {
        self.client = client
        let ep = xl_epoll_create()
        guard ep >= 0 else { throw .system("epoll_create1", errno: -ep) }
        fileDescriptor = ep
    }

    deinit { close() }

    func allocateUnbound(remote: DomainID) throws(PlatformError) -> EventPort {
        var w = PayloadWriter()
        w.u16(remote)
        return try adopt(client.call(.eventAllocateUnbound, w.bytes), "allocate unbound for d\(remote)")
    }

    func bindInterdomain(remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort {
        var w = PayloadWriter()
        w.u16(remote)
        w.u16(0)
        w.u32(remotePort)
        return try adopt(client.call(.eventBindInterdomain, w.bytes), "bind d\(remote) port \(remotePort)")
    }

    private func adopt(_ reply: HypervisorClient.Reply, _ what: String) throws(PlatformError) -> EventPort {
        guard reply.status == 0 else {
            for fd in reply.fds { Glibc.close(fd) }
            throw .eventChannel("\(what): \(String(decoding: reply.payload, as: UTF8.self))", errno: reply.status)
        }
        var r = PayloadReader(reply.payload)
        guard let port = try? r.u32("port"), reply.fds.count == 2 else {
            for fd in reply.fds { Glibc.close(fd) }
            throw .hypervisor("\(what): reply without a port and two descriptors")
        }
        let rc = xl_epoll_add(fileDescriptor, reply.fds[0], port)
        guard rc == 0 else {
            for fd in reply.fds { Glibc.close(fd) }
            throw .system("epoll_ctl add port \(port)", errno: -rc)
        }
        ports.withLock { $0[port] = (reply.fds[0], reply.fds[1]) }
        return port
    }

    func notify(_ port: EventPort) throws(PlatformError) {
        guard let fd = ports.withLock({ $0[port]?.notify }) else {
            throw .eventChannel("notify on port \(port), which this handle has not bound", errno: EINVAL)
        }
        let rc = xl_eventfd_signal(fd)
        guard rc == 0 else { throw .eventChannel("notify port \(port)", errno: -rc) }
    }

    func unbind(_ port: EventPort) throws(PlatformError) {
        guard let fds = ports.withLock({ $0.removeValue(forKey: port) }) else {
            throw .eventChannel("unbind of port \(port), which this handle has not bound", errno: EINVAL)
        }
        _ = xl_epoll_del(fileDescriptor, fds.receive)
        Glibc.close(fds.receive)
        Glibc.close(fds.notify)
        var w = PayloadWriter()
        w.u32(port)
        let reply = try client.call(.eventClose, w.bytes)
        guard reply.status == 0 else {
            throw .eventChannel("close port \(port): \(String(decoding: reply.payload, as: UTF8.self))", errno: reply.status)
        }
    }

    func pending() throws(PlatformError) -> EventPort? {
        var port: EventPort?
        try takePending(atMost: 1) { port = $0 }
        return port
    }

    func takePending(atMost limit: Int, _ body: (EventPort) throws(PlatformError) -> Void) throws(PlatformError) {
        // Up to 16 ports a look.
        try withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 16) { tags throws(PlatformError) in
            var taken = 0
            while taken < limit {
                let asked = min(tags.count, limit - taken)
                let n = Int(xl_epoll_wait_tags(fileDescriptor, tags.baseAddress!, Int32(asked)))
                guard n >= 0 else { throw .system("epoll_wait", errno: Int32(-n)) }
                for tag in tags[0..<n] { try body(tag) }
                taken += n
                if n < asked { return }
            }
        }
    }

    /// Ports are never masked here: a signal while the port is being served is a new edge.
    func unmask(_ port: EventPort) throws(PlatformError) {}

    private let closed = Atomic<Bool>(false)

    func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let all = ports.withLock { p -> [EventPort: (receive: Int32, notify: Int32)] in defer { p = [:] }; return p }
        for (port, fds) in all {
            Glibc.close(fds.receive)
            Glibc.close(fds.notify)
            var w = PayloadWriter()
            w.u32(port)
            _ = try? client.call(.eventClose, w.bytes)
        }
        Glibc.close(fileDescriptor)
    }
}
