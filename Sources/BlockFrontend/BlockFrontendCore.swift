import Blkif
import Logging
import Synchronization
import XenDevice
import XenPlatform

/// The state a ``BlockFrontend``, its xenbus hooks and its I/O thread share: the work
/// waiting to be sent, the live connection and the disk it describes.
final class BlockFrontendCore: Sendable {
    struct State {
        /// Work to be sent again after a disconnect, in order, before anything submitted.
        var waiting: [BlockFrontendWork] = []
        /// Set up by initialise, not yet connected.
        var prepared: BlockFrontendConnection?
        /// Serving requests.
        var connection: BlockFrontendConnection?
        var disk: BlockFrontendDisk?
        /// Every disk ever published in `currentDiskBox`, kept so a reader never holds
        /// a box that was freed.
        var diskBoxes: [BlockFrontendDiskBox] = []
        var connectWaiters: [CheckedContinuation<BlockFrontendDisk, any Error>] = []
        var closed = false
        /// Handshakes completed (1 after the first connect).
        var connections = 0
        /// Requests sent again after a disconnect, over the frontend's life.
        var reissued = 0
    }

    let state = Mutex(State())
    let platform: any Platform
    let configuration: BlockFrontendConfiguration
    let logger: Logger
    /// New operations, pushed without the mutex.
    let submissions = BlockFrontendSubmissions()
    /// What the I/O threads of every connection share: wake-up, executor, loop sources.
    let ioContext: FrontendIOContext
    /// Every page set granted to the backend, across connections.
    let grants: FrontendGrantLedger
    /// Set once by close(), read by submitters without the mutex.
    let isClosed = Atomic<Bool>(false)
    /// `State.waiting` is not empty (so the I/O thread takes the mutex only then).
    let hasWaiting = Atomic<Bool>(false)
    /// The disk of the last connection (a box in `State.diskBoxes`), read without the mutex.
    private let currentDiskBox = Atomic<UInt>(0)

    init(platform: any Platform, configuration: BlockFrontendConfiguration, logger: Logger) throws(BlockFrontendError) {
        self.platform = platform
        self.configuration = configuration
        self.logger = logger
        grants = FrontendGrantLedger(grantTable: platform.grantTable)
        do { ioContext = try FrontendIOContext() } catch { throw .platform(error) }
    }

    /// Whether the caller runs on the I/O thread (a task on the executor, a completion).
    var onIOThread: Bool { ioContext.onIOThread }

    // MARK: Callers

    /// The disk once connected (at once if it connected before).
    func connected() async throws -> BlockFrontendDisk {
        if case let .success(disk) = currentDisk() { return disk }
        return try await withCheckedThrowingContinuation { continuation in
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
        submissions.push(operation)
        // Sequentially consistent after the push: close() either took this operation or
        // set the flag before the push, and then this abandons it (or close did).
        if isClosed.load(ordering: .sequentiallyConsistent) {
            abandonSubmissions()
            return
        }
        ioContext.wakeUp.wakeIfSleeping()
    }

    /// The disk of the last connection, or why there is none: closed, or never connected.
    func currentDisk() -> Result<BlockFrontendDisk, BlockFrontendError> {
        if isClosed.load(ordering: .acquiring) { return .failure(.closed) }
        guard let box = UnsafeRawPointer(bitPattern: currentDiskBox.load(ordering: .acquiring)) else {
            return .failure(.notConnected)
        }
        // SAFETY: the pointer is an unretained BlockFrontendDiskBox that State.diskBoxes
        // keeps alive for the core's life; it was stored with a releasing store after
        // the box was made.
        return .success(Unmanaged<BlockFrontendDiskBox>.fromOpaque(box).takeUnretainedValue().disk)
    }

    /// Moves every waiting part, in order, into `batch` (which the caller emptied): parts
    /// to be sent again first, then the operations submitted since the last call. Called
    /// by the I/O thread; it takes the mutex only when a disconnect left parts behind.
    func takeWaiting(into batch: inout [BlockFrontendWork]) {
        if hasWaiting.load(ordering: .acquiring) {
            state.withLock { s in
                // The two arrays trade storage, so neither side allocates.
                swap(&batch, &s.waiting)
                hasWaiting.store(false, ordering: .releasing)
            }
        }
        submissions.takeAll(into: &batch) { BlockFrontendWork(operation: $0, offset: 0, count: $0.count) }
    }

    /// Fails every operation submitted and not yet taken (the frontend is closed).
    private func abandonSubmissions() {
        var taken: [BlockFrontendOperation] = []
        submissions.takeAll(into: &taken)
        for operation in taken { operation.abandon(.closed) }
    }

    // MARK: xenbus hooks

    func prepare(backendDomain: DomainID, features: BlkifBackendFeatures, handle: UInt16) throws(BlockFrontendError) -> BlockFrontendConnection {
        let connection = try BlockFrontendConnection(platform: platform, backendDomain: backendDomain, features: features,
                                                     configuration: configuration, handle: handle, ioContext: ioContext,
                                                     logger: logger)
        state.withLock { $0.prepared = connection }
        grants.granted(connection.grantedPageSets.count)
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
            let box = BlockFrontendDiskBox(disk)
            s.diskBoxes.append(box)
            currentDiskBox.store(UInt(bitPattern: Unmanaged.passUnretained(box).toOpaque()), ordering: .releasing)
            s.connections += 1
            defer { s.connectWaiters = [] }
            return s.connectWaiters
        }
        ioContext.wakeUp.wake()
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
            connection.release()
            grants.giveBack(connection.grantedPageSets)
            state.withLock { s in
                // First in line: what the backend had, then what the thread had taken.
                s.waiting.insert(contentsOf: unanswered + unsent, at: 0)
                if !s.waiting.isEmpty { hasWaiting.store(true, ordering: .releasing) }
                s.reissued += unanswered.count
            }
        }
        releaseDeferred()
    }

    /// Retries ending access to pages the backend still mapped; returns how many sets remain.
    @discardableResult
    func releaseDeferred() -> Int { grants.releaseDeferred() }

    /// Fails everything waiting and refuses new work.
    func close() {
        let (work, waiters) = state.withLock { s in
            s.closed = true
            isClosed.store(true, ordering: .sequentiallyConsistent)
            hasWaiting.store(false, ordering: .relaxed)
            defer { s.waiting = []; s.connectWaiters = [] }
            return (s.waiting, s.connectWaiters)
        }
        var seen = Set<ObjectIdentifier>()
        for item in work where seen.insert(ObjectIdentifier(item.operation)).inserted {
            item.operation.abandon(.closed)
        }
        abandonSubmissions()
        for waiter in waiters { waiter.resume(throwing: BlockFrontendError.closed) }
        ioContext.close()
    }
}

/// A published disk, so submitters read it through one atomic pointer.
final class BlockFrontendDiskBox: Sendable {
    let disk: BlockFrontendDisk
    init(_ disk: BlockFrontendDisk) { self.disk = disk }
}
