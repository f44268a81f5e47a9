import Glibc
import Logging
import Synchronization
import URing
import XenBus
import XenDevice
import XenPlatform
import XenStore

/// The block backend process: watches `backend/vbd` under its own domain and serves every
/// device that appears there (one process, many frontends, several disks each), on a
/// fixed set of ``BackendWorker`` threads. `xensplit blkback` is a thin layer over it.
///
/// The xenbus side is XenDevice's ``BackendDaemon`` for type `vbd`: each device runs a
/// ``XenbusBackendDevice`` with a ``BlkbackDevice`` as its hooks; the xenbus driver walks
/// the states (teardown on frontend Closing/Closed, the toolstack removing the node,
/// reconnects, a device refused for a protocol violation kept down), the hooks build and
/// remove queues on this daemon's workers. The daemon's timer, off the data path, has each
/// device report suppressed guest log lines and publish a grown backing store.
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
        /// Where each queue keeps the state a later process takes it over from
        /// (Protocols/blkback-restart.md): a directory on tmpfs, made if missing. Nil: no
        /// state; a restarted backend then resumes a Connected ring at rsp_prod.
        public var restartStateDirectory: String?

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
    let placement: BackendPlacement
    let core: BackendDaemon<BlkbackDevice>

    /// Starts the workers (engines from `factory`) and connects to xenstore as the
    /// platform's domain. Nothing is served until ``run()``.
    public convenience init(platform: any Platform, configuration: Configuration = Configuration(), factory: BlockIOEngineFactory,
                            logger: Logger = Logger(label: "xensplit.blkback")) throws {
        guard configuration.workers >= 1 else {
            throw BlockBackendError.configuration(name: "workers", value: configuration.workers, limit: 1...4096)
        }
        guard (1...4096).contains(configuration.kernelWorkers) else {
            throw BlockBackendError.configuration(name: "kernel workers", value: configuration.kernelWorkers,
                                                  limit: 1...4096)
        }
        let factory = factory.withCapacity(Self.engineCapacity(configuration)).withKernelWorkers(configuration.kernelWorkers)
        let placement: BackendPlacement
        do {
            placement = try BackendPlacement(starting: configuration.workers, factory: factory,
                                             maxQueues: BackendWorker.defaultMaxQueues, threadName: "blkback-worker",
                                             logger: logger)
        } catch {
            throw BlockBackendError.worker(error)
        }
        try self.init(platform: platform, configuration: configuration, placement: placement, owned: true, logger: logger)
    }

    /// A daemon whose queues run on `workers`, shared with other daemons (`xensplit
    /// backend`): it does not stop them. Their engines must hold ``engineCapacity(_:)``.
    public convenience init(platform: any Platform, configuration: Configuration = Configuration(),
                            sharing workers: BackendPlacement, logger: Logger = Logger(label: "xensplit.blkback")) throws {
        try self.init(platform: platform, configuration: configuration, placement: workers, owned: false, logger: logger)
    }

    private init(platform: any Platform, configuration: Configuration, placement: BackendPlacement, owned: Bool,
                 logger: Logger) throws {
        self.platform = platform
        self.configuration = configuration
        self.logger = logger
        self.placement = placement
        if let directory = configuration.restartStateDirectory {
            // mkdir -p: each missing component, in order.
            var path = directory.hasPrefix("/") ? "" : "."
            for component in directory.split(separator: "/") {
                path += "/" + component
                guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
                    throw BlockBackendError.restartState(.file(path: path, call: "mkdir", errno: errno))
                }
            }
        }
        core = try BackendDaemon(platform: platform, type: "vbd", workers: owned ? placement : nil,
                                 housekeepingInterval: configuration.resizeInterval, logger: logger) { id, store, report in
            BlkbackDevice(backendPath: id.backendPath, platform: platform, store: store, limits: configuration.limits,
                          placement: placement, logger: logger, guestLogPolicy: configuration.guestLog,
                          restartDirectory: configuration.restartStateDirectory, reportViolation: report)
        }
    }

    /// Engine entries a worker needs to take its full share of queues: each reserves an
    /// entry per slot, plus its poll and its cancel.
    public static func engineCapacity(_ configuration: Configuration) -> Int {
        BackendWorker.defaultMaxQueues * (configuration.limits.slots + 2) + 2
    }

    /// Serves devices until ``stop()``; then closes every device (Closing, Closed, queues
    /// removed, rings unmapped, ports closed), stops the workers and the xenstore connection.
    public func run() async throws { try await core.run() }

    /// Makes ``run()`` close every device and return. Safe from any thread or task.
    public func stop() { core.stop() }

    /// Prepares this process to hand its devices to another: every queue stops taking
    /// requests and finishes those in flight (``BlkbackDevice/quiesce(limit:)``). The
    /// caller then exits without ``stop()``, leaving every device Connected and its
    /// restart state for the next process. Returns the requests left in flight.
    public func handOver() async -> Int {
        var left = 0
        for device in devices.values { left += await device.quiesce() }
        return left
    }

    /// The devices served now, by backend path, and whether each has queues.
    public var connectedDevices: [String: Bool] { core.running.mapValues(\.isConnected) }

    /// The device hooks served now, by backend path.
    var devices: [String: BlkbackDevice] { core.running }

    /// Queues per worker now.
    public var queuesPerWorker: [Int] { placement.counts }
}
