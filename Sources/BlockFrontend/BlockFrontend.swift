import Blkif
import Logging
import XenBus
import XenDevice
import XenPlatform
import XenStore

/// A virtual disk seen from the frontend side: a userspace blkfront (`io/blkif.h`).
///
/// It attaches to `device/vbd/<devid>` of its domain through ``XenbusFrontendDevice``,
/// reads what the backend offers and takes as much as its configuration allows: a ring
/// of up to 16 pages (`ring-page-order`), several rings (`multi-queue-num-queues`),
/// indirect requests (`feature-max-indirect-segments`) and flush, barrier or discard as
/// advertised. Data pages are granted once per connection and reused (persistent grants).
///
/// Reads and writes of any size are split into blkif requests of at most the segments
/// per request in use; at most ``BlockFrontendDisk/depth`` requests are in flight and
/// further callers wait their turn. When the backend goes away and comes back (a backend
/// restart), the frontend grants new rings and sends again every request that had no
/// answer, from its own copy of the data, so callers see neither the restart nor an
/// error for it; only the backend's own answers (BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP)
/// fail a call. Sectors in this API are 512 bytes, as on the ring; ranges must be
/// aligned to the disk's `sector-size`.
public final class BlockFrontend: Sendable {
    /// The frontend node, `/local/domain/<domid>/device/vbd/<devid>`.
    public let frontendPath: String
    let core: BlockFrontendCore
    let device: XenbusFrontendDevice<BlockFrontendHooks>
    let store: XenStoreClient

    /// Starts the frontend of disk `devid` of this domain over `platform`.
    public init(platform: any Platform, devid: String, configuration: BlockFrontendConfiguration = .init(),
                logger: Logger = Logger(label: "xensplit.blkfront")) throws(BlockFrontendError) {
        try configuration.validate()
        // First, so that nothing is left open if it fails.
        core = try BlockFrontendCore(platform: platform, configuration: configuration, logger: logger)
        let store: XenStoreClient
        do { store = try platform.connectXenStore() } catch { throw .platform(error) }
        self.store = store
        frontendPath = "/local/domain/\(platform.domainID)/device/vbd/\(devid)"
        // io/blkif.h: `handle` names the virtual device; Linux puts its vdevice number there.
        let hooks = BlockFrontendHooks(core: core, handle: UInt16(devid) ?? 0)
        device = XenbusFrontendDevice(store: store, frontend: frontendPath, hooks: hooks, logger: logger)
        let core = self.core
        let device = self.device
        Task {
            // A driver that stops by itself (node removed, xenstore gone) fails the callers.
            _ = await device.stopped()
            core.close()
        }
    }

    /// Waits until the frontend's driver stops and says why: ``close()`` was called, the
    /// toolstack removed the device, or the xenstore connection closed (the hypervisor went away).
    public func stopped() async -> XenbusStopReason { await device.stopped() }

    /// The xenbus state the frontend last wrote.
    public var state: XenbusState { device.state }

    /// Waits until the backend connected (at once if it did before) and returns the disk.
    public func connected() async throws -> BlockFrontendDisk {
        try await core.connected()
    }

    /// Handshakes completed so far (a backend restart adds one).
    public var connections: Int { core.state.withLock { $0.connections } }

    /// Requests sent to the backend and not yet answered.
    public var inFlightRequests: Int { core.state.withLock { $0.connection?.inFlight.load(ordering: .relaxed) ?? 0 } }

    /// Rings of the current connection that the backend broke (an index overrun, a
    /// response to no request, a malformed status): they are no longer read, and their
    /// requests wait, unanswered, to be sent again after the backend reconnects.
    public var brokenRings: Int { core.state.withLock { $0.connection?.brokenRings.load(ordering: .relaxed) ?? 0 } }

    /// Why the current connection's I/O thread stopped waiting on its event channel
    /// (``BlockFrontendError/eventChannelFailed(_:)``), or nil while it waits on it. The
    /// thread then looks at the rings on a timer, so requests still complete, more slowly.
    public var eventChannelFailure: BlockFrontendError? {
        core.state.withLock { $0.connection?.thread.channelFailure.map(BlockFrontendError.eventChannelFailed) }
    }

    /// Failed waits of the current connection's I/O thread: poll failing, or the event
    /// channel reporting an error (the first one is ``eventChannelFailure``).
    public var eventChannelWaitFailures: Int {
        core.state.withLock { $0.connection?.thread.waitFailures ?? 0 }
    }

    /// Requests that were in flight when a backend went away, and were sent again.
    public var reissuedRequests: Int { core.state.withLock { $0.reissued } }

    /// Sets of granted pages not yet given back (rings, data, indirect pages).
    public var grantedPageSets: Int { core.grants.outstanding }

    /// Reads `count` 512-byte sectors from `sector`.
    public func read(sector: UInt64, count: UInt64) async throws -> [UInt8] {
        try await waitUntilConnected()
        return try await perform(.read(sector: sector, count: count))
    }

    /// Writes `data` (a multiple of 512 bytes) from `sector`. Returns once the backend
    /// acknowledged every part; flush to make it durable.
    public func write(sector: UInt64, data: [UInt8]) async throws {
        try await waitUntilConnected()
        _ = try await perform(.write(sector: sector, data: data))
    }

    /// Makes acknowledged writes durable: BLKIF_OP_FLUSH_DISKCACHE, or
    /// BLKIF_OP_WRITE_BARRIER where only that is offered.
    public func flush() async throws {
        _ = try await connected()
        _ = try await perform(.flush)
    }

    /// Discards `count` 512-byte sectors from `sector` (BLKIF_OP_DISCARD); the backend
    /// decides what they read as afterwards (ours: zeroes).
    public func discard(sector: UInt64, count: UInt64) async throws {
        _ = try await connected()
        _ = try await perform(.discard(sector: sector, count: count))
    }

    /// Serves `source` on the frontend's I/O thread from its next pass on, across backend
    /// restarts (while the backend is away, nothing serves it), until it reports
    /// ``FrontendLoopProgress/done``, ``detach(_:)`` takes it away or the frontend
    /// closes (``FrontendLoopSource/frontendClosed()``). False, and nothing attached,
    /// when the frontend is closed already.
    public func attach(_ source: any FrontendLoopSource) -> Bool {
        core.ioContext.attach(source)
    }

    /// Takes `source` off the I/O thread; returns once the thread no longer calls it (at
    /// once when none runs, or when called on the I/O thread itself: a task on
    /// ``executor``, which runs before the thread next serves its sources).
    public func detach(_ source: any FrontendLoopSource) {
        core.ioContext.detach(source)
    }

    /// Runs tasks that prefer it on this frontend's I/O thread:
    /// `try await withTaskExecutorPreference(frontend.executor) { ... }`. See
    /// ``FrontendExecutor``.
    public var executor: FrontendExecutor { core.ioContext.executor }

    /// Starts `request` without waiting for it, for callers that keep many in flight
    /// from a thread of their own (the NBD server). `completion` runs exactly once: on the
    /// frontend's I/O thread when the backend answered every part (so it must be short
    /// and never block), or on this thread if the request is refused at once (bad range,
    /// read-only disk, feature not offered, frontend closed or not yet connected).
    /// Requests sent before a backend restart complete after it, as for the async calls.
    public func submit(_ request: BlockFrontendRequest, completion: @escaping BlockFrontendCompletion) {
        submit(request, waiter: .completion(completion))
    }

    /// ``submit(_:completion:)`` for a read of `buffer.count` bytes (a multiple of 512)
    /// from `sector`, into `buffer`, which the completion hands back filled. For callers
    /// that recycle their buffers: a large array made afresh for every read costs its page
    /// faults on the I/O thread, at its first write.
    ///
    /// The buffer is taken over (`consuming`) and filled in place while nothing else holds
    /// it; an array still shared with the caller is copied before it is written.
    public func submitRead(sector: UInt64, into buffer: consuming [UInt8], completion: @escaping BlockFrontendCompletion) {
        let bytes = buffer.count
        guard bytes % 512 == 0 else {
            return completion(.failure(.invalidLength(operation: "read", bytes: bytes, expected: (bytes / 512 + 1) * 512)))
        }
        submit(.read(sector: sector, count: UInt64(bytes / 512)), buffer: consume buffer, waiter: .completion(completion))
    }

    private func submit(_ request: BlockFrontendRequest, buffer: consuming [UInt8]? = nil,
                        waiter: BlockFrontendOperation.Waiter) {
        let operation: BlockFrontendOperation
        do throws(BlockFrontendError) {
            operation = try makeOperation(request, buffer: consume buffer, disk: try core.currentDisk().get(), waiter: waiter)
        } catch {
            waiter.resume(.failure(error))
            return
        }
        core.enqueue(operation)
    }

    /// Returns at once when connected (the common case, without another async call).
    private func waitUntilConnected() async throws {
        guard case .success = core.currentDisk() else {
            _ = try await connected()
            return
        }
    }

    private func perform(_ request: BlockFrontendRequest) async throws(BlockFrontendError) -> [UInt8] {
        // SAFETY: submit resumes its waiter exactly once (BlockFrontendOperation clears
        // it before resuming it, and a refused request is resumed once, at once), so the
        // continuation is resumed exactly once; the checked kind would only add a box
        // and a check per request.
        let result = await withUnsafeContinuation { (continuation: UnsafeContinuation<Result<[UInt8], BlockFrontendError>, Never>) in
            submit(request, waiter: .task(continuation))
        }
        return try result.get()
    }

    /// Checks `request` against `disk` and makes the operation the I/O thread sends; a
    /// read goes into `buffer` when given (of the read's size).
    private func makeOperation(_ request: BlockFrontendRequest, buffer: consuming [UInt8]?, disk: BlockFrontendDisk,
                               waiter: BlockFrontendOperation.Waiter) throws(BlockFrontendError) -> BlockFrontendOperation {
        switch request {
        case let .read(sector, count):
            try check("read", sector: sector, count: count, disk: disk, writing: false)
            // SAFETY: not zero-filled, as every byte is overwritten: the answer to each part
            // copies that part's sectors in before success hands the array out, and on a
            // failure it is dropped unread.
            let data: [UInt8]
            if let buffer = consume buffer {
                data = buffer
            } else {
                data = [UInt8](unsafeUninitializedCapacity: Int(count) * 512) { _, initialized in
                    initialized = Int(count) * 512
                }
            }
            return BlockFrontendOperation(kind: .read, sector: sector, count: count, data: data, waiter: waiter)
        case let .write(sector, data):
            guard data.count % 512 == 0 else {
                throw .invalidLength(operation: "write", bytes: data.count, expected: (data.count / 512 + 1) * 512)
            }
            let count = UInt64(data.count / 512)
            try check("write", sector: sector, count: count, disk: disk, writing: true)
            return BlockFrontendOperation(kind: .write, sector: sector, count: count, data: data, waiter: waiter)
        case .flush:
            guard disk.backend.flushCache || disk.backend.barrier else {
                throw .featureNotOffered(operation: "flush", feature: BlkifBackendFeatures.Key.flushCache)
            }
            return BlockFrontendOperation(kind: .flush, sector: 0, count: 0, data: [], waiter: waiter)
        case let .discard(sector, count):
            guard disk.backend.discard else {
                throw .featureNotOffered(operation: "discard", feature: BlkifBackendFeatures.Key.discard)
            }
            try check("discard", sector: sector, count: count, disk: disk, writing: true)
            return BlockFrontendOperation(kind: .discard, sector: sector, count: count, data: [], waiter: waiter)
        }
    }

    /// Closes the device: xenbus Closing and Closed, requests not yet answered fail with
    /// ``BlockFrontendError/closed``, and every grant is ended (retrying for up to
    /// `grantWaitSeconds` while the backend still maps the rings). Returns how many page
    /// sets could not be given back in that time.
    @discardableResult
    public func close(grantWaitSeconds: Int = 5) async -> Int {
        // Closing stops the I/O thread and waits for it: not from a task running on it.
        if core.onIOThread {
            return await Task.detached { [self] in await close(grantWaitSeconds: grantWaitSeconds) }.value
        }
        await device.close()
        core.close()
        var remaining = core.releaseDeferred()
        var waited = 0
        while remaining > 0, waited < grantWaitSeconds * 100 {
            try? await Task.sleep(for: .milliseconds(10))
            waited += 1
            remaining = core.releaseDeferred()
        }
        if remaining > 0 {
            core.logger.error("blkfront: \(remaining) granted page sets still mapped by the backend after \(grantWaitSeconds) s")
        }
        store.close()
        return remaining
    }

    private func check(_ operation: String, sector: UInt64, count: UInt64, disk: BlockFrontendDisk,
                       writing: Bool) throws(BlockFrontendError) {
        let alignment = UInt64(disk.properties.sectorSize / 512)
        let size = disk.sectors512
        guard count > 0, count <= size, sector <= size - count, sector % alignment == 0, count % alignment == 0,
              count <= UInt64(Int.max / 512) else {
            throw .invalidRange(operation: operation, sector: sector, count: count, diskSectors: size, alignment: alignment)
        }
        if writing, disk.readOnly { throw .readOnly(operation: operation, sector: sector, count: count) }
    }
}
