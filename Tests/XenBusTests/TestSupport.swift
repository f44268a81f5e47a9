import Logging
import Synchronization
import Testing
import XenBus
import XenPlatform
import XenStore
import XenTesting

/// The device type of these tests: a dummy with one key each way per phase.
let dummyType = "xbt"

/// Quiet unless something goes wrong; the drivers log every state change at info.
let testLogger: Logger = {
    var logger = Logger(label: "xenbus-tests")
    logger.logLevel = .error
    return logger
}()

/// dom0 and two guests in one process, with a toolstack connection that writes both
/// ends' nodes, and each domain's own xenstore connection.
struct World {
    let hypervisor: InProcessHypervisor
    let toolstack: XenStoreClient
    let dom0: XenStoreClient
    let guests: [DomainID]

    init(guests count: Int = 2) throws {
        hypervisor = try InProcessHypervisor()
        toolstack = try hypervisor.connectXenStore(as: .tool)
        dom0 = try hypervisor.platform(for: .dom0).connectXenStore()
        var ids: [DomainID] = []
        for i in 0 ..< count { ids.append(try hypervisor.createDomain(name: "guest\(i + 1)")) }
        guests = ids
    }

    /// A fresh connection acting as `domid` (a new "process" of that domain).
    func store(_ domid: DomainID) throws -> XenStoreClient {
        try hypervisor.platform(for: domid).connectXenStore()
    }

    /// Creates device `devid` of guest `frontend`, served by dom0, the way libxl does.
    @discardableResult
    func addDevice(frontend: DomainID, devid: String, backendKeys: XenbusKeys = XenbusKeys()) async throws -> XenbusDevicePaths {
        let paths = try XenbusDevicePaths(type: dummyType, devid: devid, backendID: .dom0, frontendID: frontend)
        try await XenbusToolstack.addDevice(paths, store: toolstack, backendKeys: backendKeys)
        return paths
    }
}

/// What the dummy backend saw and did, for assertions.
struct BackendRecord: Sendable {
    var features = 0
    var connects: [UInt32] = []
    var disconnects: [String] = []
}

/// The dummy backend: advertises `feature-magic`, requires `ring-ref` (at most 1000),
/// publishes `sectors` = 2 x ring-ref.
final class DummyBackend: XenbusBackendHooks {
    struct Frontend: Sendable { var ringRef: UInt32 }

    let record = Mutex(BackendRecord())
    let failConnect: Bool
    let failFeatures: Bool
    /// The answer to ``adopts(paths:)``.
    let adopting: Bool

    init(failConnect: Bool = false, failFeatures: Bool = false, adopting: Bool = false) {
        self.failConnect = failConnect
        self.failFeatures = failFeatures
        self.adopting = adopting
    }

    func adopts(paths: XenbusDevicePaths) async -> Bool { adopting }

    var snapshot: BackendRecord { record.withLock { $0 } }

    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        if failFeatures { throw XenbusError.hookFailed(hook: "features", reason: "no backing store for \(paths.devid)") }
        record.withLock { $0.features += 1 }
        return ["feature-magic": "7", "max-ring-ref": "1000"]
    }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Frontend {
        Frontend(ringRef: try await frontend.unsigned("ring-ref", max: 1000))
    }

    func connect(_ frontend: Frontend, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        if failConnect { throw XenbusError.hookFailed(hook: "connect", reason: "cannot map ring-ref \(frontend.ringRef)") }
        record.withLock { $0.connects.append(frontend.ringRef) }
        return ["sectors": String(frontend.ringRef * 2)]
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        record.withLock { $0.disconnects.append(reason) }
    }
}

/// What the dummy frontend saw and did.
struct FrontendRecord: Sendable {
    var magic: [UInt32] = []
    var initialises = 0
    var sectors: [UInt64] = []
    var disconnects: [String] = []
}

/// The dummy frontend: reads `feature-magic`, writes `ring-ref`, reads `sectors`.
final class DummyFrontend: XenbusFrontendHooks {
    let ringRef: UInt32
    let record = Mutex(FrontendRecord())
    let failInitialise: Bool
    let badKey: Bool
    let stateWithKeys: XenbusState

    init(ringRef: UInt32, failInitialise: Bool = false, badKey: Bool = false, stateWithKeys: XenbusState = .initialised) {
        self.ringRef = ringRef
        self.failInitialise = failInitialise
        self.badKey = badKey
        self.stateWithKeys = stateWithKeys
    }

    var snapshot: FrontendRecord { record.withLock { $0 } }

    func readBackend(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> UInt32 {
        try await backend.unsigned("feature-magic", max: 100)
    }

    func initialise(_ magic: UInt32, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        record.withLock { $0.magic.append(magic) }
        if failInitialise { throw XenbusError.hookFailed(hook: "initialise", reason: "no grant entries left") }
        record.withLock { $0.initialises += 1 }
        return badKey ? ["ring-ref": String(ringRef), "../escape": "1"] : ["ring-ref": String(ringRef)]
    }

    func connect(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws {
        let sectors: UInt64 = try await backend.unsigned("sectors")
        record.withLock { $0.sectors.append(sectors) }
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        record.withLock { $0.disconnects.append(reason) }
    }
}

/// The last value a wait saw, for its failure message.
final class LastSeen: Sendable {
    let value = Mutex<[UInt8]?>(nil)
}

/// Waits (bounded) until the node at `path` satisfies `condition`; the failure names
/// the path and the last value seen.
func waitFor(_ what: String, store: XenStoreClient, path: String, seconds: Int = 10,
             _ condition: @escaping @Sendable ([UInt8]?) -> Bool) async throws {
    let last = LastSeen()
    let watch = try await store.watch(path)
    defer { Task { try? await watch.cancel() } }
    do {
        try await bounded("\(what) (\(path))", seconds: seconds) { () async throws -> Void in
            for await _ in watch {
                let value: [UInt8]?
                do {
                    value = try await store.read(path)
                } catch XenStoreError.daemon(.enoent) {
                    value = nil
                }
                last.value.withLock { $0 = value }
                if condition(value) { return }
            }
            throw WaitExceeded(description: "watch on \(path) ended")
        }
    } catch let error as WaitExceeded {
        let seen = last.value.withLock { $0 }.map { "'\(String(decoding: $0, as: UTF8.self))'" } ?? "absent"
        Issue.record("\(error.description); last value \(seen)")
        throw error
    }
}

/// Waits (bounded) until the `state` node under `node` reads `state`.
func waitForState(_ node: String, _ state: XenbusState, store: XenStoreClient, seconds: Int = 10) async throws {
    try await waitFor("waiting for \(state)", store: store, path: node + "/state", seconds: seconds) {
        $0 == Array(state.nodeValue.utf8)
    }
}

/// The value of `path`, or nil if absent.
func value(_ path: String, store: XenStoreClient) async throws -> String? {
    do {
        return try await store.readString(path)
    } catch .daemon(.enoent) {
        return nil
    }
}

/// Serves every `dummyType` device of dom0 as the watcher reports them, the way a
/// backend daemon would; keeps the drivers and their hooks for inspection.
final class BackendService: Sendable {
    typealias Driver = (device: XenbusBackendDevice<DummyBackend>, hooks: DummyBackend)

    final class Registry: Sendable {
        let drivers = Mutex<[String: Driver]>([:])
        let removed = Mutex<[String]>([])
    }

    let watcher: XenbusBackendWatcher
    let registry = Registry()
    private let loop: Task<Void, Never>

    init(store: XenStoreClient, makeHooks: @escaping @Sendable (XenbusBackendDeviceID) -> DummyBackend = { _ in DummyBackend() }) async throws {
        let watcher = try await XenbusBackendWatcher.start(store: store, backendID: .dom0, type: dummyType, logger: testLogger)
        self.watcher = watcher
        let registry = self.registry
        loop = Task {
            for await event in watcher {
                switch event {
                case let .added(id):
                    let hooks = makeHooks(id)
                    let device = XenbusBackendDevice(store: store, backend: id.backendPath, hooks: hooks, logger: testLogger)
                    registry.drivers.withLock { $0[id.backendPath] = (device, hooks) }
                case let .removed(id):
                    registry.removed.withLock { $0.append(id.backendPath) }
                }
            }
        }
    }

    /// The driver of `path` once the watcher reported it (bounded wait).
    func driver(_ path: String) async throws -> Driver {
        try await bounded("backend driver for \(path)") {
            while true {
                if let d = self.registry.drivers.withLock({ $0[path] }) { return d }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    /// Closes every driver and the watcher.
    func close() async {
        await watcher.cancel()
        await loop.value
        for (_, d) in registry.drivers.withLock({ $0 }) { await d.device.close() }
    }
}
