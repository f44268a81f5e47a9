import Blkif
import Logging
import SharedMemory
import Synchronization
import XenBus
import XenPlatform
import XenStore

/// A minimal blkif frontend (`io/blkif.h`) for driving a block backend from tests and
/// benchmarks, on XenBus's frontend driver: it grants one ring per queue and, per request
/// slot, data pages (and, for indirect requests, a table of segments that never changes)
/// once for its life, publishes the keys, and once Connected hands out the connection's
/// ``Rings``, on which one thread writes reads and writes, pushes, reaps responses and
/// sleeps on the event channel. No tasks, locks or copies per request: what the backend
/// costs is what a benchmark measures. It is not the BlockFrontend library (which splits,
/// retries and copies for its callers), and it trusts nothing the backend answers.
///
/// A test that must lie on the wire keys it with ``Configuration/tamper`` or breaks a
/// ring through ``Rings/ring(_:)``; one that must skip xenbus altogether keeps raw access.
public final class BlkifRingDriver: Sendable {
    /// What the frontend asks for, written as given (a test may ask for more than the
    /// backend offers, to see it refused).
    public struct Configuration: Sendable {
        /// Rings (`multi-queue-num-queues` when more than one).
        public var queues: Int
        /// Request slots, each with its own data pages; at most the rings' total size.
        public var depth: Int
        /// `ring-page-order` (written when more than 0; at most 4 pages are granted).
        public var ringPageOrder: UInt32
        /// Segments per indirect request (`BLKIF_OP_INDIRECT`); 0 sends direct requests
        /// only. Each slot has this many data pages, or 11 (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
        public var indirectSegments: Int
        /// `feature-persistent` as written; nil writes no key, as a frontend older than it.
        public var persistent: Bool?
        /// The ring layout, published as `protocol`.
        public var abi: BlkifABI
        /// Applied to the keys before they are published (hostile frontends).
        public var tamper: @Sendable (inout XenbusKeys) -> Void

        public init(queues: Int = 1, depth: Int = 1, ringPageOrder: UInt32 = 0, indirectSegments: Int = 0,
                    persistent: Bool? = nil, abi: BlkifABI = .native,
                    tamper: @escaping @Sendable (inout XenbusKeys) -> Void = { _ in }) {
            self.queues = queues
            self.depth = depth
            self.ringPageOrder = ringPageOrder
            self.indirectSegments = indirectSegments
            self.persistent = persistent
            self.abi = abi
            self.tamper = tamper
        }

        /// Data pages per slot.
        var slotPages: Int { indirectSegments > 0 ? indirectSegments : BlkifSegments.capacity }
    }

    /// The frontend node, `/local/domain/<domid>/device/vbd/<devid>`.
    public let frontendPath: String
    public let configuration: Configuration
    let core: Core
    let device: XenbusFrontendDevice<Hooks>
    let store: XenStoreClient
    /// `store` was closed (by ``dropXenStore()`` or ``close(grantWaitSeconds:)``).
    let storeClosed = Atomic<Bool>(false)

    /// Starts the frontend of the vbd at `frontendPath` over `platform` (acting as its
    /// domain); it runs the handshake as the backend goes along.
    public init(platform: any Platform, frontendPath: String, configuration: Configuration = Configuration(),
                logger: Logger = Logger(label: "xensplit.blkif-ring-driver")) throws(XenTestingError) {
        guard configuration.queues >= 1, configuration.depth >= 1,
              (0...BlkifIndirectPage.maxSegments).contains(configuration.indirectSegments) else {
            throw .configuration("queues \(configuration.queues) and depth \(configuration.depth) must be at least 1, "
                                 + "indirect segments \(configuration.indirectSegments) within 0...\(BlkifIndirectPage.maxSegments)")
        }
        self.frontendPath = frontendPath
        self.configuration = configuration
        core = Core(platform: platform, configuration: configuration)
        do { store = try platform.connectXenStore() } catch { throw .platform(error) }
        device = XenbusFrontendDevice(store: store, frontend: frontendPath, hooks: Hooks(core: core), logger: logger)
    }

    /// The xenbus state the frontend last wrote.
    public var state: XenbusState { device.state }

    /// Closes the xenstore connection the xenbus driver runs on, without a word: the
    /// frontend goes away as a guest's driver instance does when it vanishes.
    public func dropXenStore() {
        if !storeClosed.exchange(true, ordering: .acquiringAndReleasing) { store.close() }
    }

    /// Waits until the xenbus driver stopped (closed, or its node went); how it ended.
    public func stopped() async -> XenbusStopReason { await device.stopped() }

    /// Handshakes that reached Connected.
    public var connects: Int { core.state.withLock { $0.connects } }

    /// Connections undone (the backend went away, or close).
    public var disconnects: Int { core.state.withLock { $0.disconnects } }

    /// Every node the backend had published when it last connected this frontend.
    public var backendKeys: [String: String] { core.state.withLock { $0.backendKeys } }

    /// The disk size the backend last published, in 512-byte sectors.
    public var sectors: UInt64 { core.state.withLock { $0.sectors } }

    /// The data pages of every slot, in slot order (granted at the first handshake).
    public var dataPages: [SharedPages] { core.state.withLock { $0.slots?.data ?? [] } }

    /// Waits until the backend connected this frontend (at once if it is connected) and
    /// returns the connection's rings; fails with why the handshake failed, or after
    /// `timeout`.
    public func connected(timeout: Duration = .seconds(20)) async throws(XenTestingError) -> Rings {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (rings, failure) = core.state.withLock { ($0.connected, $0.failure) }
            if let rings { return rings }
            if let failure { throw .handshake(frontend: frontendPath, reason: failure) }
            guard ContinuousClock.now < deadline else { throw .notConnected(frontend: frontendPath, waited: timeout) }
            do { try await Task.sleep(for: .milliseconds(5)) } catch { throw .notConnected(frontend: frontendPath, waited: timeout) }
        }
    }

    /// The rings of the current connection, if connected.
    public var rings: Rings? { core.state.withLock { $0.connected } }

    /// One read or write through slot 0 on `queue`, waited for (on this thread); the
    /// data is slot 0's pages from their start. Returns the backend's status.
    public func transfer(_ operation: BlkifDirectOperation, sector: UInt64, sectors: Int,
                         queue: Int = 0) throws(XenTestingError) -> BlkifStatus {
        guard let rings else { throw .notConnected(frontend: frontendPath, waited: .zero) }
        return try rings.transfer(operation, slot: 0, sector: sector, sectors: sectors, queue: queue)
    }

    /// Writes `bytes` (whole sectors, at most a slot's pages) at `sector` through `queue`;
    /// returns the backend's status.
    public func write(_ bytes: [UInt8], sector: UInt64, queue: Int = 0) throws(XenTestingError) -> BlkifStatus {
        guard let rings else { throw .notConnected(frontend: frontendPath, waited: .zero) }
        try rings.checkLength(bytes.count)
        bytes.withUnsafeBytes { rings.data(slot: 0).copyBytes(from: $0, to: 0) }
        return try rings.transfer(.write, slot: 0, sector: sector, sectors: bytes.count / 512, queue: queue)
    }

    /// Reads `count` bytes (whole sectors) at `sector` through `queue`; the status, and
    /// the bytes (zeroes where the backend wrote nothing).
    public func read(sector: UInt64, count: Int, queue: Int = 0) throws(XenTestingError) -> (BlkifStatus, [UInt8]) {
        guard let rings else { throw .notConnected(frontend: frontendPath, waited: .zero) }
        try rings.checkLength(count)
        let view = rings.data(slot: 0)
        view.fill(0, at: 0, length: count)
        let status = try rings.transfer(.read, slot: 0, sector: sector, sectors: count / 512, queue: queue)
        return (status, view.bytes(at: 0, length: count))
    }

    /// Ends access to the slots' data pages still granted; true when none is left. What a
    /// test asks to learn whether the backend keeps them mapped (persistent grants):
    /// ending access fails while they are. The slots carry no request afterwards.
    public func endDataAccess() -> Bool {
        core.state.withLock { s in
            guard var slots = s.slots else { return true }
            slots.data = slots.data.filter { (try? core.platform.grantTable.endAccess($0)) == nil }
            s.slots = slots
            return slots.data.isEmpty
        }
    }

    /// Tries again to end access to rings the backend still mapped when their connection
    /// ended; true when none is left.
    public func endPinnedAccess() -> Bool {
        let pinned = core.state.withLock { s in
            defer { s.pinned = [] }
            return s.pinned
        }
        let still = pinned.filter { (try? core.platform.grantTable.endAccess($0)) == nil }
        return core.state.withLock { s in
            s.pinned += still
            return s.pinned.isEmpty
        }
    }

    /// Closes the device (Closing, Closed) and its connection, and ends access to every
    /// page, retrying for up to `grantWaitSeconds` while the backend still maps some.
    /// Returns how many page sets are still granted.
    @discardableResult
    public func close(grantWaitSeconds: Int = 5) async -> Int {
        await device.close()
        dropXenStore()
        var pending = core.state.withLock { s in
            defer { s.pinned = []; s.slots = nil }
            return s.pinned + (s.slots.map { $0.data + $0.indirect } ?? [])
        }
        for _ in 0 ..< grantWaitSeconds * 100 where !pending.isEmpty {
            pending = pending.filter { (try? core.platform.grantTable.endAccess($0)) == nil }
            if !pending.isEmpty { try? await Task.sleep(for: .milliseconds(10)) }
        }
        return pending.count
    }
}

extension BlkifRingDriver {
    /// The slots' pages, granted once for the driver's life.
    struct Slots: Sendable {
        var data: [SharedPages] = []
        var indirect: [SharedPages] = []
        var indirectGrefs: [BlkifIndirectGrefs] = []
    }

    /// What the driver and its xenbus hooks share.
    final class Core: Sendable {
        struct State {
            var slots: Slots?
            /// Set up by initialise, not yet connected.
            var prepared: Rings?
            var connected: Rings?
            var connects = 0
            var disconnects = 0
            var backendKeys: [String: String] = [:]
            var sectors: UInt64 = 0
            /// Ring pages the backend still mapped when their connection ended.
            var pinned: [SharedPages] = []
            /// Why the last handshake failed.
            var failure: String?
        }

        let platform: any Platform
        let configuration: Configuration
        let state = Mutex(State())

        init(platform: any Platform, configuration: Configuration) {
            self.platform = platform
            self.configuration = configuration
        }

        /// The slots' pages, granted to `backend` on the first call.
        func slots(for backend: DomainID) throws(XenTestingError) -> Slots {
            if let slots = state.withLock({ $0.slots }) { return slots }
            var slots = Slots()
            let grants = platform.grantTable
            let tablePages = BlkifIndirectPage.pageCount(forSegments: max(configuration.indirectSegments, 1))
            do throws(XenTestingError) {
                for _ in 0 ..< configuration.depth {
                    let data: SharedPages
                    do { data = try grants.share(pages: configuration.slotPages, with: backend, writable: true) } catch {
                        throw .platform(error)
                    }
                    slots.data.append(data)
                    guard configuration.indirectSegments > 0 else { continue }
                    // Read-only: the segments never change, whole pages each.
                    let table: SharedPages
                    do { table = try grants.share(pages: tablePages, with: backend, writable: false) } catch {
                        throw .platform(error)
                    }
                    slots.indirect.append(table)
                    for index in 0 ..< configuration.indirectSegments {
                        let location = BlkifIndirectPage.location(ofSegment: index)
                        let page: SharedView
                        do { page = try table.view.slice(offset: location.page * pageSize, length: pageSize) } catch {
                            throw .configuration("indirect page \(location.page) of \(tablePages): \(error)")
                        }
                        BlkifIndirectPage.encodeSegment(BlkifSegment(gref: data.refs[index], firstSector: 0, lastSector: 7),
                                                        index: index, into: page)
                    }
                    do { slots.indirectGrefs.append(try BlkifIndirectGrefs(table.refs)) } catch {
                        throw .configuration("indirect table of \(table.refs.count) pages: \(error)")
                    }
                }
            } catch {
                for pages in slots.data + slots.indirect { try? grants.endAccess(pages) }
                throw error
            }
            state.withLock { $0.slots = slots }
            return slots
        }

        /// Undoes the connection set up by the last initialise.
        func disconnect() {
            let (prepared, connected) = state.withLock { s in
                defer { s.prepared = nil; s.connected = nil; s.disconnects += 1 }
                return (s.prepared, s.connected)
            }
            // At most one is set: connect moves the prepared rings to connected.
            for rings in [prepared, connected].compactMap({ $0 }) {
                let busy = rings.release()
                state.withLock { $0.pinned += busy }
            }
        }
    }

    /// The blkif steps of the xenbus handshake.
    struct Hooks: XenbusFrontendHooks {
        let core: Core

        func readBackend(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> BlkifBackendFeatures {
            typealias Key = BlkifBackendFeatures.Key
            var entries: [String: String] = [:]
            for key in [Key.maxRingPageOrder, Key.maxQueues, Key.maxIndirectSegments, Key.flushCache, Key.discard,
                        Key.persistent] {
                if let value = try await backend.optionalString(key) { entries[key] = value }
            }
            return try BlkifBackendFeatures(xenstore: entries)
        }

        func initialise(_ backend: BlkifBackendFeatures, paths: XenbusDevicePaths) async throws -> XenbusKeys {
            let configuration = core.configuration
            do throws(XenTestingError) {
                // io/blkif.h: a frontend uses at most what the backend offers of these.
                guard Int(backend.maxQueues ?? 1) >= configuration.queues || configuration.queues == 1 else {
                    throw .backendLacks(feature: BlkifBackendFeatures.Key.maxQueues, offered: Int(backend.maxQueues ?? 1),
                                        needed: configuration.queues)
                }
                guard Int(backend.maxIndirectSegments ?? 0) >= configuration.indirectSegments else {
                    throw .backendLacks(feature: BlkifBackendFeatures.Key.maxIndirectSegments,
                                        offered: Int(backend.maxIndirectSegments ?? 0),
                                        needed: configuration.indirectSegments)
                }
                let rings = try Rings(platform: core.platform, backend: paths.backendID, configuration: configuration,
                                      slots: try core.slots(for: paths.backendID))
                var keys = XenbusKeys()
                keys.set(BlkifFrontendFeatures.Key.protocolName, configuration.abi.protocolName)
                if configuration.ringPageOrder > 0 {
                    keys.set(BlkifFrontendFeatures.Key.ringPageOrder, String(configuration.ringPageOrder))
                }
                if configuration.queues > 1 { keys.set(BlkifFrontendFeatures.Key.queueCount, String(configuration.queues)) }
                if let persistent = configuration.persistent {
                    keys.set(BlkifFrontendFeatures.Key.persistent, persistent ? "1" : "0")
                }
                let connection = BlkifConnectionKeys(ringPageOrder: configuration.ringPageOrder, queues: rings.rings.map {
                    BlkifConnectionKeys.Queue(ringRefs: $0.pages.refs, eventChannel: $0.port)
                })
                for (key, value) in connection.xenstoreEntries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
                configuration.tamper(&keys)
                core.state.withLock { $0.prepared = rings }
                return keys
            } catch {
                core.state.withLock { $0.failure = error.description }
                throw error
            }
        }

        func connect(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws {
            var entries: [String: String] = [:]
            let store = try core.platform.connectXenStore()
            defer { store.close() }
            for key in try await store.directory(paths.backend) {
                entries[key] = try await store.readString(paths.backend + "/" + key)
            }
            typealias Key = BlkifDiskProperties.Key
            // Kept even when malformed: a test may look at what the backend wrote.
            let sectors = (try? BlkifDiskProperties(xenstore: entries.filter {
                [Key.sectors, Key.sectorSize, Key.info].contains($0.key)
            }))?.sectors512 ?? 0
            core.state.withLock { s in
                s.backendKeys = entries
                s.sectors = sectors
                s.connected = s.prepared
                s.prepared = nil
                s.connects += 1
            }
        }

        func disconnect(paths: XenbusDevicePaths, reason: String) async {
            core.disconnect()
        }
    }
}
