import Logging
import Netif
import Synchronization
import Tap
import XenDevice
import XenPlatform

/// The state a ``NetFrontend``, its xenbus hooks and its I/O thread share: the live
/// connection, what it negotiated, the TAP device the guest side is, and the counters.
final class NetFrontendCore: Sendable {
    struct State {
        /// Set up by initialise, not yet connected.
        var prepared: NetFrontendConnection?
        /// Serving the rings.
        var connection: NetFrontendConnection?
        var link: NetFrontendLink?
        var linkWaiters: [CheckedContinuation<NetFrontendLink, any Error>] = []
        var closed = false
        /// Page sets whose access could not end yet (the backend still mapped them).
        var connections = 0
        /// The last lie that disconnected the backend.
        var violation: NetFrontendError?
        var tap: TapDevice?
        var tapSource: NetFrontendTapSource?
    }

    let state = Mutex(State())
    let platform: any Platform
    let txBuffers: Int
    let logger: Logger
    let ioContext: FrontendIOContext
    let statistics = NetFrontendStatistics()
    /// Every page set granted to the backend, across connections.
    let grants: FrontendGrantLedger
    /// The TAP queue's descriptor, -1 while none is attached: read by the I/O thread.
    private let tapFD = Atomic<Int32>(-1)
    /// The datapath the running I/O thread drives, for the TAP source.
    private let active = Mutex<NetFrontendDatapath?>(nil)
    /// Tells the xenbus driver of a violation (set once the driver exists).
    let violationSink = Mutex<(@Sendable (String) -> Void)?>(nil)

    init(platform: any Platform, txBuffers: Int, logger: Logger) throws(NetFrontendError) {
        self.platform = platform
        self.txBuffers = txBuffers
        self.logger = logger
        grants = FrontendGrantLedger(grantTable: platform.grantTable)
        do { ioContext = try FrontendIOContext() } catch { throw .platform(error) }
    }

    var tapDescriptor: Int32 { tapFD.load(ordering: .acquiring) }
    var activeDatapath: NetFrontendDatapath? { active.withLock { $0 } }

    // MARK: Callers

    /// The link once connected (at once if connected now).
    func connected() async throws -> NetFrontendLink {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { s -> Result<NetFrontendLink, NetFrontendError>? in
                if s.closed { return .failure(.closed) }
                if s.connection != nil, let link = s.link { return .success(link) }
                s.linkWaiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Makes `tap` the guest side: its frames are sent, received packets written to it.
    func attach(_ tap: TapDevice) throws(NetFrontendError) {
        guard let descriptor = tap.queues.first else { throw .tap(.closed(device: tap.name)) }
        let source = NetFrontendTapSource(core: self, descriptor: descriptor)
        let attached = state.withLock { s -> Result<NetFrontendLink?, NetFrontendError> in
            if s.closed { return .failure(.closed) }
            if let other = s.tap { return .failure(.tapAlreadyAttached(other.name)) }
            s.tap = tap
            s.tapSource = source
            return .success(s.connection == nil ? nil : s.link)
        }
        let link = try attached.get()
        tapFD.store(descriptor, ordering: .releasing)
        configure(tap, link: link)
        guard ioContext.attach(source) else { throw .closed }
    }

    /// Sets the TAP device to what the backend offers (offloads, address, MTU) and its
    /// carrier to whether a backend is connected. Failures are logged: the device works
    /// on, perhaps with fewer offloads.
    private func configure(_ tap: TapDevice, link: NetFrontendLink?) {
        do {
            if let link {
                try tap.setOffloads(link.tapOffloads)
                try tap.setHardwareAddress(link.macAddress)
                if try tap.mtu() != link.mtu { try tap.setMTU(link.mtu) }
            }
            try tap.setCarrier(link != nil)
        } catch {
            logger.error("netfront: configuring TAP device \(tap.name): \(error)")
        }
    }

    // MARK: xenbus hooks

    func prepare(backendDomain: DomainID, link: NetFrontendLink) throws(NetFrontendError) -> NetFrontendConnection {
        let connection = try NetFrontendConnection(
            platform: platform, backendDomain: backendDomain, backend: link.backend, txBuffers: txBuffers,
            ioContext: ioContext, statistics: statistics, logger: logger,
            onViolation: { [weak self] error in self?.violated(error) })
        state.withLock {
            $0.prepared = connection
            $0.link = link
        }
        grants.granted(connection.pageSets.count)
        return connection
    }

    /// The backend is Connected: set the TAP device up for it and start serving.
    func start() throws(NetFrontendError) {
        guard let (connection, link, tap) = state.withLock({ s in s.prepared.map { ($0, s.link, s.tap) } }),
              let link else {
            throw .xenbus(.protocolViolation(path: "netfront", reason: "backend connected before the frontend initialised"))
        }
        if let tap { configure(tap, link: link) }
        active.withLock { $0 = connection.datapath }
        do { try connection.start(core: self) } catch {
            active.withLock { $0 = nil }
            throw error
        }
        let waiters = state.withLock { s -> [CheckedContinuation<NetFrontendLink, any Error>] in
            s.prepared = nil
            s.connection = connection
            s.connections += 1
            defer { s.linkWaiters = [] }
            return s.linkWaiters
        }
        ioContext.wakeUp.wake()
        for waiter in waiters { waiter.resume(returning: link) }
    }

    /// The backend went away (or the frontend closes): carrier off, stop the thread and
    /// give the grants back. Frames in flight are lost, as on a link that goes down.
    func disconnect(reason: String) {
        let (running, prepared, tap) = state.withLock { s in
            defer { s.connection = nil; s.prepared = nil }
            return (s.connection, s.prepared, s.tap)
        }
        if running != nil, let tap { configure(tap, link: nil) }
        for connection in [running, prepared].compactMap({ $0 }) {
            connection.stop()
            active.withLock { if $0 === connection.datapath { $0 = nil } }
            connection.release()
            grants.giveBack(connection.pageSets)
        }
        if running != nil { logger.info("netfront: disconnected: \(reason)") }
        releaseDeferred()
    }

    /// Retries ending access to pages the backend still mapped; returns how many sets remain.
    @discardableResult
    func releaseDeferred() -> Int { grants.releaseDeferred() }

    /// I/O thread: the backend lied; the rings are stopped already.
    private func violated(_ error: NetFrontendError) {
        state.withLock { $0.violation = error }
        logger.error("netfront: backend broke io/netif.h, disconnecting: \(error)")
        violationSink.withLock { $0 }?("\(error)")
    }

    /// Refuses new work, fails the waiters, lets go of the TAP device (the caller owns it).
    func close() {
        let (waiters, source) = state.withLock { s in
            s.closed = true
            defer { s.linkWaiters = []; s.tap = nil; s.tapSource = nil }
            return (s.linkWaiters, s.tapSource)
        }
        tapFD.store(-1, ordering: .releasing)
        if let source { ioContext.detach(source) }
        for waiter in waiters { waiter.resume(throwing: NetFrontendError.closed) }
        ioContext.close()
    }
}
