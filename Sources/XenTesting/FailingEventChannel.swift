import Synchronization
import XenPlatform
import XenStore

/// An ``EventChannel`` that passes every call to another handle until told to fail: from
/// then on its reads of pending ports (``pending()``, ``takePending(atMost:_:)``) throw
/// and leave the ports pending, so its descriptor stays readable, as a handle whose
/// device broke would. It counts those reads, so a test sees whether a caller keeps
/// retrying a channel that fails (a thread that spins on it) or gives up on it.
public final class FailingEventChannel: EventChannel, Sendable {
    /// The handle every call goes to while the channel works.
    public let inner: any EventChannel
    private let failure = Mutex<PlatformError?>(nil)
    private let failedReads = Atomic<Int>(0)

    public init(_ inner: any EventChannel) {
        self.inner = inner
    }

    /// Makes every later read of pending ports throw `error`.
    public func failPendingReads(with error: PlatformError) {
        failure.withLock { $0 = error }
    }

    /// Reads of pending ports that threw so far.
    public var failedPendingReads: Int { failedReads.load(ordering: .relaxed) }

    private func checkFailure() throws(PlatformError) {
        guard let error = failure.withLock({ $0 }) else { return }
        failedReads.add(1, ordering: .relaxed)
        throw error
    }

    public var fileDescriptor: Int32 { inner.fileDescriptor }

    public func allocateUnbound(remote: DomainID) throws(PlatformError) -> EventPort {
        try inner.allocateUnbound(remote: remote)
    }

    public func bindInterdomain(remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort {
        try inner.bindInterdomain(remote: remote, remotePort: remotePort)
    }

    public func notify(_ port: EventPort) throws(PlatformError) {
        try inner.notify(port)
    }

    public func unbind(_ port: EventPort) throws(PlatformError) {
        try inner.unbind(port)
    }

    public func pending() throws(PlatformError) -> EventPort? {
        try checkFailure()
        return try inner.pending()
    }

    public func takePending(atMost limit: Int, _ body: (EventPort) throws(PlatformError) -> Void) throws(PlatformError) {
        try checkFailure()
        try inner.takePending(atMost: limit, body)
    }

    public func unmask(_ port: EventPort) throws(PlatformError) {
        try inner.unmask(port)
    }

    public func close() {
        inner.close()
    }
}

/// A ``Platform`` that is another one, except that its event-channel handles are
/// ``FailingEventChannel``s, kept in ``channels`` so a test can make them fail.
public final class FailingEventChannelPlatform: Platform, Sendable {
    public let inner: any Platform
    private let opened = Mutex<[FailingEventChannel]>([])

    public init(_ inner: any Platform) {
        self.inner = inner
    }

    /// The handles opened so far, oldest first.
    public var channels: [FailingEventChannel] { opened.withLock { $0 } }

    public var domainID: DomainID { inner.domainID }
    public var grantTable: any GrantTable { inner.grantTable }
    public var grantMapper: any GrantMapper { inner.grantMapper }

    public func openEventChannel() throws(PlatformError) -> any EventChannel {
        let channel = FailingEventChannel(try inner.openEventChannel())
        opened.withLock { $0.append(channel) }
        return channel
    }

    public func connectXenStore() throws(PlatformError) -> XenStoreClient {
        try inner.connectXenStore()
    }
}
