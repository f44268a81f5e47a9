import Glibc
import Logging
import Netif
import Synchronization
import Tap
import XenDevice
import XenPlatform

/// The state a ``NetFrontend``, its xenbus hooks and its I/O threads share: the live
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
        /// Handshakes completed.
        var connections = 0
        /// The last lie that disconnected the backend.
        var violation: NetFrontendError?
        /// Why the frontend will not connect to the backend now (it asked for more queue
        /// pairs than offered); cleared by a connection.
        var refusal: NetFrontendError?
        var tap: TapDevice?
    }

    /// A TAP queue's source and the context of the thread serving it.
    struct Wired {
        let source: NetFrontendTapSource
        let context: FrontendIOContext
    }

    let state = Mutex(State())
    let platform: any Platform
    let txBuffers: Int
    let logger: Logger
    /// The queue pair count asked for, or nil for one per core (at most what the backend offers).
    let requestedQueues: Int?
    /// One per I/O thread a connection may run: the smaller of the most queue pairs this
    /// frontend uses and the cores. They outlive connections, as the TAP sources do.
    let ioContexts: [FrontendIOContext]
    /// Per queue pair (as many as this frontend may ever use), across connections.
    let statistics: [NetFrontendStatistics]
    /// Every page set granted to the backend, across connections.
    let grants: FrontendGrantLedger
    /// The TAP sources attached now. Its lock is held through a whole rewiring (which may
    /// wait for a thread's pass, never for this lock's other users), taken before `state`'s.
    private let wiring = Mutex<[Wired]>([])
    /// Tells the xenbus driver of a violation (set once the driver exists).
    let violationSink = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// Stops the xenbus driver after a refusal (set once the driver exists): the backend
    /// would only offer the same again at its next InitWait.
    let refusalSink = Mutex<(@Sendable () -> Void)?>(nil)

    /// The cores online, at least one.
    static var cores: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    init(platform: any Platform, txBuffers: Int, queues: Int?, logger: Logger) throws(NetFrontendError) {
        if let queues, !(1 ... NetFrontend.maxQueues).contains(queues) { throw .queueCount(queues) }
        self.platform = platform
        self.txBuffers = txBuffers
        self.logger = logger
        requestedQueues = queues
        let queueLimit = queues ?? min(Self.cores, NetFrontend.maxQueues)
        statistics = (0 ..< queueLimit).map { _ in NetFrontendStatistics() }
        grants = FrontendGrantLedger(grantTable: platform.grantTable)
        var contexts: [FrontendIOContext] = []
        for _ in 0 ..< min(queueLimit, Self.cores) {
            do { contexts.append(try FrontendIOContext()) } catch {
                for context in contexts { context.close() }
                throw .platform(error)
            }
        }
        ioContexts = contexts
    }

    // MARK: Callers

    /// The link once connected (at once if connected now); throws the refusal when this
    /// frontend will not connect to the backend as it is.
    func connected() async throws -> NetFrontendLink {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { s -> Result<NetFrontendLink, NetFrontendError>? in
                // The refusal first: it closes the frontend too.
                if let refusal = s.refusal { return .failure(refusal) }
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
        guard !tap.queues.isEmpty else { throw .tap(.closed(device: tap.name)) }
        let attached = state.withLock { s -> Result<NetFrontendLink?, NetFrontendError> in
            if s.closed { return .failure(.closed) }
            if let other = s.tap { return .failure(.tapAlreadyAttached(other.name)) }
            s.tap = tap
            return .success(s.connection == nil ? nil : s.link)
        }
        let link = try attached.get()
        configure(tap, link: link)
        rewire()
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

    /// Connects the TAP device's queues to the queue pairs of the connection being set up
    /// or running: TAP queue i to pair i, read on that pair's thread, and pair i's packets
    /// written to it. A multi-queue TAP device gets a queue per pair (opened, or closed
    /// when a connection has fewer pairs, so the kernel steers no flow to a queue nobody
    /// reads); a single-queue one carries every pair's packets and feeds pair 0 (a guest
    /// may send on any pair, io/netif.h). The sources attached before are taken off first.
    private func rewire() {
        wiring.withLock { wired in
            for old in wired { old.context.detach(old.source) }
            wired = []
            let (tap, connection) = state.withLock { s in (s.closed ? nil : s.tap, s.prepared ?? s.connection) }
            guard let connection else { return }
            guard let tap else {
                for datapath in connection.datapaths { datapath.tapFD.store(-1, ordering: .releasing) }
                return
            }
            let wanted = tap.isMultiQueue ? connection.datapaths.count : 1
            var descriptors = tap.queues
            do {
                while descriptors.count < wanted { descriptors.append(try tap.attachQueue()) }
            } catch {
                logger.error("netfront: TAP device \(tap.name): opening queue \(descriptors.count) of \(wanted): \(error); the pairs beyond share the queues open")
            }
            for extra in descriptors.dropFirst(max(1, wanted)) {
                do { try tap.closeQueue(extra) } catch {
                    logger.error("netfront: TAP device \(tap.name): closing unused queue \(extra): \(error)")
                }
            }
            descriptors = Array(descriptors.prefix(wanted))
            guard !descriptors.isEmpty else { return }
            for datapath in connection.datapaths {
                let descriptor = descriptors[datapath.queue % descriptors.count]
                datapath.tapFD.store(descriptor, ordering: .releasing)
                guard datapath.queue < descriptors.count else { continue }
                let source = NetFrontendTapSource(datapath: datapath, descriptor: descriptor, logger: logger)
                let context = connection.context(ofQueue: datapath.queue)
                if context.attach(source) { wired.append(Wired(source: source, context: context)) }
            }
        }
    }

    /// The queue pairs to use with a backend offering `offered` (`multi-queue-max-queues`,
    /// 1 when absent): what was asked for, or one per core up to the offer. Asking for
    /// more than offered is refused rather than cut down silently: ``connected()`` throws
    /// it and the frontend closes.
    func queueCount(offered: Int) throws(NetFrontendError) -> Int {
        guard let requested = requestedQueues else { return min(offered, statistics.count) }
        guard requested <= offered else {
            let refusal = NetFrontendError.queuesNotOffered(requested: requested, offered: offered)
            let waiters = state.withLock { s in
                s.refusal = refusal
                defer { s.linkWaiters = [] }
                return s.linkWaiters
            }
            logger.error("netfront: \(refusal); closing")
            for waiter in waiters { waiter.resume(throwing: refusal) }
            refusalSink.withLock { $0 }?()
            throw refusal
        }
        return requested
    }

    // MARK: xenbus hooks

    func prepare(backendDomain: DomainID, link: NetFrontendLink) throws(NetFrontendError) -> NetFrontendConnection {
        let connection = try NetFrontendConnection(
            platform: platform, backendDomain: backendDomain, link: link, txBuffers: txBuffers,
            contexts: ioContexts, statistics: statistics, logger: logger,
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
        rewire()
        try connection.start()
        let waiters = state.withLock { s -> [CheckedContinuation<NetFrontendLink, any Error>] in
            s.prepared = nil
            s.connection = connection
            s.connections += 1
            s.refusal = nil
            defer { s.linkWaiters = [] }
            return s.linkWaiters
        }
        for context in connection.contexts { context.wakeUp.wake() }
        logger.info("netfront: connected with \(link.queues) queue pair\(link.queues == 1 ? "" : "s") on \(connection.threads.count) I/O thread\(connection.threads.count == 1 ? "" : "s") (the backend offers \(link.offeredQueues))")
        for waiter in waiters { waiter.resume(returning: link) }
    }

    /// The backend went away (or the frontend closes): carrier off, stop the threads and
    /// give the grants back. Frames in flight are lost, as on a link that goes down.
    func disconnect(reason: String) {
        let (running, prepared, tap) = state.withLock { s in
            defer { s.connection = nil; s.prepared = nil }
            return (s.connection, s.prepared, s.tap)
        }
        if running != nil, let tap { configure(tap, link: nil) }
        for connection in [running, prepared].compactMap({ $0 }) {
            connection.stop()
            connection.release()
            grants.giveBack(connection.pageSets)
        }
        if running != nil { logger.info("netfront: disconnected: \(reason)") }
        releaseDeferred()
    }

    /// Retries ending access to pages the backend still mapped; returns how many sets remain.
    @discardableResult
    func releaseDeferred() -> Int { grants.releaseDeferred() }

    /// I/O thread: the backend lied; that pair's rings are stopped already.
    private func violated(_ error: NetFrontendError) {
        state.withLock { $0.violation = error }
        logger.error("netfront: backend broke io/netif.h, disconnecting: \(error)")
        violationSink.withLock { $0 }?("\(error)")
    }

    /// Refuses new work, fails the waiters, lets go of the TAP device (the caller owns it).
    func close() {
        let (waiters, connection) = state.withLock { s in
            s.closed = true
            defer { s.linkWaiters = []; s.tap = nil }
            return (s.linkWaiters, s.connection ?? s.prepared)
        }
        wiring.withLock { wired in
            for old in wired { old.context.detach(old.source) }
            wired = []
        }
        for datapath in connection?.datapaths ?? [] { datapath.tapFD.store(-1, ordering: .releasing) }
        for waiter in waiters { waiter.resume(throwing: NetFrontendError.closed) }
        for context in ioContexts { context.close() }
    }

    /// Packet counts so far: every queue pair's, and their sum.
    var queueCounters: [NetifCounters] { statistics.map(\.snapshot) }
}
