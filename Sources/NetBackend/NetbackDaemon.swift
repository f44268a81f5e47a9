import Glibc
import Logging
import Netif
import URing
import XenBus
import XenDevice
import XenPlatform
import XenStore

/// The net backend of one domain: serves every vif under its backend/vif on a fixed set of
/// ``BackendWorker`` threads. `xensplit netback` is a thin layer over it.
///
/// One process, many guests: the device-neutral ``BackendDaemon`` watches backend/vif and
/// runs a ``NetbackDevice`` per vif (its TAP device made before InitWait), whose queue goes
/// to the least loaded worker.
public final class NetbackDaemon: Sendable {
    public struct Configuration: Sendable {
        /// Worker threads (default: one per online core).
        public var workers: Int
        /// Limits for every vif.
        public var limits: NetbackDeviceLimits
        /// Rate limit for the log lines a guest can cause, per vif.
        public var guestLog = GuestLog.Policy()
        /// How often the devices' housekeeping runs (suppressed guest log lines).
        public var housekeepingInterval: Duration = .seconds(1)

        public init(workers: Int = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))),
                    limits: NetbackDeviceLimits = NetbackDeviceLimits()) {
            self.workers = workers
            self.limits = limits
        }
    }

    let configuration: Configuration
    let logger: Logger
    let placement: BackendPlacement
    let core: BackendDaemon<NetbackDevice>

    /// Starts the workers (engines from `factory`) and connects to xenstore as the
    /// platform's domain. Nothing is served until ``run()``.
    public convenience init(platform: any Platform, configuration: Configuration = Configuration(), factory: BlockIOEngineFactory,
                            logger: Logger = Logger(label: "xensplit.netback")) throws {
        guard (1...4096).contains(configuration.workers) else {
            throw NetbackError.configuration(name: "workers", value: configuration.workers, limit: 1...4096)
        }
        let placement: BackendPlacement
        do {
            placement = try BackendPlacement(starting: configuration.workers,
                                             factory: factory.withCapacity(Self.engineCapacity(configuration)),
                                             maxQueues: BackendWorker.defaultMaxQueues, threadName: "netback-worker",
                                             logger: logger)
        } catch {
            throw NetbackError.worker(error)
        }
        try self.init(platform: platform, configuration: configuration, placement: placement, owned: true, logger: logger)
    }

    /// A daemon whose queues run on `workers`, shared with other daemons (`xensplit
    /// backend`): it does not stop them. Their engines must hold ``engineCapacity(_:)``.
    public convenience init(platform: any Platform, configuration: Configuration = Configuration(),
                            sharing workers: BackendPlacement, logger: Logger = Logger(label: "xensplit.netback")) throws {
        try self.init(platform: platform, configuration: configuration, placement: workers, owned: false, logger: logger)
    }

    private init(platform: any Platform, configuration: Configuration, placement: BackendPlacement, owned: Bool,
                 logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        self.placement = placement
        core = try BackendDaemon(platform: platform, type: "vif", workers: owned ? placement : nil,
                                 housekeepingInterval: configuration.housekeepingInterval, logger: logger) { id, store, report in
            NetbackDevice(backendPath: id.backendPath, platform: platform, store: store, limits: configuration.limits,
                          placement: placement, logger: logger, guestLogPolicy: configuration.guestLog,
                          reportViolation: report)
        }
    }

    /// Engine entries a worker needs to take its full share of queues: each reserves an
    /// entry per buffer operation, plus its poll and cancel.
    public static func engineCapacity(_ configuration: Configuration) -> Int {
        let queue = configuration.limits.queue
        return BackendWorker.defaultMaxQueues * (queue.txBuffers + 2 * queue.rxBuffers + 2) + 2
    }

    /// Serves vifs until ``stop()``; then closes every vif (Closing, Closed, queues removed,
    /// rings unmapped, ports closed, TAP devices removed), stops the workers and the
    /// xenstore connection.
    public func run() async throws { try await core.run() }

    /// Makes ``run()`` close every vif and return. Safe from any thread or task.
    public func stop() { core.stop() }

    /// The vifs served now, by backend path, and whether each is connected.
    public var connectedDevices: [String: Bool] { core.running.mapValues(\.isConnected) }

    /// The TAP device of each vif served now, by backend path.
    public var interfaces: [String: String] { core.running.compactMapValues(\.interfaceName) }

    /// The packet counts of the vif at `backendPath`, summed over its queues, while it is
    /// connected.
    public func counters(of backendPath: String) async -> NetifCounters? {
        await core.running[backendPath]?.counters()
    }

    /// What the frontend of the vif at `backendPath` set over its control ring, while it
    /// is connected.
    public func hashConfiguration(of backendPath: String) -> NetifHashConfiguration? {
        core.running[backendPath]?.hashConfiguration
    }

    /// Queues per worker now.
    public var queuesPerWorker: [Int] { placement.counts }
}
