import Blkif
import Logging
import Synchronization
import XenPlatform

/// The state a ``BlockFrontend``, its xenbus hooks and its I/O thread share: the work
/// waiting to be sent, the live connection and the disk it describes.
final class BlockFrontendCore: Sendable {
    struct State {
        /// Work not yet taken by the I/O thread (or to be sent again), in order.
        var waiting: [BlockFrontendWork] = []
        /// Set up by initialise, not yet connected.
        var prepared: BlockFrontendConnection?
        /// Serving requests.
        var connection: BlockFrontendConnection?
        var disk: BlockFrontendDisk?
        var connectWaiters: [CheckedContinuation<BlockFrontendDisk, any Error>] = []
        var closed = false
        /// Page sets whose access could not end yet (the backend still mapped them).
        var deferred: [SharedPages] = []
        /// Page sets granted and not yet ended.
        var grantedSets = 0
        /// Handshakes completed (1 after the first connect).
        var connections = 0
        /// Requests sent again after a disconnect, over the frontend's life.
        var reissued = 0
    }

    let state = Mutex(State())
    let platform: any Platform
    let configuration: BlockFrontendConfiguration
    let logger: Logger

    init(platform: any Platform, configuration: BlockFrontendConfiguration, logger: Logger) {
        self.platform = platform
        self.configuration = configuration
        self.logger = logger
    }

    // MARK: Callers

    /// The disk once connected (at once if it connected before).
    func connected() async throws -> BlockFrontendDisk {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { s -> Result<BlockFrontendDisk, BlockFrontendError>? in
                if s.closed { return .failure(.closed) }
                if let disk = s.disk { return .success(disk) }
                s.connectWaiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Queues `operation` and wakes the I/O thread; its completion runs when it is done
    /// (at once, here, if the frontend is closed).
    func enqueue(_ operation: BlockFrontendOperation) {
        let refused = state.withLock { s -> Bool in
            guard !s.closed else { return true }
            s.waiting.append(BlockFrontendWork(operation: operation, offset: 0, count: operation.count))
            s.connection?.wakeIfSleeping()
            return false
        }
        if refused { operation.abandon(.closed) }
    }

    /// The disk of the last connection, or why there is none: closed, or never connected.
    func currentDisk() -> Result<BlockFrontendDisk, BlockFrontendError> {
        state.withLock { s in
            if s.closed { return .failure(.closed) }
            guard let disk = s.disk else { return .failure(.notConnected) }
            return .success(disk)
        }
    }

    /// Moves every waiting part, in order, into `batch` (which the caller emptied): one
    /// lock for all the requests queued since the last call. Called by the I/O thread.
    func takeWaiting(into batch: inout [BlockFrontendWork]) {
        state.withLock { s in
            // The two arrays trade storage, so neither side allocates.
            if !s.waiting.isEmpty { swap(&batch, &s.waiting) }
        }
    }

    // MARK: xenbus hooks

    func prepare(backendDomain: DomainID, features: BlkifBackendFeatures, handle: UInt16) throws(BlockFrontendError) -> BlockFrontendConnection {
        let connection = try BlockFrontendConnection(platform: platform, backendDomain: backendDomain, features: features,
                                                     configuration: configuration, handle: handle, logger: logger)
        state.withLock {
            $0.prepared = connection
            $0.grantedSets += connection.grantedPageSets.count
        }
        return connection
    }

    /// The backend is Connected: start serving, waiting work first.
    func start(disk: BlockFrontendDisk) throws(BlockFrontendError) {
        guard let connection = state.withLock({ $0.prepared }) else {
            throw .protocolViolation("backend connected before the frontend initialised")
        }
        try connection.start(core: self)
        let waiters = state.withLock { s -> [CheckedContinuation<BlockFrontendDisk, any Error>] in
            s.prepared = nil
            s.connection = connection
            s.disk = disk
            s.connections += 1
            defer { s.connectWaiters = [] }
            return s.connectWaiters
        }
        connection.wake()
        for waiter in waiters { waiter.resume(returning: disk) }
    }

    /// The backend went away (or the frontend closes): stop the thread, put every
    /// unanswered part back first in line, and give the grants back.
    func disconnect(reason: String) {
        let (running, prepared) = state.withLock { s in
            defer { s.connection = nil; s.prepared = nil }
            return (s.connection, s.prepared)
        }
        for connection in [running, prepared].compactMap({ $0 }) {
            let (unanswered, unsent) = connection.stop()
            if !unanswered.isEmpty {
                logger.info("blkfront: \(unanswered.count) requests in flight will be sent again: \(reason)")
            }
            let busy = connection.release()
            state.withLock { s in
                // First in line: what the backend had, then what the thread had taken.
                s.waiting.insert(contentsOf: unanswered + unsent, at: 0)
                s.reissued += unanswered.count
                s.grantedSets -= connection.grantedPageSets.count - busy.count
                s.deferred += busy
            }
        }
        releaseDeferred()
    }

    /// Retries ending access to pages the backend still mapped; returns how many sets remain.
    @discardableResult
    func releaseDeferred() -> Int {
        let pending = state.withLock { s in
            defer { s.deferred = [] }
            return s.deferred
        }
        var still: [SharedPages] = []
        for pages in pending {
            do { try platform.grantTable.endAccess(pages) } catch { still.append(pages) }
        }
        return state.withLock { s in
            s.grantedSets -= pending.count - still.count
            s.deferred += still
            return s.deferred.count
        }
    }

    /// Fails everything waiting and refuses new work.
    func close() {
        let (work, waiters) = state.withLock { s in
            s.closed = true
            defer { s.waiting = []; s.connectWaiters = [] }
            return (s.waiting, s.connectWaiters)
        }
        var seen = Set<ObjectIdentifier>()
        for item in work where seen.insert(ObjectIdentifier(item.operation)).inserted {
            item.operation.abandon(.closed)
        }
        for waiter in waiters { waiter.resume(throwing: BlockFrontendError.closed) }
    }
}
