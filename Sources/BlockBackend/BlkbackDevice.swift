import Blkif
import Glibc
import Logging
import Synchronization
import XenBus
import XenDevice
import XenPlatform
import XenRing
import XenStore

/// The limits a block backend advertises for every device (`io/blkif.h`, "Backend XenBus
/// Nodes") and how it sizes each queue.
public struct BlkbackDeviceLimits: Sendable {
    /// `max-ring-page-order`: log2 of the largest ring mapped (Linux blkback's default is 4).
    public var maxRingPageOrder: UInt32
    /// `multi-queue-max-queues`: the most rings per device.
    public var maxQueues: UInt32
    /// `feature-max-indirect-segments` (0: indirect requests are not offered).
    public var maxIndirectSegments: Int
    /// Requests in flight per queue.
    public var slots: Int
    /// `feature-persistent`: offer persistent grants; queues use them when the frontend
    /// advertises the key too (``BlkbackQueueConfiguration/persistentGrants``).
    public var persistentGrants: Bool
    /// Pages kept mapped per queue with persistent grants.
    public var persistentGrantsPerQueue: Int

    public init(maxRingPageOrder: UInt32 = 4, maxQueues: UInt32 = 4, maxIndirectSegments: Int = 32, slots: Int = 32,
                persistentGrants: Bool = true,
                persistentGrantsPerQueue: Int = BlkbackQueueConfiguration.defaultPersistentGrantsPerQueue) {
        self.maxRingPageOrder = maxRingPageOrder
        self.maxQueues = maxQueues
        self.maxIndirectSegments = maxIndirectSegments
        self.slots = slots
        self.persistentGrants = persistentGrants
        self.persistentGrantsPerQueue = persistentGrantsPerQueue
    }
}

/// What the toolstack wrote in a vbd's backend node (libxl's `libxl__device_disk_add`):
/// the target and how it may be used.
public struct BlkbackToolstackKeys: Sendable, Equatable {
    /// `params`: the file or block device.
    public var target: String
    /// `mode` is `r`, or `device-type` is `cdrom`: the disk is read-only.
    public var readOnly: Bool
    /// `device-type` is `cdrom`.
    public var cdrom: Bool
    /// `removable` is 1.
    public var removable: Bool
    /// `discard-enable` is not 0.
    public var discardEnabled: Bool
    /// `direct-io-safe` is 1: the toolstack vouches that the storage is not hit by the
    /// direct I/O memory lifetime bug (io/blkif.h), so the backend may bypass the page
    /// cache. As QEMU's qdisk does, we then do, where the store does direct I/O.
    public var directIOSafe: Bool = false

    /// Reads and checks the keys under the backend node.
    static func read(_ node: XenbusNodeReader) async throws(XenbusError) -> BlkbackToolstackKeys {
        let target = try await node.string("params")
        guard !target.isEmpty else {
            throw .invalidValue(path: node.path(of: "params"), value: "", expected: "the path of a file or block device")
        }
        let mode = try await node.optionalString("mode") ?? "w"
        guard mode == "r" || mode == "w" else {
            throw .invalidValue(path: node.path(of: "mode"), value: mode, expected: "r or w")
        }
        if let type = try await node.optionalString("type"), type != "file", type != "phy" {
            throw .invalidValue(path: node.path(of: "type"), value: type, expected: "file or phy")
        }
        let deviceType = try await node.optionalString("device-type") ?? "disk"
        let cdrom = deviceType == "cdrom"
        return BlkbackToolstackKeys(target: target, readOnly: mode == "r" || cdrom, cdrom: cdrom,
                                    removable: try await node.flag("removable"),
                                    discardEnabled: try await node.optionalUnsigned("discard-enable", max: UInt32(1)) != 0,
                                    directIOSafe: try await node.flag("direct-io-safe"))
    }
}

/// What a frontend asked for, read once and validated against what was advertised.
public struct BlkbackFrontendRequest: Sendable, Equatable {
    /// `protocol`, `ring-page-order`, `multi-queue-num-queues`, `feature-persistent`, ...
    public var features: BlkifFrontendFeatures
    /// Each queue's ring references and event channel.
    public var connection: BlkifConnectionKeys
}

/// The device layer of the block backend for one vbd: plugs into ``XenbusBackendDevice``
/// (which runs the xenbus states) and turns the negotiated keys into ``BlkbackQueue``s on
/// the daemon's workers.
///
/// The backing store is opened when features are first asked for (they depend on it:
/// discard, read-only) and kept across reconnects until ``release()``.
public final class BlkbackDevice: BackendDevice {
    public typealias Frontend = BlkbackFrontendRequest

    /// The backend node served.
    public let backendPath: String
    let platform: any Platform
    let store: XenStoreClient
    let limits: BlkbackDeviceLimits
    let placement: BackendPlacement
    let logger: Logger
    let state: Mutex<BlkbackDeviceState>
    /// Called (on a worker thread, once per queue) when a queue of the current connection
    /// stopped serving because the frontend broke the ring protocol, with what it did.
    let reportViolation: @Sendable (String) -> Void
    /// The lines this device's frontend can cause, rate-limited.
    public let guestLog: GuestLog
    /// Where each queue keeps its persistent state (Protocols/blkback-restart.md), or nil
    /// for none: a restart then attaches at rsp_prod.
    let restartDirectory: String?

    init(backendPath: String, platform: any Platform, store: XenStoreClient, limits: BlkbackDeviceLimits,
         placement: BackendPlacement, logger: Logger, guestLogPolicy: GuestLog.Policy = GuestLog.Policy(),
         restartDirectory: String? = nil, reportViolation: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backendPath = backendPath
        self.restartDirectory = restartDirectory
        self.reportViolation = reportViolation
        self.platform = platform
        self.store = store
        self.limits = limits
        self.placement = placement
        var logger = logger
        logger[metadataKey: "device"] = "\(backendPath)"
        self.logger = logger
        self.guestLog = GuestLog(logger: logger, policy: guestLogPolicy)
        self.state = Mutex(BlkbackDeviceState())
    }

    /// Whether queues are being served now.
    public var isConnected: Bool { state.withLock { !$0.queues.isEmpty } }

    /// The disk size in 512-byte sectors the queues check requests against.
    public var sectors512: UInt64? { state.withLock { $0.sectors512 } }

    // MARK: XenbusBackendHooks

    public func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        let backing = try await openBackingStore()
        var features = backing.store.backendFeatures()
        if !backing.keys.discardEnabled {
            features.discard = false
            features.discardSecure = false
            features.discardGranularity = nil
            features.discardAlignment = nil
        }
        features.persistent = limits.persistentGrants
        features.maxIndirectSegments = limits.maxIndirectSegments > 0 ? UInt32(limits.maxIndirectSegments) : nil
        features.maxQueues = limits.maxQueues
        features.maxRingPageOrder = limits.maxRingPageOrder
        state.withLock { $0.advertised = features }
        return XenbusKeys(features.xenstoreEntries)
    }

    public func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> BlkbackFrontendRequest {
        do {
            return try await readFrontendKeys(frontend)
        } catch {
            logger.error("blkback: refused frontend keys", metadata: ["frontend": "\(frontend.path)", "error": "\(error)"])
            throw error
        }
    }

    public func connect(_ frontend: BlkbackFrontendRequest, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        guard let backing = state.withLock({ $0.backing }) else {
            throw XenbusError.hookFailed(hook: "connect", reason: "no backing store is open for \(backendPath)")
        }
        let sectors = try backing.store.currentSectors()
        // A frontend already Connected when we connect was served by a previous process
        // (in a handshake it is Initialised until we are Connected): take its rings over.
        // Not the backend node's state, which a previous take-over killed part way may
        // have left at InitWait.
        let frontendState = restartDirectory == nil ? nil : try await XenbusNodeReader(store: store, path: paths.frontend).state()
        let takeOver = frontendState == .connected
        if takeOver { try await checkTakeOverLimits() }
        var connected: [BlkbackConnectedQueue] = []
        var recoveries: [BlkbackRecovery] = []
        do {
            for (index, keys) in frontend.connection.queues.enumerated() {
                let (queue, recovery) = try makeQueue(index: index, keys: keys, frontend: frontend, paths: paths,
                                                      backing: backing, takeOver: takeOver)
                connected.append(queue)
                if let recovery { recoveries.append(recovery) }
            }
        } catch {
            for queue in connected.reversed() { await release(queue, keepingState: takeOver) }
            throw error
        }
        if takeOver {
            let (taken, replayed) = recoveries.reduce((0, 0)) { ($0.0 + $1.tookOver, $0.1 + $1.replay.count) }
            logger.info("took over \(taken) requests, re-executed \(replayed)", metadata: [
                "queues": "\(connected.count)", "states": "\(recoveries.count)"])
            // Responses recovery published, and a look at the ring for the frontend: a
            // spurious event costs it one check.
            for queue in connected { try? queue.channel.notify(queue.queue.port) }
        }
        state.withLock {
            $0.queues = connected
            $0.sectors512 = sectors
        }
        logger.info("blkback: connected", metadata: [
            "queues": "\(connected.count)", "ring-pages": "\(1 << frontend.features.ringPageOrder)",
            "protocol": "\(frontend.features.abi.protocolName)", "sectors": "\(sectors)",
            "persistent-grants": "\(limits.persistentGrants && frontend.features.persistent)"])
        return XenbusKeys(properties(backing, sectors512: sectors).xenstoreEntries)
    }

    /// A frontend keeps sending what it negotiated: indirect requests of up to the
    /// `feature-max-indirect-segments` still published (an adopted connection's features
    /// are not rewritten), and the previous process recorded such requests for replay.
    /// A replacement allowing fewer would refuse them one by one as protocol violations,
    /// so it refuses the take-over instead, saying why (the device goes to Closing with
    /// the error node, and the frontend may start over at this process's limit).
    private func checkTakeOverLimits() async throws {
        let key = BlkifBackendFeatures.Key.maxIndirectSegments
        let published: UInt32 = try await XenbusNodeReader(store: store, path: backendPath).optionalUnsigned(key) ?? 0
        guard Int(published) <= limits.maxIndirectSegments else {
            throw XenbusError.hookFailed(hook: "connect", reason: "cannot take over \(backendPath): its frontend negotiated "
                + "\(key) \(published), this backend allows \(limits.maxIndirectSegments)")
        }
    }

    /// With a restart state a Connected device is taken over where the previous process
    /// left it (``connect(_:paths:)`` sees the frontend Connected), with no state change.
    public func adopts(paths: XenbusDevicePaths) async -> Bool { restartDirectory != nil }

    public func disconnect(paths: XenbusDevicePaths, reason: String) async {
        let queues = state.withLock { value -> [BlkbackConnectedQueue] in
            defer { value.queues = [] }
            return value.queues
        }
        for queue in queues { await release(queue) }
        logger.info("blkback: disconnected", metadata: ["reason": "\(reason)", "queues": "\(queues.count)"])
    }

    /// Whether `queue` belongs to the current connection.
    func serves(_ queue: BlkbackQueue) -> Bool {
        state.withLock { $0.queues.contains { $0.queue === queue } }
    }

    /// Closes the backing store; call once the driver stopped (every queue is gone).
    public func release() {
        let backing = state.withLock { value -> BlkbackBacking? in
            defer { value.backing = nil }
            return value.backing
        }
        backing?.store.close()
    }

    // MARK: Housekeeping

    /// Reports suppressed guest log lines, and publishes a grown (or shrunk) backing store:
    /// the workers learn the new size first, then `sectors` is rewritten with the state
    /// (as Linux's `xen_vbd_resize` does, so a frontend watching the state notices).
    public func housekeeping(store: XenStoreClient) async {
        guestLog.flush()
        do {
            guard let change = try checkResize() else { return }
            let path = backendPath
            try await store.withTransaction { tx in
                guard try await tx.readString(path + "/state") == "4" else { return }
                try await tx.write(path + "/sectors", String(change.properties.sectors512))
                try await tx.write(path + "/state", "4")
            }
            logger.info("blkback: resized", metadata: ["sectors": "\(change.properties.sectors512)"])
        } catch {
            logger.error("blkback: resize check failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Resize

    /// Reads the backing store's size; if it grew, tells every queue's worker and returns
    /// the new size and the properties to publish. Nil when nothing changed.
    func checkResize() throws(BlockBackendError) -> (sectors512: UInt64, properties: BlkifDiskProperties)? {
        guard let (backing, queues, known) = state.withLock({ s -> (BlkbackBacking, [BlkbackConnectedQueue], UInt64)? in
            guard let backing = s.backing, !s.queues.isEmpty, let known = s.sectors512 else { return nil }
            return (backing, s.queues, known)
        }) else { return nil }
        let now = try backing.store.currentSectors()
        guard now != known else { return nil }
        // Shrinking under a live frontend would fail its requests past the new end; Linux
        // blkback reports it the same way, so the frontend learns the size either way.
        for queue in queues {
            do { try queue.worker.perform(on: queue.queue) { $0.diskSectors = now } } catch { throw .worker(error) }
        }
        state.withLock { $0.sectors512 = now }
        return (now, properties(backing, sectors512: now))
    }

    // MARK: Internals

    private func properties(_ backing: BlkbackBacking, sectors512: UInt64) -> BlkifDiskProperties {
        var properties = backing.store.diskProperties(sectors512: sectors512)
        if backing.keys.readOnly { properties.info.insert(.readOnly) }
        if backing.keys.cdrom { properties.info.insert(.cdrom) }
        if backing.keys.removable { properties.info.insert(.removable) }
        return properties
    }

    private func openBackingStore() async throws -> BlkbackBacking {
        if let backing = state.withLock({ $0.backing }) { return backing }
        let keys = try await BlkbackToolstackKeys.read(XenbusNodeReader(store: store, path: backendPath))
        let opened = try FileBackingStore(path: keys.target, readOnly: keys.readOnly, direct: keys.directIOSafe)
        let backing = BlkbackBacking(store: opened, keys: keys)
        let directIO = opened.direct ? "on" : opened.directUnavailable.map { "off: \($0)" } ?? "off"
        logger.info("blkback: backing store opened", metadata: [
            "params": "\(keys.target)", "read-only": "\(keys.readOnly)", "direct-io": "\(directIO)",
            "sector-size": "\(opened.logicalSectorSize)"])
        state.withLock { $0.backing = backing }
        return backing
    }

    private func readFrontendKeys(_ node: XenbusNodeReader) async throws(XenbusError) -> BlkbackFrontendRequest {
        guard let advertised = state.withLock({ $0.advertised }) else {
            throw .hookFailed(hook: "readFrontend", reason: "no features were advertised")
        }
        typealias Key = BlkifFrontendFeatures.Key
        let features: BlkifFrontendFeatures
        do {
            features = try BlkifFrontendFeatures(xenstore: try await node.entries([
                Key.protocolName, Key.persistent, Key.largeSectorSize, Key.queueCount, Key.ringPageOrder, Key.trusted]))
        } catch {
            throw Self.xenbusError(error, node)
        }
        guard features.ringPageOrder <= advertised.maxRingPageOrder else {
            throw .invalidValue(path: node.path(of: Key.ringPageOrder), value: String(features.ringPageOrder),
                                expected: "a decimal from 0 to \(advertised.maxRingPageOrder)")
        }
        let maxQueues = advertised.maxQueues ?? 1
        if let queues = features.queueCount, queues > maxQueues {
            throw .invalidValue(path: node.path(of: Key.queueCount), value: String(queues),
                                expected: "a decimal from 1 to \(maxQueues)")
        }
        let queueCount = Int(features.queueCount ?? 1)
        let keys = BlkifConnectionKeys.keys(ringPageOrder: features.ringPageOrder, queueCount: queueCount)
        do {
            let connection = try BlkifConnectionKeys(xenstore: try await node.entries(keys),
                                                     ringPageOrder: features.ringPageOrder, queueCount: queueCount)
            return BlkbackFrontendRequest(features: features, connection: connection)
        } catch {
            throw Self.xenbusError(error, node)
        }
    }


    /// A Blkif parse error as the xenbus error naming the node's full path.
    private static func xenbusError(_ error: any Error, _ node: XenbusNodeReader) -> XenbusError {
        switch error {
        case let error as XenbusError:
            return error
        case let BlkifError.missingKey(key):
            return .missingKey(path: node.path(of: key))
        case let BlkifError.featureValue(key, value, expected):
            return .invalidValue(path: node.path(of: key), value: value, expected: expected)
        case let BlkifError.featureRange(key, value, limit):
            return .invalidValue(path: node.path(of: key), value: String(value),
                                 expected: "a decimal from \(limit.lowerBound) to \(limit.upperBound)")
        case let BlkifError.unknownABI(name):
            return .invalidValue(path: node.path(of: BlkifFrontendFeatures.Key.protocolName), value: name,
                                 expected: BlkifABI.protocolNames.joined(separator: ", "))
        default:
            return .hookFailed(hook: "readFrontend", reason: "\(error)")
        }
    }

    /// Binds the frontend's port. Taking over, the port may still read bound for a moment
    /// (the hypervisor has not yet seen the previous process's connection end), so an
    /// EINVAL is retried for up to five seconds.
    static func bind(_ channel: any EventChannel, _ remote: DomainID, _ remotePort: EventPort,
                     retrying: Bool) throws(PlatformError) -> EventPort {
        var attempts = retrying ? 1000 : 1
        while true {
            do {
                return try channel.bindInterdomain(remote: remote, remotePort: remotePort)
            } catch {
                attempts -= 1
                guard attempts > 0, case let .eventChannel(_, code) = error, code == EINVAL else { throw error }
                usleep(5000)
            }
        }
    }

    /// Stops every queue taking requests and waits (up to `limit`) until none has one in
    /// flight and every response is pushed: what a process handing its devices over does
    /// before it exits. Whatever is still in flight after the limit is in the restart
    /// state, and the next process re-executes it. Returns the requests left in flight.
    public func quiesce(limit: Duration = .seconds(10)) async -> Int {
        let queues = state.withLock { $0.queues }
        for connected in queues {
            try? await connected.worker.perform(on: connected.queue) { $0.takesRequests = false }
        }
        let deadline = ContinuousClock.now + limit
        while true {
            let busy = Mutex(0)
            for connected in queues {
                try? await connected.worker.perform(on: connected.queue) { queue in
                    queue.pushResponses()
                    let inFlight = queue.inFlight
                    busy.withLock { $0 += inFlight }
                }
            }
            let left = busy.withLock { $0 }
            if left == 0 || ContinuousClock.now >= deadline { return left }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// The state file of queue `index` of this device.
    static func restartStatePath(_ directory: String, paths: XenbusDevicePaths, queue index: Int) -> String {
        directory + "/vbd-\(paths.frontendID)-\(paths.devid)-\(index).state"
    }

    /// The queue's persistent state, and where its ring resumes: recovered from the file
    /// a previous process left when taking over (an unusable one refuses the device; none
    /// at all attaches at rsp_prod, as a backend without state does), else a new file.
    private func restartState(index: Int, keys: BlkifConnectionKeys.Queue, frontend: BlkbackFrontendRequest,
                              paths: XenbusDevicePaths, shared: SharedRing,
                              takeOver: Bool) throws -> (BlkbackRestartState, BackRing, BlkbackRecovery?)? {
        var ring = BackRing(attaching: shared, at: shared.loadResponseProducer())
        guard let directory = restartDirectory else { return nil }
        guard keys.ringRefs.count <= BlkbackRestartState.maxRingRefs else {
            logger.warning("blkback: ring too large for a restart state; this queue cannot be taken over",
                           metadata: ["ring-pages": "\(keys.ringRefs.count)"])
            return nil
        }
        let path = Self.restartStatePath(directory, paths: paths, queue: index)
        let identity = BlkbackRestartState.Identity(
            frontendDomain: paths.frontendID, abi: frontend.features.abi, ringPageOrder: UInt8(frontend.features.ringPageOrder),
            eventChannel: keys.eventChannel, ringRefs: keys.ringRefs)
        if takeOver {
            do throws(BlkbackRestartError) {
                let state = try BlkbackRestartState.open(path: path, identity: identity, ringSize: shared.size)
                let recovery = try state.recover(ring: shared)
                ring = BackRing(attaching: shared, at: recovery.answered)
                ring.requestConsumer = recovery.consumed
                return (state, ring, recovery)
            } catch {
                guard case let .file(_, call, code) = error, call == "open", code == ENOENT else {
                    throw BlockBackendError.restartState(error)
                }
                logger.warning("blkback: taking over with no restart state: resuming at rsp_prod",
                               metadata: ["state": "\(path)"])
            }
        }
        let state = try BlkbackRestartState.create(path: path, identity: identity, ringSize: shared.size,
                                                   at: ring.responseProducerPrivate)
        return (state, ring, nil)
    }

    private func makeQueue(index: Int, keys: BlkifConnectionKeys.Queue, frontend: BlkbackFrontendRequest,
                           paths: XenbusDevicePaths, backing: BlkbackBacking,
                           takeOver: Bool) throws -> (BlkbackConnectedQueue, BlkbackRecovery?) {
        let abi = frontend.features.abi
        let mapper = platform.grantMapper
        let mapping = try mapper.map(keys.ringRefs, from: paths.frontendID, writable: true)
        let channel: any EventChannel
        let port: EventPort
        do {
            let shared = try SharedRing(memory: mapping.view, pages: keys.ringRefs.count, entrySize: abi.slotSize)
            channel = try platform.openEventChannel()
            do {
                port = try Self.bind(channel, paths.frontendID, keys.eventChannel, retrying: takeOver)
            } catch {
                channel.close()
                throw error
            }
            // A ring a frontend kept across our restart carries on where the previous
            // process's persistent state says; without one, where responses stopped
            // (requests after rsp_prod are taken again, right only for in-order answers).
            let restart: (state: BlkbackRestartState, ring: BackRing, recovery: BlkbackRecovery?)?
            do {
                restart = try restartState(index: index, keys: keys, frontend: frontend, paths: paths, shared: shared,
                                           takeOver: takeOver)
            } catch {
                channel.close()
                throw error
            }
            let ring = restart?.ring ?? BackRing(attaching: shared, at: shared.loadResponseProducer())
            let configuration = BlkbackQueueConfiguration(abi: abi, maxIndirectSegments: limits.maxIndirectSegments,
                                                          slots: limits.slots, readOnly: backing.keys.readOnly,
                                                          discard: backing.keys.discardEnabled,
                                                          persistentGrants: limits.persistentGrants && frontend.features.persistent,
                                                          persistentGrantsPerQueue: limits.persistentGrantsPerQueue)
            let name = frontend.connection.queues.count > 1 ? "\(backendPath)/\(BlkifConnectionKeys.Key.queue(index))" : backendPath
            let queue: BlkbackQueue
            do {
                queue = try BlkbackQueue(name: name, ring: ring, frontendDomain: paths.frontendID, eventChannel: channel,
                                         port: port, mapper: mapper, store: backing.store,
                                         configuration: configuration, logger: logger, guestLog: guestLog,
                                         restart: restart?.state, replay: restart?.recovery?.replay ?? [])
            } catch {
                channel.close()
                throw error
            }
            let worker = placement.take()
            do {
                try worker.addQueue(queue) { [weak self, weak queue] in
                    // On the worker's thread, so the queue's state is ours to read. A
                    // report from a connection already torn down changes nothing. The
                    // queue logged it already (blkback queue disconnected).
                    guard let self, let queue, let reason = queue.disconnectReason, self.serves(queue) else { return }
                    // The error node names the device already: name the queue only if several.
                    self.reportViolation(frontend.connection.queues.count > 1 ? "\(BlkifConnectionKeys.Key.queue(index)): \(reason)" : "\(reason)")
                }
            } catch {
                placement.give(worker)
                try? queue.close()
                channel.close()
                throw error
            }
            return (BlkbackConnectedQueue(queue: queue, worker: worker, mapping: mapping, channel: channel),
                    restart?.recovery)
        } catch {
            try? mapper.unmap(mapping)
            throw error
        }
    }

    /// Removes a queue; its state file goes too (nothing is owed any more), unless
    /// `keepingState` (a take-over that failed part way: the file is still the only
    /// record of what the frontend is owed).
    private func release(_ connected: BlkbackConnectedQueue, keepingState: Bool = false) async {
        // Waits for the queue's in-flight I/O: its copy buffers and ring stay ours until then.
        do {
            try await connected.worker.removeQueue(connected.queue)
        } catch {
            logger.error("blkback: removing a queue from its worker failed", metadata: ["error": "\(error)"])
        }
        placement.give(connected.worker)
        // Removed from its worker, the queue's figures are ours to read.
        logger.info("blkback: queue statistics", metadata: [
            "queue": "\(connected.queue.name)", "statistics": "\(connected.queue.statistics)"])
        try? connected.queue.close()
        if !keepingState { connected.queue.restart?.remove() }
        connected.channel.close()
        do {
            try platform.grantMapper.unmap(connected.mapping)
        } catch {
            logger.error("blkback: unmapping a ring failed", metadata: ["error": "\(error)"])
        }
    }

}

/// The open backing store and the toolstack keys it was opened from.
struct BlkbackBacking: Sendable {
    let store: FileBackingStore
    let keys: BlkbackToolstackKeys
}

/// A queue being served, with what it holds.
struct BlkbackConnectedQueue: @unchecked Sendable {
    // SAFETY (@unchecked): the queue itself belongs to its worker; the device keeps only
    // the reference it needs to remove it.
    let queue: BlkbackQueue
    let worker: BackendWorker
    let mapping: GrantMapping
    let channel: any EventChannel
}

/// The device's mutable state, behind its mutex.
struct BlkbackDeviceState: Sendable {
    var backing: BlkbackBacking?
    var advertised: BlkifBackendFeatures?
    var queues: [BlkbackConnectedQueue] = []
    var sectors512: UInt64?
}
