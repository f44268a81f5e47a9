/// One event-channel handle (event_channel.h; libxenevtchn's xenevtchn_handle): ports bound
/// through it signal its one file descriptor, so a worker waits on a single fd (in its
/// io_uring) for every queue it serves.
public protocol EventChannel: AnyObject, Sendable {
    /// Readable while any port bound through this handle is pending.
    var fileDescriptor: Int32 { get }
    /// EVTCHNOP_alloc_unbound: a new port that `remote` may bind to.
    func allocateUnbound(remote: DomainID) throws(PlatformError) -> EventPort
    /// EVTCHNOP_bind_interdomain: binds to `remotePort`, which `remote` offered to us.
    func bindInterdomain(remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort
    /// EVTCHNOP_send: signals the other end of `port`.
    func notify(_ port: EventPort) throws(PlatformError)
    /// EVTCHNOP_close for `port`.
    func unbind(_ port: EventPort) throws(PlatformError)
    /// The next pending port, clearing it (masked until ``unmask(_:)`` where the platform
    /// masks), or nil when none is pending. Never blocks.
    func pending() throws(PlatformError) -> EventPort?
    /// Takes the ports pending now, at most `limit` (so a peer that signals without pause
    /// cannot hold the caller here), each cleared as ``pending()`` clears it, and hands
    /// each to `body`. A platform that reads several at once (the local hypervisor's epoll
    /// set) looks once, where a ``pending()`` loop looks once a port plus the empty look
    /// that ends it: a worker takes its ports on every wake-up.
    func takePending(atMost limit: Int, _ body: (EventPort) throws(PlatformError) -> Void) throws(PlatformError)
    /// Re-enables delivery on `port` after ``pending()`` returned it.
    func unmask(_ port: EventPort) throws(PlatformError)
    /// Closes the handle and unbinds its ports.
    func close()
}

extension EventChannel {
    public func takePending(atMost limit: Int, _ body: (EventPort) throws(PlatformError) -> Void) throws(PlatformError) {
        var taken = 0
        while taken < limit, let port = try pending() {
            taken += 1
            try body(port)
        }
    }
}
