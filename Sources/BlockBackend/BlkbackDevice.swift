import Blkif
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

    init(backendPath: String, platform: any Platform, store: XenStoreClient, limits: BlkbackDeviceLimits,
         placement: BackendPlacement, logger: Logger, guestLogPolicy: GuestLog.Policy = GuestLog.Policy(),
         reportViolation: @escaping @Sendable (String) -> Void = { _ in }) {
        self.backendPath = backendPath
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
        var connected: [BlkbackConnectedQueue] = []
        do {
            for (index, keys) in frontend.connection.queues.enumerated() {
                connected.append(try makeQueue(index: index, keys: keys, frontend: frontend, paths: paths,
                                               backing: backing))
            }
        } catch {
            for queue in connected.reversed() { await release(queue) }
            throw error
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

    private func makeQueue(index: Int, keys: BlkifConnectionKeys.Queue, frontend: BlkbackFrontendRequest,
                           paths: XenbusDevicePaths, backing: BlkbackBacking) throws -> BlkbackConnectedQueue {
        let abi = frontend.features.abi
        let mapper = platform.grantMapper
        let mapping = try mapper.map(keys.ringRefs, from: paths.frontendID, writable: true)
        let channel: any EventChannel
        let port: EventPort
        do {
            let shared = try SharedRing(memory: mapping.view, pages: keys.ringRefs.count, entrySize: abi.slotSize)
            channel = try platform.openEventChannel()
            do {
                port = try channel.bindInterdomain(remote: paths.frontendID, remotePort: keys.eventChannel)
            } catch {
                channel.close()
                throw error
            }
            // A ring a frontend kept across our restart carries on where responses stopped:
            // requests after rsp_prod were never answered and are taken again.
            let ring = BackRing(attaching: shared, at: shared.loadResponseProducer())
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
                                         configuration: configuration, logger: logger, guestLog: guestLog)
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
            return BlkbackConnectedQueue(queue: queue, worker: worker, mapping: mapping, channel: channel)
        } catch {
            try? mapper.unmap(mapping)
            throw error
        }
    }

    private func release(_ connected: BlkbackConnectedQueue) async {
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
