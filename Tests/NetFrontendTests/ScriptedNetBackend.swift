import Netif
import SharedMemory
import Synchronization
import Testing
import XenBus
import XenPlatform
import XenRing
import XenStore
import XenTesting
@testable import NetFrontend

/// A netback reduced to a script, built on the wire modules only: its xenbus hooks offer
/// `offered`, read the frontend's keys and map the rings of each of its queue pairs; the
/// test then takes tx chains and hands rx packets by hand, through ``Rings``.
final class ScriptedNetBackend: XenbusBackendHooks {
    struct Frontend: Sendable {
        var connection: NetifConnectionKeys
        var features: NetifFrontendFeatures
        var entries: [String: String]
    }

    /// The mapped rings of one queue pair of a connection; used by the test task only.
    final class Rings: @unchecked Sendable {
        let platform: any Platform
        let guest: DomainID
        var tx: BackRing
        var rx: BackRing
        let mappings: [GrantMapping]
        let channel: any EventChannel
        let txPort: EventPort
        let rxPort: EventPort

        init(platform: any Platform, guest: DomainID, frontend: Frontend, queue index: Int = 0) throws {
            self.platform = platform
            self.guest = guest
            let queue = frontend.connection.queues[index]
            let txMap = try platform.grantMapper.map([queue.txRingRef], from: guest, writable: true)
            let rxMap = try platform.grantMapper.map([queue.rxRingRef], from: guest, writable: true)
            mappings = [txMap, rxMap]
            tx = BackRing(try SharedRing(memory: txMap.view, pages: 1, entrySize: NetifLayout.txSlotSize))
            rx = BackRing(try SharedRing(memory: rxMap.view, pages: 1, entrySize: NetifLayout.rxSlotSize))
            channel = try platform.openEventChannel()
            switch queue.eventChannels {
            case let .shared(port):
                txPort = try channel.bindInterdomain(remote: guest, remotePort: port)
                rxPort = txPort
            case let .split(tx, rx):
                txPort = try channel.bindInterdomain(remote: guest, remotePort: tx)
                rxPort = try channel.bindInterdomain(remote: guest, remotePort: rx)
            }
        }

        func close() {
            channel.close()
            for mapping in mappings { try? platform.grantMapper.unmap(mapping) }
        }

        /// A transmitted packet as the backend took it.
        struct TxPacket {
            var packet: NetifTxPacket
            var data: [UInt8]
        }

        /// Takes the next whole tx chain, if one is published: copies its data out of the
        /// granted pages, answers every slot `status` (NULL for extras; with `lieAboutID`,
        /// for an id never sent) and notifies as asked.
        func takeTx(status: NetifStatus = .okay, lieAboutID: Bool = false) throws -> TxPacket? {
            let producer = try tx.checkedRequestProducer()
            let available = Int(producer &- tx.requestConsumer)
            let start = tx.requestConsumer
            let outcome = try NetifTxChainParser().parse(available: available) { tx.requestSlot(start &+ RingIndex($0)) }
            guard case let .packet(packet) = outcome else {
                #expect(outcome == .incomplete, "chain refused: \(outcome)")
                return nil
            }
            var data: [UInt8] = []
            for fragment in packet.fragments {
                let page = try platform.grantMapper.map([fragment.gref], from: guest, writable: false)
                data += page.view.bytes(at: Int(fragment.offset), length: Int(fragment.size))
                try platform.grantMapper.unmap(page)
            }
            tx.requestConsumer = start &+ RingIndex(packet.slotIDs.count)
            for id in packet.slotIDs {
                let response = id.map { NetifTxResponse(id: lieAboutID ? $0 &+ 1000 : $0, status: status) }
                    ?? NetifTxResponse(id: 0, status: .null)
                response.encode(into: tx.responseSlot(tx.responseProducerPrivate), at: 0)
                tx.responseProducerPrivate &+= 1
            }
            if tx.pushResponsesAndCheckNotify() { try channel.notify(txPort) }
            return TxPacket(packet: packet, data: data)
        }

        /// Rx requests posted and not yet taken.
        func postedRx() throws -> Int { Int(try rx.checkedRequestProducer() &- rx.requestConsumer) }

        /// Copies `frame` into the posted rx pages as NetifRxPlan lays it out, answering each
        /// request in its own slot, and notifies as asked.
        func deliver(_ frame: [UInt8], flags: NetifRxFlags = [], extras: [NetifExtraInfo] = []) throws {
            let plan = try NetifRxPlan(length: frame.count, flags: flags, extras: extras)
            #expect(try postedRx() >= plan.requestsNeeded)
            for slot in plan.slots {
                let index = rx.requestConsumer
                let request = try NetifRxRequest.decode(from: rx.requestSlot(index), at: 0)
                rx.requestConsumer = index &+ 1
                switch slot {
                case let .data(packetOffset, length, slotFlags):
                    let page = try platform.grantMapper.map([request.gref], from: guest, writable: true)
                    frame[packetOffset ..< packetOffset + length].withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
                    try platform.grantMapper.unmap(page)
                    NetifRxResponse(id: request.id, offset: 0, flags: slotFlags, size: UInt16(length))
                        .encode(into: rx.responseSlot(index), at: 0)
                case let .extra(info):
                    info.encode(into: rx.responseSlot(index), at: 0)
                }
                rx.responseProducerPrivate = index &+ 1
            }
            if rx.pushResponsesAndCheckNotify() { try channel.notify(rxPort) }
        }

        /// Answers the next rx request with a response carrying `id` (a lie unless it is
        /// the request's own), `size` bytes from offset 0.
        func answerRx(id: UInt16, size: UInt16) throws {
            let index = rx.requestConsumer
            rx.requestConsumer = index &+ 1
            NetifRxResponse(id: id, offset: 0, flags: [], size: size).encode(into: rx.responseSlot(index), at: 0)
            rx.responseProducerPrivate = index &+ 1
            if rx.pushResponsesAndCheckNotify() { try channel.notify(rxPort) }
        }
    }

    let platform: any Platform
    let offered: NetifBackendFeatures
    /// Each queue pair's rings while connected, pair 0 first.
    let rings = Mutex<[Rings]>([])
    let frontendsRead = Mutex<[Frontend]>([])
    let disconnects = Mutex<[String]>([])

    init(platform: any Platform, offered: NetifBackendFeatures) {
        self.platform = platform
        self.offered = offered
    }

    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        var keys = XenbusKeys()
        for (key, value) in offered.xenstoreEntries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
        return keys
    }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Frontend {
        typealias Key = NetifFrontendFeatures.Key
        var entries: [String: String] = [:]
        let count = try await frontend.optionalString(Key.queueCount).flatMap { Int($0) } ?? 1
        let keys = NetifConnectionKeys.keys(queueCount: count)
            + [Key.requestRxCopy, Key.rxNotify, Key.scatterGather, Key.gsoTCPv4, Key.gsoTCPv6, Key.noChecksumOffload,
               Key.ipv6ChecksumOffload, Key.requestMulticastControl, Key.queueCount, Key.trusted]
        for key in keys {
            if let value = try await frontend.optionalString(key) { entries[key] = value }
        }
        let read = Frontend(
            connection: try NetifConnectionKeys(xenstore: entries, queueCount: count, splitEventChannels: offered.splitEventChannels,
                                                controlRing: false),
            features: try NetifFrontendFeatures(xenstore: entries), entries: entries)
        frontendsRead.withLock { $0.append(read) }
        return read
    }

    func connect(_ frontend: Frontend, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        var made: [Rings] = []
        do {
            for queue in frontend.connection.queues.indices {
                made.append(try Rings(platform: platform, guest: paths.frontendID, frontend: frontend, queue: queue))
            }
        } catch {
            for rings in made { rings.close() }
            throw error
        }
        rings.withLock { $0 = made }
        return XenbusKeys()
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        for made in rings.withLock({ value in defer { value = [] }; return value }) { made.close() }
        disconnects.withLock { $0.append(reason) }
    }

    /// Queue pair 0's rings while connected.
    var connected: Rings? { rings.withLock { $0.first } }

    /// Every queue pair's rings while connected.
    var connectedQueues: [Rings] { rings.withLock { $0 } }
}

/// One guest with one vif whose backend is the script, all in one process.
final class NetRig: Sendable {
    let hypervisor: InProcessHypervisor
    let toolstack: XenStoreClient
    let backendStore: XenStoreClient
    let dom0: InProcessPlatform
    let guest: DomainID
    let paths: XenbusDevicePaths
    let hooks: ScriptedNetBackend
    let backend: Mutex<XenbusBackendDevice<ScriptedNetBackend>?>

    static let devid: UInt32 = 0
    static let mac = "00:16:3e:12:34:56"
    static let mtu = 9000

    init(offered: NetifBackendFeatures) async throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.masksDeliveredPorts = true
        // A queue pair grants 258 pages besides its tx buffers: room for several pairs.
        configuration.grantEntries = 4096
        hypervisor = try InProcessHypervisor(configuration: configuration)
        toolstack = try hypervisor.connectXenStore(as: .tool)
        dom0 = try hypervisor.platform(for: .dom0)
        backendStore = try dom0.connectXenStore()
        guest = try hypervisor.createDomain(name: "guest")
        paths = try XenbusDevicePaths(type: NetFrontend.deviceType, devid: "\(Self.devid)", backendID: .dom0, frontendID: guest)
        try await XenbusToolstack.addDevice(paths, store: toolstack, backendKeys: [NetifVifSettings.Key.mac: Self.mac],
                                            frontendKeys: [NetifVifSettings.Key.mac: Self.mac, NetifFrontendFeatures.Key.trusted: "0",
                                                           NetifVifSettings.Key.mtu: "\(Self.mtu)"])
        hooks = ScriptedNetBackend(platform: dom0, offered: offered)
        backend = Mutex(nil)
        startBackend()
    }

    /// Starts a backend driver (a new "process" of the backend).
    func startBackend() {
        let device = XenbusBackendDevice(store: backendStore, backend: paths.backend, hooks: hooks, logger: testLogger)
        backend.withLock { $0 = device }
    }

    /// Closes the backend driver: it disconnects, Closing, Closed.
    func stopBackend() async {
        guard let device = backend.withLock({ value in defer { value = nil }; return value }) else { return }
        await device.close()
    }

    func frontend(queues: Int? = nil) throws -> NetFrontend {
        try NetFrontend(platform: try hypervisor.platform(for: guest), devid: Self.devid, queues: queues, logger: testLogger)
    }

    func shutdown() async {
        await stopBackend()
        toolstack.close()
        backendStore.close()
    }

    static func features(split: Bool = false, maxQueues: UInt32? = nil) -> NetifBackendFeatures {
        var features = NetifBackendFeatures()
        features.maxQueues = maxQueues
        features.rxCopy = true
        features.scatterGather = true
        features.gsoTCPv4 = true
        features.gsoTCPv6 = true
        features.ipv6ChecksumOffload = true
        features.splitEventChannels = split
        return features
    }
}
