import Glibc
import Logging
import Synchronization
import URing
import XenBus
import XenPlatform
import XenStore

/// The block backend process: watches `backend/vbd` under its own domain and serves every
/// device that appears there (one process, many frontends, several disks each), on a
/// fixed set of ``BlkbackWorker`` threads. `xensplit blkback` is a thin layer over it.
///
/// Each device runs a ``XenbusBackendDevice`` with a ``BlkbackDevice`` as its hooks; the
/// xenbus driver walks the states (teardown on frontend Closing/Closed, the toolstack
/// removing the node, reconnects), the hooks build and remove queues. A timer off the data
/// path polls every connected device's backing-store size and publishes growth.
public final class BlkbackDaemon: Sendable {
    /// How the daemon runs.
    public struct Configuration: Sendable {
        /// Worker threads (default: one per online core).
        public var workers: Int
        /// Limits advertised to every frontend.
        public var limits: BlkbackDeviceLimits
        /// How often backing-store sizes are checked for online resize.
        public var resizeInterval: Duration
        /// io_uring kernel worker threads per worker, which serve the stores that cannot do
        /// non-blocking I/O (tmpfs, FUSE, some network file systems). Default: one per
        /// online core; with the kernel's defaults (4 per core, and no limit for the pool
        /// registered files' reads landed in) a tmpfs-backed ring ran 25 to 40% slower
        /// here, its extra threads contending for the same cores. Raise it for stores
        /// whose I/O blocks for long.
        public var kernelWorkers: Int
        /// How many lines each device's frontend may cause in the log (refused requests, a
        /// broken ring) before they are counted instead.
        public var guestLog = GuestLog.Policy()

        public init(workers: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
                    limits: BlkbackDeviceLimits = BlkbackDeviceLimits(), resizeInterval: Duration = .seconds(1),
                    kernelWorkers: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))) {
            self.workers = workers
            self.limits = limits
            self.resizeInterval = resizeInterval
            self.kernelWorkers = kernelWorkers
        }
    }

    let platform: any Platform
    let configuration: Configuration
    let logger: Logger
    let store: XenStoreClient
    let placement: BlkbackPlacement
    let devices: Mutex<[String: BlkbackRunningDevice]>
    let stopping: Mutex<(requested: Bool, watcher: XenbusBackendWatcher?)>

    /// Starts the workers (engines from `factory`) and connects to xenstore as the
    /// platform's domain. Nothing is served until ``run()``.
    public init(platform: any Platform, configuration: Configuration = Configuration(), factory: BlockIOEngineFactory,
                logger: Logger = Logger(label: "xensplit.blkback")) throws {
        guard configuration.workers >= 1 else {
            throw BlockBackendError.configuration(name: "workers", value: configuration.workers, limit: 1...4096)
        }
        guard (1...4096).contains(configuration.kernelWorkers) else {
            throw BlockBackendError.configuration(name: "kernel workers", value: configuration.kernelWorkers,
                                                  limit: 1...4096)
        }
        // Each queue a worker serves reserves an engine entry per slot, plus its poll and
        // its cancel; size the engines so a worker can take its full share of queues.
        let perWorker = BlkbackWorker.defaultMaxQueues
        let needed = perWorker * (configuration.limits.slots + 2) + 2
        let factory = factory.withCapacity(needed).withKernelWorkers(configuration.kernelWorkers)
        var workers: [BlkbackWorker] = []
        do {
            for _ in 0..<configuration.workers {
                workers.append(try BlkbackWorker(factory: factory, maxQueues: perWorker, logger: logger))
            }
            store = try platform.connectXenStore()
        } catch {
            for worker in workers { worker.stop() }
            throw error
        }
        self.platform = platform
        self.configuration = configuration
        self.logger = logger
        self.placement = BlkbackPlacement(workers: workers)
        self.devices = Mutex([:])
        self.stopping = Mutex((false, nil))
    }

    /// Serves devices until ``stop()``; then closes every device (Closing, Closed, queues
    /// removed, rings unmapped, ports closed), stops the workers and the xenstore connection.
    public func run() async throws {
        let watcher: XenbusBackendWatcher
        do {
            watcher = try await XenbusBackendWatcher.start(store: store, backendID: platform.domainID, type: "vbd",
                                                           logger: logger)
        } catch {
            await shutdown()
            throw error
        }
        let stopNow = stopping.withLock { value -> Bool in
            value.watcher = watcher
            return value.requested
        }
        if stopNow { await watcher.cancel() }
        logger.info("blkback: serving", metadata: ["directory": "\(watcher.directory)",
                                                   "workers": "\(placement.workers.count)"])
        let resizer = Task { await self.pollSizes() }
        for await event in watcher {
            switch event {
            case let .added(id): added(id)
            case let .removed(id):
                // The driver sees its node gone and stops itself; nothing to write.
                logger.info("blkback: device node removed by the toolstack", metadata: ["device": "\(id)"])
            }
        }
        resizer.cancel()
        await shutdown()
    }

    /// Makes ``run()`` close every device and return. Safe from any thread or task.
    public func stop() {
        let watcher = stopping.withLock { value -> XenbusBackendWatcher? in
            value.requested = true
            return value.watcher
        }
        if let watcher { Task { await watcher.cancel() } }
    }

    /// The devices served now, by backend path, and whether each has queues.
    public var connectedDevices: [String: Bool] {
        devices.withLock { $0.mapValues { $0.hooks.isConnected } }
    }

    /// Queues per worker now.
    public var queuesPerWorker: [Int] { placement.counts }

    /// A device node appeared. If a driver for the same path is still running (the node
    /// was removed and added again quickly), one of two things happens to it: it saw the
    /// removal and is stopping, and the new driver starts once it has; or it sees the new
    /// node as a replacement and serves it itself. Never two drivers on one node.
    private func added(_ id: XenbusBackendDeviceID) {
        guard let old = devices.withLock({ $0[id.backendPath] }) else { return start(id) }
        logger.info("blkback: device added again while its previous driver runs; waiting for it",
                    metadata: ["device": "\(id)"])
        Task {
            _ = await old.driver.stopped()
            let free = devices.withLock { devices in
                devices[id.backendPath] == nil || devices[id.backendPath]?.driver === old.driver
            }
            guard free, stopping.withLock({ !$0.requested }) else { return }
            if (try? await store.read(id.backendPath)) != nil { start(id) }
        }
    }

    private func start(_ id: XenbusBackendDeviceID) {
        let hooks = BlkbackDevice(backendPath: id.backendPath, platform: platform, store: store,
                                  limits: configuration.limits, placement: placement, logger: logger,
                                  guestLogPolicy: configuration.guestLog,
                                  onQueueFailure: { [weak self] queue, reason in
                                      self?.violated(id, queue: queue, reason: reason)
                                  })
        var driverLogger = logger
        driverLogger[metadataKey: "device"] = "\(id.backendPath)"
        let driver = XenbusBackendDevice(store: store, backend: id.backendPath, hooks: hooks, logger: driverLogger)
        let running = BlkbackRunningDevice(driver: driver, hooks: hooks)
        let replaced = devices.withLock { devices -> BlkbackRunningDevice? in
            defer { devices[id.backendPath] = running }
            return devices[id.backendPath]
        }
        if replaced != nil { logger.warning("blkback: device reappeared before its driver stopped", metadata: ["device": "\(id)"]) }
        Task {
            let reason = await driver.stopped()
            hooks.release()
            devices.withLock { devices in
                if devices[id.backendPath]?.driver === driver { devices[id.backendPath] = nil }
            }
            logger.info("blkback: device released", metadata: ["device": "\(id)", "reason": "\(reason)"])
        }
    }

    /// A frontend broke the ring protocol: its driver refuses the device the way
    /// `xenbus_dev_fatal` does (error node, queues removed, Closing) and keeps it down until
    /// the frontend starts over (``XenbusBackendDevice/reportViolation(_:)``). The other
    /// devices are not touched. Runs on the queue's worker thread.
    private func violated(_ id: XenbusBackendDeviceID, queue: String, reason: BlockBackendError) {
        guard let running = devices.withLock({ $0[id.backendPath] }) else { return }
        running.hooks.guestLog.log(.error, "blkback: frontend broke the ring protocol; refusing the device",
                                   metadata: ["queue": "\(queue)", "reason": "\(reason)"])
        running.driver.reportViolation("\(queue): \(reason)")
    }

    private func shutdown() async {
        let running = devices.withLock { Array($0.values) }
        for device in running {
            await device.driver.close()
            device.hooks.release()
        }
        devices.withLock { $0 = [:] }
        for worker in placement.workers { worker.stop() }
        store.close()
        logger.info("blkback: stopped")
    }

    /// The daemon's timer, off the data path: reports each device's suppressed guest log
    /// lines (``GuestLog/flush()``), and does online resize: compares each connected
    /// device's backing-store size with what its queues use; on a change the workers learn
    /// the new size first, then `sectors` is rewritten with the state (as Linux's
    /// `xen_vbd_resize` does, so a frontend watching the state notices).
    private func pollSizes() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: configuration.resizeInterval)
            } catch {
                return
            }
            let running = devices.withLock { Array($0.values) }
            for device in running {
                device.hooks.guestLog.flush()
                do {
                    guard let change = try device.hooks.checkResize() else { continue }
                    let path = device.hooks.backendPath
                    try await store.withTransaction { tx in
                        guard try await tx.readString(path + "/state") == "4" else { return }
                        try await tx.write(path + "/sectors", String(change.properties.sectors512))
                        try await tx.write(path + "/state", "4")
                    }
                    logger.info("blkback: resized", metadata: ["device": "\(path)",
                                                               "sectors": "\(change.properties.sectors512)"])
                } catch {
                    logger.error("blkback: resize check failed", metadata: ["device": "\(device.hooks.backendPath)",
                                                                            "error": "\(error)"])
                }
            }
        }
    }
}

/// A device's driver and hooks, while the driver runs.
struct BlkbackRunningDevice: Sendable {
    let driver: XenbusBackendDevice<BlkbackDevice>
    let hooks: BlkbackDevice
}
