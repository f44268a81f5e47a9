import SharedMemory
import XenRing

/// A domain's xenstore ring as the server sees it: the shared page, a descriptor that
/// becomes readable when the domain notifies (an eventfd or a pipe: the server reads it
/// empty), and the function that notifies the domain.
public struct XenStoreRingEndpoint: Sendable {
    /// The `xenstore_domain_interface` page.
    public var interface: XenstoreRingInterface
    /// Readable when the domain has sent a notification; not owned by the server.
    public var eventFileDescriptor: Int32
    /// Notifies the domain that requests were consumed or responses produced.
    public var notify: @Sendable () -> Void
    /// The mapping that holds the page, kept alive while the server uses the ring.
    public var memoryOwner: MemoryRegion?

    /// An endpoint. Pass the page's region as `memoryOwner` unless something else keeps it
    /// mapped until the ring is detached or the server stops.
    public init(interface: XenstoreRingInterface, eventFileDescriptor: Int32, memoryOwner: MemoryRegion?,
                notify: @escaping @Sendable () -> Void) {
        self.interface = interface
        self.eventFileDescriptor = eventFileDescriptor
        self.memoryOwner = memoryOwner
        self.notify = notify
    }
}
