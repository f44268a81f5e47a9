import Logging
import Synchronization
import XenBus
import XenPlatform
import XenStore

/// The xenbus side of a backend process, for any device type: watches
/// `/local/domain/<self>/backend/<type>` and runs one ``XenbusBackendDevice`` per device
/// node that appears there, with a ``BackendDevice`` the caller makes as its hooks. It
/// handles a node removed and added again while its driver runs (never two drivers on one
/// node), devices refused for a protocol violation (the device reports one through the
/// closure it was made with; the driver keeps the device down, see Protocols/xenbus.md),
/// a timer for the devices' housekeeping, and shutdown (every device walked to Closed,
/// then released).
public final class BackendDaemon<Device: BackendDevice>: Sendable {
    /// Makes the hooks for a device; `reportViolation` routes a protocol violation the
    /// device saw on its data path to its driver (safe from any thread).
    public typealias MakeDevice = @Sendable (_ id: XenbusBackendDeviceID,
                                             _ reportViolation: @escaping @Sendable (String) -> Void) -> Device

    /// The device type, as the backend directory names it (`vbd`, `vif`).
    public let type: String
    /// The workers the devices' queues run on, if the daemon owns them.
    public let workers: BackendPlacement?
    let store: XenStoreClient
    let backendID: DomainID
    let housekeepingInterval: Duration
    let logger: Logger
    let makeDevice: MakeDevice
    let devices: Mutex<[String: Running]>
    let stopping: Mutex<(requested: Bool, watcher: XenbusBackendWatcher?)>

    /// A device's driver and hooks, while the driver runs.
    struct Running: Sendable {
        let driver: XenbusBackendDevice<Device>
        let device: Device
        let released = Once()
    }

    /// Makes the device's ``BackendDevice/release()`` happen once, whichever of the driver
    /// stopping and the daemon shutting down gets there first.
    final class Once: Sendable {
        let done = Mutex(false)
        func callAsFunction(_ body: () -> Void) {
            guard done.withLock({ done in defer { done = true }; return !done }) else { return }
            body()
        }
    }

    /// A daemon for the `type` devices whose backend is `backendID`, over `store` (a
    /// connection acting as that domain; the daemon closes it when it stops). With
    /// `workers`, the devices' queues run on them and ``run()`` stops them on its way out.
    public init(store: XenStoreClient, backendID: DomainID, type: String, workers: BackendPlacement? = nil,
                housekeepingInterval: Duration = .seconds(1), logger: Logger, makeDevice: @escaping MakeDevice) {
        self.workers = workers
        self.store = store
        self.backendID = backendID
        self.type = type
        self.housekeepingInterval = housekeepingInterval
        self.logger = logger
        self.makeDevice = makeDevice
        devices = Mutex([:])
        stopping = Mutex((false, nil))
    }

    /// A daemon acting as `platform`'s domain over a xenstore connection of its own, for
    /// the `type` devices whose queues run on `workers` (nil: workers shared with other
    /// daemons, which their owner stops); `makeDevice` is also given that connection. If
    /// it cannot connect, the workers it owns are stopped.
    public convenience init(platform: any Platform, type: String, workers: BackendPlacement?,
                            housekeepingInterval: Duration = .seconds(1), logger: Logger,
                            makeDevice: @escaping @Sendable (_ id: XenbusBackendDeviceID, _ store: XenStoreClient,
                                                             _ reportViolation: @escaping @Sendable (String) -> Void) -> Device) throws {
        let store: XenStoreClient
        do {
            store = try platform.connectXenStore()
        } catch {
            workers?.stopAll()
            throw error
        }
        self.init(store: store, backendID: platform.domainID, type: type, workers: workers,
                  housekeepingInterval: housekeepingInterval, logger: logger) { id, report in makeDevice(id, store, report) }
    }

    /// Serves devices until ``stop()``; then closes every device (Closing, Closed, queues
    /// removed) and releases it, and stops the workers it was given. Throws if the backend
    /// directory cannot be watched, or ``BackendDaemonError/hypervisorLost(directory:)``
    /// if the xenstore connection closed under it (after the same shutdown).
    public func run() async throws {
        defer {
            workers?.stopAll()
            logger.info("\(type) backend: stopped")
        }
        let watcher: XenbusBackendWatcher
        do {
            watcher = try await XenbusBackendWatcher.start(store: store, backendID: backendID, type: type, logger: logger)
        } catch {
            await shutdown()
            throw error
        }
        let stopNow = stopping.withLock { value -> Bool in
            value.watcher = watcher
            return value.requested
        }
        if stopNow { await watcher.cancel() }
        logger.info("\(type) backend: serving", metadata: ["directory": "\(watcher.directory)"])
        let timer = Task { await self.housekeeping() }
        for await event in watcher {
            switch event {
            case let .added(id): added(id)
            case let .removed(id):
                // The driver sees its node gone and stops itself; nothing to write.
                logger.info("\(type) backend: device node removed by the toolstack", metadata: ["device": "\(id)"])
            }
        }
        timer.cancel()
        await shutdown()
        // The watch ends by itself only when the connection closed: a stop nobody asked for.
        guard stopping.withLock({ $0.requested }) else { throw BackendDaemonError.hypervisorLost(directory: watcher.directory) }
    }

    /// Makes ``run()`` close every device and return. Safe from any thread or task.
    public func stop() {
        let watcher = stopping.withLock { value -> XenbusBackendWatcher? in
            value.requested = true
            return value.watcher
        }
        if let watcher { Task { await watcher.cancel() } }
    }

    /// The devices served now, by backend path.
    public var running: [String: Device] { devices.withLock { $0.mapValues(\.device) } }

    /// The driver of the device at `backendPath`, while it runs.
    public func driver(_ backendPath: String) -> XenbusBackendDevice<Device>? {
        devices.withLock { $0[backendPath]?.driver }
    }

    /// Closes every device, then the xenstore connection. Called by ``run()`` on its way
    /// out; also for a caller whose ``run()`` never started.
    public func shutdown() async {
        let running = devices.withLock { Array($0.values) }
        for entry in running {
            await entry.driver.close()
            entry.released { entry.device.release() }
        }
        devices.withLock { $0 = [:] }
        store.close()
    }

    /// A device node appeared. If a driver for the same path is still running (the node
    /// was removed and added again quickly), one of two things happens to it: it saw the
    /// removal and is stopping, and the new driver starts once it has; or it sees the new
    /// node as a replacement and serves it itself. Never two drivers on one node.
    private func added(_ id: XenbusBackendDeviceID) {
        guard let old = devices.withLock({ $0[id.backendPath] }) else { return start(id) }
        logger.info("\(type) backend: device added again while its previous driver runs; waiting for it",
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
        let device = makeDevice(id) { [weak self] reason in self?.violated(id, reason: reason) }
        var driverLogger = logger
        driverLogger[metadataKey: "device"] = "\(id.backendPath)"
        let driver = XenbusBackendDevice(store: store, backend: id.backendPath, hooks: device, logger: driverLogger)
        let entry = Running(driver: driver, device: device)
        let replaced = devices.withLock { devices -> Running? in
            defer { devices[id.backendPath] = entry }
            return devices[id.backendPath]
        }
        if replaced != nil {
            logger.warning("\(type) backend: device reappeared before its driver stopped", metadata: ["device": "\(id)"])
        }
        Task {
            let reason = await driver.stopped()
            entry.released { device.release() }
            devices.withLock { devices in
                if devices[id.backendPath]?.driver === driver { devices[id.backendPath] = nil }
            }
            logger.info("\(type) backend: device released", metadata: ["device": "\(id)", "reason": "\(reason)"])
        }
    }

    /// The device saw its frontend break the protocol: its driver refuses it and keeps it
    /// down until the frontend starts over. Other devices are not touched.
    private func violated(_ id: XenbusBackendDeviceID, reason: String) {
        devices.withLock { $0[id.backendPath] }?.driver.reportViolation(reason)
    }

    private func housekeeping() async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: housekeepingInterval)
            } catch {
                return
            }
            for entry in devices.withLock({ Array($0.values) }) { await entry.device.housekeeping(store: store) }
        }
    }
}
