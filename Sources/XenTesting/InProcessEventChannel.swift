import Synchronization
import XenPlatform

/// An event-channel handle of an ``InProcessPlatform``. Its ``fileDescriptor`` is an
/// eventfd, readable exactly while a port bound through the handle is pending, so a
/// worker can poll it (or read it through io_uring) as it would on XenLocal or Xen.
/// ``pending()`` never blocks and hands out pending ports oldest first. Ports are not
/// masked on delivery (as XenLocal's) unless the hypervisor's
/// ``InProcessHypervisor/Configuration/masksDeliveredPorts`` asks for Linux's behaviour.
public final class InProcessEventChannel: EventChannel, Sendable {
    /// The hypervisor the handle belongs to.
    public let hypervisor: InProcessHypervisor
    /// The domain the handle acts for.
    public let domainID: DomainID
    public let fileDescriptor: Int32
    let handle: UInt64
    private let closed = Atomic<Bool>(false)

    init(hypervisor: InProcessHypervisor, domainID: DomainID, handle: UInt64, fileDescriptor: Int32) {
        self.hypervisor = hypervisor
        self.domainID = domainID
        self.handle = handle
        self.fileDescriptor = fileDescriptor
    }

    deinit { close() }

    public func allocateUnbound(remote: DomainID) throws(PlatformError) -> EventPort {
        try hypervisor.allocateUnbound(handle: handle, remote: remote)
    }

    public func bindInterdomain(remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort {
        try hypervisor.bindInterdomain(handle: handle, remote: remote, remotePort: remotePort)
    }

    public func notify(_ port: EventPort) throws(PlatformError) {
        try hypervisor.notify(handle: handle, port: port)
    }

    public func unbind(_ port: EventPort) throws(PlatformError) {
        try hypervisor.unbind(handle: handle, port: port)
    }

    public func pending() throws(PlatformError) -> EventPort? {
        try hypervisor.pending(handle: handle)
    }

    public func unmask(_ port: EventPort) throws(PlatformError) {
        try hypervisor.unmask(handle: handle, port: port)
    }

    /// Unbinds every port of the handle and closes its eventfd. Safe to call twice.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        hypervisor.closeEventHandle(handle)
    }
}
