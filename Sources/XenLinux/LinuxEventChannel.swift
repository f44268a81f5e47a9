import CXen
import Glibc
import XenPlatform

/// Event channels on real Xen, over libxenevtchn (/dev/xen/evtchn). Ports bound through
/// this handle make its descriptor readable; Linux masks a port when it delivers it, so
/// ``unmask(_:)`` must follow ``pending()``.
///
/// Use one handle per thread: ``pending()`` checks readiness and then reads, and two
/// readers on one handle could see readiness for the same single port.
public final class LinuxEventChannel: EventChannel, @unchecked Sendable {
    // SAFETY (@unchecked): the handle is its own synchronised owner; `fileDescriptor` is
    // immutable.
    let handle: LibxenHandle
    /// Readable while a bound port is pending (xenevtchn_fd).
    public let fileDescriptor: Int32

    /// Opens /dev/xen/evtchn through libxenevtchn.
    public init() throws(PlatformError) {
        handle = try LibxenHandle(.evtchn)
        let h = try handle.pointer(for: "xenevtchn_fd")
        fileDescriptor = LinuxCall.evtchnFD(h)
        // Only pending() reads the descriptor; non-blocking, a read that finds nothing
        // (another reader won the race the poll cannot close) answers EAGAIN, not a hang.
        let r = LinuxCall.setNonBlocking(fileDescriptor)
        guard !r.failed else {
            handle.close()
            throw .system("fcntl(evtchn fd \(fileDescriptor), O_NONBLOCK)", errno: r.errno)
        }
    }

    deinit { close() }

    public func allocateUnbound(remote: DomainID) throws(PlatformError) -> EventPort {
        let h = try handle.pointer(for: "xenevtchn_bind_unbound_port")
        let r = LinuxCall.bindUnboundPort(h, remote: remote)
        guard r.value >= 0 else {
            throw .eventChannel("xenevtchn_bind_unbound_port(d\(remote)) failed", errno: r.errno)
        }
        return EventPort(r.value)
    }

    public func bindInterdomain(remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort {
        let h = try handle.pointer(for: "xenevtchn_bind_interdomain")
        let r = LinuxCall.bindInterdomain(h, remote: remote, remotePort: remotePort)
        guard r.value >= 0 else {
            throw .eventChannel("xenevtchn_bind_interdomain(d\(remote), port \(remotePort)) failed", errno: r.errno)
        }
        return EventPort(r.value)
    }

    public func notify(_ port: EventPort) throws(PlatformError) {
        let h = try handle.pointer(for: "xenevtchn_notify")
        let r = LinuxCall.notify(h, port)
        guard r.value == 0 else { throw .eventChannel("xenevtchn_notify(port \(port)) failed", errno: r.errno) }
    }

    public func unbind(_ port: EventPort) throws(PlatformError) {
        let h = try handle.pointer(for: "xenevtchn_unbind")
        let r = LinuxCall.unbind(h, port)
        guard r.value == 0 else { throw .eventChannel("xenevtchn_unbind(port \(port)) failed", errno: r.errno) }
    }

    /// The next pending port, or nil. Never blocks: readiness is checked with a
    /// zero-timeout poll first, xenevtchn_pending reads only when a port is queued, and
    /// the descriptor is non-blocking besides.
    public func pending() throws(PlatformError) -> EventPort? {
        let h = try handle.pointer(for: "xenevtchn_pending")
        var fds = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        let ready = withUnsafeMutablePointer(to: &fds) {
            LinuxCall.poll(UnsafeMutableBufferPointer(start: $0, count: 1), timeout: 0)
        }
        guard ready.value >= 0 else { throw .system("poll(evtchn fd \(fileDescriptor))", errno: ready.errno) }
        guard ready.value == 1 else { return nil }
        if fds.revents & Int16(POLLERR | POLLNVAL) != 0 {
            throw .eventChannel("evtchn descriptor \(fileDescriptor) reports revents \(fds.revents)", errno: EIO)
        }
        let r = LinuxCall.pending(h)
        if r.failed && r.errno == EAGAIN { return nil }
        guard r.value >= 0 else {
            throw .eventChannel("xenevtchn_pending failed", errno: r.errno)
        }
        return EventPort(r.value)
    }

    public func unmask(_ port: EventPort) throws(PlatformError) {
        let h = try handle.pointer(for: "xenevtchn_unmask")
        let r = LinuxCall.unmask(h, port)
        guard r.value == 0 else { throw .eventChannel("xenevtchn_unmask(port \(port)) failed", errno: r.errno) }
    }

    /// Closes the handle; the kernel unbinds every port bound through it. Idempotent.
    public func close() {
        handle.close()
    }
}
