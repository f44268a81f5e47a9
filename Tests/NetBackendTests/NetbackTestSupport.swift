import Foundation
import Glibc
import Logging
import NetBackend
import Netif
import SharedMemory
import Tap
import Testing
import URing
import XenBus
import XenDevice
import XenLocal
import XenPlatform
import XenRing
import XenStore
import XenTesting

let netLogger: Logger = {
    var logger = Logger(label: "netback-tests")
    logger.logLevel = getenv("NETBACK_TEST_LOG") != nil ? .debug : .critical
    return logger
}()

/// A local hypervisor on a thread of the test process, a namespace standing in for dom0's
/// network side (the TAP devices are made there), and a net backend serving it.
final class NetWorld: @unchecked Sendable {
    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack
    let namespace: TestNamespace
    let daemon: NetbackDaemon
    let running: Task<Void, any Error>

    /// With `sharedWorkers`, netback runs on those workers (shared with another daemon)
    /// instead of its own.
    init(engine: BlockIOEngineKind = .uring, stall: NetbackStallPolicy = NetbackStallPolicy(),
         limits: NetbackDeviceLimits = NetbackDeviceLimits(), sharedWorkers: BackendPlacement? = nil) throws {
        var template = Array("/tmp/xensplit-netback-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: made)
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 8192
        configuration.grantEntries = 2048
        hypervisor = try LocalHypervisor(configuration: configuration, logger: netLogger)
        hypervisor.start()
        dom0 = try LocalPlatform(stateDirectory: directory)
        toolstack = LocalToolstack(platform: dom0)
        namespace = try TestNamespace(prefix: "xsnb")
        var limits = limits
        limits.namespace = namespace.namespace
        limits.hotplugTimeout = .seconds(30)
        limits.stall = stall
        let daemon: NetbackDaemon
        if let sharedWorkers {
            daemon = try NetbackDaemon(platform: dom0, configuration: .init(limits: limits), sharing: sharedWorkers,
                                       logger: netLogger)
        } else {
            let factory = try BlockIOEngineFactory(kind: engine, configuration: .init(queueDepth: 64, capacity: 1024, threads: 2))
            daemon = try NetbackDaemon(platform: dom0, configuration: .init(workers: 2, limits: limits), factory: factory,
                                       logger: netLogger)
        }
        self.daemon = daemon
        running = Task { try await daemon.run() }
    }

    /// Creates guest `name` with one vif (`mac`), as xl would but with no hotplug script;
    /// the test stands in for it with ``plug(_:address:guest:)``.
    func guest(_ name: String, mac: String, vifOptions: String = "") async throws -> (DomainID, LocalPlatform) {
        let id = try await toolstack.createDomain(name: name, disks: [],
                                                  nics: [try VifSpec(parsing: "mac=\(mac),bridge=none" + vifOptions)],
                                                  hotplug: .none)
        return (id, try LocalPlatform(stateDirectory: directory, domain: name))
    }

    /// What the vif script and the administrator do once the backend made the TAP device:
    /// up, an address on dom0's side, the guest as a permanent neighbour, hotplug-status.
    func plug(domain: DomainID, address: String, guestAddress: String, guestMAC: String) async throws {
        let backend = LocalToolstack.backendPath(kind: "vif", frontend: domain, device: 0)
        let store = try dom0.connectXenStore()
        try await eventually("backend \(backend) reaches InitWait") {
            (try? await store.readString(backend + "/state")) == String(XenbusState.initWait.rawValue)
        }
        let interface = "vif\(domain).0"
        try namespace.ip("link", "set", "dev", interface, "up")
        try namespace.ip("addr", "add", address + "/24", "dev", interface)
        try namespace.ip("neigh", "add", guestAddress, "lladdr", guestMAC, "dev", interface, "nud", "permanent")
        try await store.write(backend + "/" + NetifToolstackKeys.hotplugStatus, NetifToolstackKeys.hotplugConnected)
    }

    /// Runs `body` in `world` and always stops the world, also when the body throws.
    static func with(_ world: NetWorld, _ body: (NetWorld) async throws -> Void) async throws {
        do {
            try await body(world)
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
    }

    /// A guest with one vif (addresses 198.18.5.1 for dom0, .2 for it), plugged as the vif
    /// script would, and a raw frontend connected with rx-copy plus `features`, its link up.
    func connectedGuest(features extra: (inout NetifFrontendFeatures) -> Void = { _ in }, queues: Int = 1,
                        vifOptions: String = "", controlRing: Bool = false) async throws -> (DomainID, RawNetfront) {
        let (domain, guest) = try await guest("g", mac: NetbackDataTests.guestMAC, vifOptions: vifOptions)
        let frontend = try RawNetfront(guest, domain: domain, queues: queues, controlRing: controlRing)
        try await plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2", guestMAC: NetbackDataTests.guestMAC)
        var features = NetifFrontendFeatures()
        features.requestRxCopy = true
        extra(&features)
        try await frontend.connect(features: features)
        // The kernel sends to the vif only once its link watch saw the carrier.
        try await waitUntilUp(domain)
        return (domain, frontend)
    }

    func stop() async {
        daemon.stop()
        _ = await running.result
        hypervisor.stopAndWait()
        namespace.delete()
        _ = try? FileManager.default.removeItem(atPath: directory)
    }
}

struct NetTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A netif frontend written on the wire modules alone (no NetFrontend): split event
/// channels (a ring peer each), data pages it grants, requests it writes itself.
final class RawNetfront: @unchecked Sendable {
    let platform: LocalPlatform
    let store: XenStoreClient
    let frontendPath: String
    let backendPath: String
    let tx: MockRingPeer.Frontend
    let rx: MockRingPeer.Frontend
    /// Pages 0..<8 carry tx data, 8..<16 take rx data.
    let data: SharedPages
    static let txPages = 0..<8
    static let rxPages = 8..<16
    /// The next rx page to post, as an index into ``rxPages``.
    var nextRxID = 0
    /// Queues 1... of a multi-queue frontend (queue 0 is `tx`, `rx` and `data`).
    let extraPairs: [Pair]
    /// The control ring, if made with one, and two pages it grants for keys and tables.
    let control: MockRingPeer.Frontend?
    let controlPages: SharedPages?
    /// Slots taken off each queue's rx ring by ``takeRx(queue:)``.
    var rxTaken: [Int]

    /// One more queue pair: its rings and its own 16 data pages, laid out as queue 0's.
    struct Pair {
        let tx: MockRingPeer.Frontend
        let rx: MockRingPeer.Frontend
        let data: SharedPages
    }

    init(_ platform: LocalPlatform, domain: DomainID, queues: Int = 1, controlRing: Bool = false) throws {
        self.platform = platform
        store = try platform.connectXenStore()
        frontendPath = LocalToolstack.frontendPath(kind: "vif", frontend: domain, device: 0)
        backendPath = LocalToolstack.backendPath(kind: "vif", frontend: domain, device: 0)
        tx = try MockRingPeer.Frontend(platform: platform, backendDomain: 0, entrySize: NetifLayout.txSlotSize)
        rx = try MockRingPeer.Frontend(platform: platform, backendDomain: 0, entrySize: NetifLayout.rxSlotSize)
        data = try platform.grantTable.share(pages: 16, with: 0, writable: true)
        extraPairs = try (1..<max(1, queues)).map { _ in
            Pair(tx: try MockRingPeer.Frontend(platform: platform, backendDomain: 0, entrySize: NetifLayout.txSlotSize),
                 rx: try MockRingPeer.Frontend(platform: platform, backendDomain: 0, entrySize: NetifLayout.rxSlotSize),
                 data: try platform.grantTable.share(pages: 16, with: 0, writable: true))
        }
        control = controlRing ? try MockRingPeer.Frontend(platform: platform, backendDomain: 0, entrySize: NetifLayout.ctrlSlotSize) : nil
        controlPages = controlRing ? try platform.grantTable.share(pages: 2, with: 0, writable: false) : nil
        rxTaken = Array(repeating: 0, count: max(1, queues))
    }

    /// Posts every rx page, publishes the keys and Initialised, waits for Connected.
    func connect(features: NetifFrontendFeatures, rxBuffers: Int = RawNetfront.rxPages.count) async throws {
        try await publish(features: features, rxBuffers: rxBuffers)
        let store = self.store, backend = backendPath
        try await eventually("backend \(backend) Connected", seconds: 40) {
            (try? await store.readString(backend + "/state")) == String(XenbusState.connected.rawValue)
        }
        try await store.write(frontendPath + "/state", String(XenbusState.connected.rawValue))
    }

    /// Posts rx buffers, writes the keys and Initialised; does not wait for the backend.
    func publish(features: NetifFrontendFeatures, rxBuffers: Int = RawNetfront.rxPages.count,
                 omitting omitted: Set<String> = []) async throws {
        for (id, page) in Self.rxPages.prefix(rxBuffers).enumerated() {
            try rx.produceRequest { NetifRxRequest(id: UInt16(id), gref: self.data.refs[page]).encode(into: $0, at: 0) }
        }
        _ = try rx.pushRequestsAndNotify()
        nextRxID = rxBuffers
        for pair in extraPairs {
            for (id, page) in Self.rxPages.enumerated() {
                try pair.rx.produceRequest { NetifRxRequest(id: UInt16(id), gref: pair.data.refs[page]).encode(into: $0, at: 0) }
            }
            _ = try pair.rx.pushRequestsAndNotify()
        }
        let pairs = [(tx, rx)] + extraPairs.map { ($0.tx, $0.rx) }
        let keys = NetifConnectionKeys(queues: pairs.map { tx, rx in
            .init(txRingRef: tx.pages.refs[0], rxRingRef: rx.pages.refs[0], eventChannels: .split(tx: tx.port, rx: rx.port))
        }, control: control.map { .init(ringRef: $0.pages.refs[0], eventChannel: $0.port) })
        var features = features
        if pairs.count > 1 { features.queueCount = UInt32(pairs.count) }
        let path = frontendPath
        try await store.withTransaction { txn in
            for (key, value) in features.xenstoreEntries.merging(keys.xenstoreEntries, uniquingKeysWith: { $1 })
            where !omitted.contains(key) {
                try await txn.write(path + "/" + key, value)
            }
            try await txn.write(path + "/state", String(XenbusState.initialised.rawValue))
        }
    }

    /// Posts `count` more rx buffers (pages after those posted so far, wrapping).
    func postRx(_ count: Int) throws {
        for _ in 0..<count {
            let id = nextRxID % Self.rxPages.count
            nextRxID += 1
            try rx.produceRequest {
                NetifRxRequest(id: UInt16(id), gref: self.data.refs[Self.rxPages.lowerBound + id]).encode(into: $0, at: 0)
            }
        }
        _ = try rx.pushRequestsAndNotify()
    }

    /// Sends `frame` as one tx request from page `page` (flags as given).
    func send(_ frame: [UInt8], id: UInt16, page: Int = 0, flags: NetifTxFlags = []) throws {
        let base = data.view.baseAddress + page * 4096
        frame.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try tx.produceRequest {
            NetifTxRequest(gref: self.data.refs[page], offset: 0, flags: flags, id: id, size: UInt16(frame.count))
                .encode(into: $0, at: 0)
        }
        _ = try tx.pushRequestsAndNotify()
    }

    /// Waits (off the cooperative pool, up to 20 s) for `count` tx responses.
    func txResponses(_ count: Int) async throws -> [NetifTxResponse] {
        try await offThePool { [self] in
            var out: [NetifTxResponse] = []
            let deadline = ContinuousClock.now + .seconds(20)
            while out.count < count {
                _ = try tx.consumeResponses { view in
                    if let response = try? NetifTxResponse.decode(from: view, at: 0) { out.append(response) }
                }
                if out.count < count, try !tx.finalCheckForResponses() {
                    guard ContinuousClock.now < deadline else { throw NetTestError("\(out.count) of \(count) tx responses in 20 s") }
                    Self.waitForEvent(tx.eventChannel, milliseconds: 100)
                }
            }
            return out
        }
    }

    /// Packets taken off the rx ring and not yet returned by ``receive()``.
    var rxBacklog: [(NetifRxResponse, [UInt8])] = []
    /// Whether ``receive()`` posts each buffer again once its packet is copied out.
    var repostRx = true

    /// Waits (off the cooperative pool, up to 20 s) for the next single-slot rx packet and
    /// returns its response and bytes; every response taken meanwhile is kept, in order,
    /// and its buffer posted again (as a frontend does), so a burst of other traffic does
    /// not starve the ring.
    func receive() async throws -> (NetifRxResponse, [UInt8]) {
        try await offThePool { [self] in
            let deadline = ContinuousClock.now + .seconds(20)
            while rxBacklog.isEmpty {
                var taken: [NetifRxResponse] = []
                _ = try rx.consumeResponses { view in
                    if let response = try? NetifRxResponse.decode(from: view, at: 0) { taken.append(response) }
                }
                for response in taken {
                    let id = Int(response.id) % Self.rxPages.count
                    let page = Self.rxPages.lowerBound + id
                    let base = data.view.baseAddress + page * 4096 + Int(min(response.offset, 4095))
                    let count = min(max(0, response.size ?? 0), 4096 - Int(min(response.offset, 4095)))
                    rxBacklog.append((response, Array(UnsafeRawBufferPointer(start: base, count: count))))
                    if repostRx {
                        try rx.produceRequest { NetifRxRequest(id: UInt16(id), gref: self.data.refs[page]).encode(into: $0, at: 0) }
                    }
                }
                if !taken.isEmpty, repostRx { _ = try rx.pushRequestsAndNotify() }
                if rxBacklog.isEmpty, try !rx.finalCheckForResponses() {
                    guard ContinuousClock.now < deadline else { throw NetTestError("no rx packet in 20 s") }
                    Self.waitForEvent(rx.eventChannel, milliseconds: 100)
                }
            }
            return rxBacklog.removeFirst()
        }
    }

    /// Takes the rx responses there are and posts their buffers again, as a live frontend
    /// does (the packets are dropped); returns how many it took.
    func takeAndRepostRx() throws -> Int {
        var ids: [Int] = []
        _ = try rx.consumeResponses { view in
            if let response = try? NetifRxResponse.decode(from: view, at: 0) { ids.append(Int(response.id) % Self.rxPages.count) }
        }
        for id in ids {
            try rx.produceRequest { NetifRxRequest(id: UInt16(id), gref: self.data.refs[Self.rxPages.lowerBound + id]).encode(into: $0, at: 0) }
        }
        if !ids.isEmpty { _ = try rx.pushRequestsAndNotify() }
        return ids.count
    }

    /// Polls `channel` for up to `milliseconds` and takes what is pending.
    static func waitForEvent(_ channel: any EventChannel, milliseconds: Int32) {
        var poller = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, milliseconds) > 0 else { return }
        try? channel.takePending(atMost: 16) { port throws(PlatformError) in try channel.unmask(port) }
    }
}
