import Blkif
import BlockBackend
import Glibc
import Logging
import Synchronization
import Testing
import URing
import XenBus
import XenDevice
import XenPlatform
import XenRing
import XenStore
import XenTesting
@testable import BlockFrontend

/// Quiet unless something goes wrong.
let testLogger: Logger = {
    var logger = Logger(label: "blkfront-tests")
    logger.logLevel = .error
    return logger
}()

struct Errno: Error { let code: Int32 }

/// What the test backend offers and how its queues are limited.
struct TestBackendOptions: Sendable {
    var maxRingPageOrder: UInt32 = 2
    var maxQueues: UInt32 = 2
    var maxIndirectSegments = 32
    /// Honour BLKIF_OP_DISCARD (feature-discard is advertised either way, so a refusal
    /// comes back as BLKIF_RSP_EOPNOTSUPP).
    var discard = true
    /// Advertise `feature-flush-cache` (else only `feature-barrier`, or neither).
    var flushCache = true
    /// Advertise `feature-barrier`.
    var barrier = true
    /// Publish this `sectors` instead of the disk's (a lying backend).
    var sectorsOverride: String? = nil
}

/// A minimal blkback device layer for the tests: the real request engine (BlkbackQueue
/// on a BackendWorker over a file) behind XenbusBackendDevice hooks that read the
/// frontend's ring keys, map its rings and bind its ports.
final class TestBlockBackend: XenbusBackendHooks {
    struct Queue: Sendable {
        var refs: [GrantRef]
        var port: EventPort
    }
    struct Frontend: Sendable {
        var abi: BlkifABI
        var order: UInt32
        var queues: [Queue]
    }
    /// What one connect set up, undone by disconnect.
    struct Served: @unchecked Sendable {
        // SAFETY (@unchecked): the queue belongs to the worker between add and remove.
        let queue: BlkbackQueue
        let mapping: GrantMapping
        let channel: any EventChannel
    }

    let platform: InProcessPlatform
    let worker: BackendWorker
    let store: FileBackingStore
    let options: TestBackendOptions
    let served = Mutex<[Served]>([])
    let connects = Mutex(0)
    /// False: connect maps nothing and serves nothing (a backend that hangs), so every
    /// request stays unanswered in the ring.
    let serving: Bool

    init(platform: InProcessPlatform, worker: BackendWorker, store: FileBackingStore, options: TestBackendOptions,
         serving: Bool = true) {
        self.serving = serving
        self.platform = platform
        self.worker = worker
        self.store = store
        self.options = options
    }

    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        var base = BlkifBackendFeatures()
        base.maxRingPageOrder = options.maxRingPageOrder
        base.maxQueues = options.maxQueues
        base.maxIndirectSegments = options.maxIndirectSegments > 0 ? UInt32(options.maxIndirectSegments) : nil
        var offered = store.backendFeatures(base)
        offered.flushCache = offered.flushCache && options.flushCache
        offered.barrier = offered.barrier && options.barrier
        var keys = XenbusKeys()
        for (key, value) in offered.xenstoreEntries.sorted(by: { $0.key < $1.key }) {
            keys.set(key, value)
        }
        if let lie = options.sectorsOverride { keys.set("sectors", lie) }
        return keys
    }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Frontend {
        let abi = try BlkifABI(protocol: try await frontend.optionalString("protocol"))
        let order: UInt32 = try await frontend.optionalUnsigned("ring-page-order", max: options.maxRingPageOrder) ?? 0
        let count: UInt32? = try await frontend.optionalUnsigned("multi-queue-num-queues", max: options.maxQueues)
        var queues: [Queue] = []
        for q in 0 ..< Int(count ?? 1) {
            let prefix = count == nil ? "" : "queue-\(q)/"
            var refs: [GrantRef] = []
            if order == 0 {
                refs.append(try await frontend.unsigned(prefix + "ring-ref"))
            } else {
                for i in 0 ..< (1 << order) { refs.append(try await frontend.unsigned(prefix + "ring-ref\(i)")) }
            }
            queues.append(Queue(refs: refs, port: try await frontend.unsigned(prefix + "event-channel")))
        }
        return Frontend(abi: abi, order: order, queues: queues)
    }

    func connect(_ frontend: Frontend, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        connects.withLock { $0 += 1 }
        do {
            for (q, queue) in frontend.queues.enumerated() where serving {
                let mapping = try platform.map(queue.refs, from: paths.frontendID, writable: true)
                let ring = BackRing(try SharedRing(memory: mapping.view, pages: queue.refs.count,
                                                   entrySize: frontend.abi.slotSize))
                let channel = try platform.openEventChannel()
                let port = try channel.bindInterdomain(remote: paths.frontendID, remotePort: queue.port)
                let configuration = BlkbackQueueConfiguration(abi: frontend.abi, maxIndirectSegments: options.maxIndirectSegments,
                                                              slots: 32, discard: options.discard)
                let blkQueue = try BlkbackQueue(name: "\(paths.backend)/q\(q)", ring: ring, frontendDomain: paths.frontendID,
                                                eventChannel: channel, port: port, mapper: platform, store: store,
                                                configuration: configuration, logger: testLogger)
                try worker.addQueue(blkQueue)
                served.withLock { $0.append(Served(queue: blkQueue, mapping: mapping, channel: channel)) }
            }
        } catch {
            await disconnect(paths: paths, reason: "connect failed: \(error)")
            throw error
        }
        var keys = XenbusKeys()
        for (key, value) in store.diskProperties(sectors512: try store.currentSectors()).xenstoreEntries.sorted(by: { $0.key < $1.key }) {
            keys.set(key, value)
        }
        if let lie = options.sectorsOverride { keys.set("sectors", lie) }
        return keys
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        let all = served.withLock { list in
            defer { list = [] }
            return list
        }
        for item in all {
            do {
                try await worker.removeQueue(item.queue)
            } catch {
                Issue.record("removing \(item.queue.name): \(error)")
            }
            item.channel.close()
            do { try platform.unmap(item.mapping) } catch { Issue.record("unmapping a ring: \(error)") }
        }
    }
}

/// One guest with one disk served by dom0 in one process: the test backend behind a
/// XenbusBackendDevice, the BlockFrontend under test in the guest.
final class Rig: Sendable {
    let hypervisor: InProcessHypervisor
    let toolstack: XenStoreClient
    let backendStore: XenStoreClient
    let dom0: InProcessPlatform
    let guest: DomainID
    let image: TestImage
    let store: FileBackingStore
    let worker: BackendWorker
    let paths: XenbusDevicePaths
    let options: TestBackendOptions
    let backend: Mutex<XenbusBackendDevice<TestBlockBackend>?>

    static let devid = "51712"

    init(sectors: UInt64 = 8192, options: TestBackendOptions = TestBackendOptions()) async throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.grantEntries = 8192
        configuration.poolPages = 16384
        // As Linux's evtchn device: a port handed out stays masked until unmasked, so a
        // side that forgets to unmask hangs here.
        configuration.masksDeliveredPorts = true
        hypervisor = try InProcessHypervisor(configuration: configuration)
        toolstack = try hypervisor.connectXenStore(as: .tool)
        dom0 = try hypervisor.platform(for: .dom0)
        backendStore = try dom0.connectXenStore()
        guest = try hypervisor.createDomain(name: "guest")
        image = try TestImage(sectors: sectors)
        store = try FileBackingStore(path: image.path, readOnly: false)
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, threads: 2),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        worker = try BackendWorker(factory: factory, logger: testLogger)
        self.options = options
        paths = try XenbusDevicePaths(type: "vbd", devid: Self.devid, backendID: .dom0, frontendID: guest)
        try await XenbusToolstack.addDevice(paths, store: toolstack)
        backend = Mutex(nil)
        startBackend()
    }

    /// Starts a backend driver (a new "process" of the backend) for the disk.
    func startBackend(serving: Bool = true) {
        let hooks = TestBlockBackend(platform: dom0, worker: worker, store: store, options: options, serving: serving)
        let device = XenbusBackendDevice(store: backendStore, backend: paths.backend, hooks: hooks, logger: testLogger)
        backend.withLock { $0 = device }
    }

    /// Closes the backend driver: it disconnects (every request in its hands completes
    /// first), Closing, Closed.
    func stopBackend() async {
        guard let device = backend.withLock({ value in defer { value = nil }; return value }) else { return }
        await device.close()
    }

    func frontend(_ configuration: BlockFrontendConfiguration = .init()) throws -> BlockFrontend {
        try BlockFrontend(platform: try hypervisor.platform(for: guest), devid: Self.devid,
                          configuration: configuration, logger: testLogger)
    }

    func shutdown() async {
        await stopBackend()
        worker.stop()
        store.close()
        toolstack.close()
        backendStore.close()
    }
}

/// A seeded generator (SplitMix64), so every run writes the same data.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// `count` sectors of bytes that name their sector and a tag, so misplaced data shows.
func pattern(sector: UInt64, count: UInt64, tag: UInt8) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: Int(count) * 512)
    for s in 0 ..< Int(count) {
        let value = sector + UInt64(s)
        for i in 0 ..< 512 {
            bytes[s * 512 + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i % 8))) ^ tag &+ UInt8(truncatingIfNeeded: i / 8)
        }
    }
    return bytes
}
