import Glibc
import Logging
import Netif
import Synchronization
import Tap
import XenBus
import XenDevice
import XenPlatform
import XenRing
import XenStore

/// What the backend reads from a vif's frontend: its features and its rings' keys.
public struct NetbackFrontendRequest: Sendable {
    public let features: NetifFrontendFeatures
    public let connection: NetifConnectionKeys
}

/// Limits a daemon puts on every vif it serves.
public struct NetbackDeviceLimits: Sendable {
    /// Buffers per queue.
    public var queue = NetbackQueueConfiguration()
    /// The most queue pairs a frontend may ask for (multi-queue-max-queues; 1: not offered).
    public var maxQueues: UInt32 = 1
    /// How long to wait for the hotplug script's `hotplug-status` before refusing the vif.
    public var hotplugTimeout: Duration = .seconds(60)
    /// When a guest that posts no rx buffers loses its held packets and its carrier.
    public var stall = NetbackStallPolicy()
    /// The network namespace the TAP devices are made in; nil: the daemon's own.
    public var namespace: NetworkNamespace?

    public init() {}
}

/// One vif: its TAP device (made before InitWait, named vifDOMID.DEVID or the toolstack's
/// `vifname`), its features, and while connected its queue on a worker. The toolstack's
/// hotplug script puts the TAP device on a bridge and writes `hotplug-status`; the vif
/// connects only after that reads `connected`, as Linux's netback waits for it.
public final class NetbackDevice: BackendDevice, @unchecked Sendable {
    // SAFETY (@unchecked): mutable state is behind `state`; the rest is set at init.
    public let backendPath: String
    let platform: any Platform
    let store: XenStoreClient
    let limits: NetbackDeviceLimits
    let placement: BackendPlacement
    let logger: Logger
    let reportViolation: @Sendable (String) -> Void
    /// The lines this vif's frontend can cause, rate-limited.
    public let guestLog: GuestLog
    let state = Mutex(State())

    struct State {
        var tap: TapDevice?
        /// The connection's queues, in netif queue order; empty while not connected.
        var connected: [Connected] = []
        /// The carrier as last set while connected.
        var carrierOn = true
        /// Follows the frontend's request-multicast-control while connected.
        var multicastWatch: Task<Void, Never>?
        /// The control ring while connected, if the frontend set one up.
        var control: ControlConnected?
        /// The connection's hashing, shared by its queues.
        var hashing: NetbackHashing?
        /// The queues' inboxes (several queues only), closed once every queue is removed.
        var inboxes: [NetbackInbox] = []
    }

    /// A connection's control ring and what it holds.
    struct ControlConnected: @unchecked Sendable {
        // SAFETY (@unchecked): the queue belongs to its worker; only removal touches it here.
        let queue: NetbackControlQueue
        let worker: BackendWorker
        let mapping: GrantMapping
        let channel: any EventChannel
    }

    /// A connection's queue (one netif queue pair) and what it holds.
    struct Connected: @unchecked Sendable {
        // SAFETY (@unchecked): the queue belongs to its worker; only removal touches it here.
        let queue: NetbackQueue
        let worker: BackendWorker
        let mappings: [GrantMapping]
        let channel: any EventChannel
    }

    /// The backend features every vif advertises (io/netif.h); multi-queue is added when
    /// the daemon's limits offer more than one queue pair.
    public static let advertised: NetifBackendFeatures = {
        var features = NetifBackendFeatures()
        features.rxCopy = true
        features.scatterGather = true
        features.gsoTCPv4 = true
        features.gsoTCPv6 = true
        features.ipv6ChecksumOffload = true
        features.splitEventChannels = true
        features.multicastControl = true
        features.dynamicMulticastControl = true
        features.controlRing = true
        return features
    }()

    init(backendPath: String, platform: any Platform, store: XenStoreClient, limits: NetbackDeviceLimits,
         placement: BackendPlacement, logger: Logger, guestLogPolicy: GuestLog.Policy = GuestLog.Policy(),
         reportViolation: @escaping @Sendable (String) -> Void) {
        self.backendPath = backendPath
        self.platform = platform
        self.store = store
        self.limits = limits
        self.placement = placement
        var logger = logger
        logger[metadataKey: "device"] = "\(backendPath)"
        self.logger = logger
        self.reportViolation = reportViolation
        guestLog = GuestLog(logger: logger, policy: guestLogPolicy)
    }

    /// The TAP device's name, once made.
    public var interfaceName: String? { state.withLock { $0.tap?.name } }

    public var isConnected: Bool { state.withLock { !$0.connected.isEmpty } }

    /// Packet slots in each queue's inbox: a few, as a packet handed over is delivered at
    /// the receiving worker's next pass.
    static let inboxSlots = 4

    /// The vif's packet counts now, summed over its queues (each read on its worker);
    /// nil while not connected.
    public func counters() async -> NetifCounters? {
        let connected = state.withLock { $0.connected }
        guard !connected.isEmpty else { return nil }
        let total = Mutex(NetifCounters())
        for queue in connected {
            try? await queue.worker.perform(on: queue.queue) { queue in total.withLock { $0.add(queue.statistics) } }
        }
        return total.withLock { $0 }
    }

    /// What the frontend set over its control ring, while connected.
    public var hashConfiguration: NetifHashConfiguration? { state.withLock { $0.hashing?.current } }

    // MARK: Xenbus hooks

    public func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        try await makeTap(paths)
        var features = Self.advertised
        if limits.maxQueues > 1 { features.maxQueues = limits.maxQueues }
        return XenbusKeys(features.xenstoreEntries)
    }

    public func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> NetbackFrontendRequest {
        typealias Key = NetifFrontendFeatures.Key
        do {
            let features = try NetifFrontendFeatures(xenstore: try await frontend.entries([
                Key.requestRxCopy, Key.rxNotify, Key.scatterGather, Key.gsoTCPv4, Key.gsoTCPv6, Key.noChecksumOffload,
                Key.ipv6ChecksumOffload, Key.requestMulticastControl, Key.queueCount, Key.trusted]))
            // Only copying receive is offered (feature-rx-flip 0): a frontend that does not
            // ask for it wants page flipping, which no current Xen supports.
            guard features.requestRxCopy else {
                throw XenbusError.invalidValue(path: frontend.path(of: Key.requestRxCopy), value: "0",
                                               expected: "1: this backend only copies (feature-rx-flip is 0)")
            }
            // io/netif.h: multi-queue-num-queues at most what multi-queue-max-queues offered.
            let queueCount = Int(features.queueCount ?? 1)
            guard queueCount <= Int(limits.maxQueues) else {
                throw XenbusError.invalidValue(path: frontend.path(of: Key.queueCount), value: String(queueCount),
                                               expected: "a decimal from 1 to \(limits.maxQueues) (multi-queue-max-queues)")
            }
            let connection = try NetifConnectionKeys(
                xenstore: try await frontend.entries(NetifConnectionKeys.keys(queueCount: queueCount)),
                queueCount: queueCount, splitEventChannels: Self.advertised.splitEventChannels,
                controlRing: Self.advertised.controlRing)
            return NetbackFrontendRequest(features: features, connection: connection)
        } catch let error as XenbusError {
            logger.error("netback: refused frontend keys", metadata: ["error": "\(error)"])
            throw error
        } catch {
            logger.error("netback: refused frontend keys", metadata: ["error": "\(error)"])
            throw XenbusError.hookFailed(hook: "readFrontend", reason: "\(error)")
        }
    }

    public func connect(_ frontend: NetbackFrontendRequest, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        guard let tap = state.withLock({ $0.tap }) else {
            throw XenbusError.hookFailed(hook: "connect", reason: "no TAP device was made for \(backendPath)")
        }
        try await waitForHotplug()
        let features = NetbackGuestFeatures(frontend.features)
        var offloads: TapOffloads = []
        if features.checksumOffload {
            offloads.insert(.checksum)
            if features.gsoTCPv4 { offloads.insert(.tso4) }
            if features.gsoTCPv6 { offloads.insert(.tso6) }
        }
        do { try tap.setOffloads(offloads) } catch { throw NetbackError.tap(error) }
        var configuration = limits.queue
        let ratePath = backendPath + "/" + NetifToolstackKeys.rate
        if let text = try? await store.readString(ratePath) {
            // The toolstack's limit on what the guest sends, per queue as Linux applies it.
            do { configuration.rate = try NetifRate(xenstore: text) } catch {
                throw XenbusError.invalidValue(path: ratePath, value: text, expected: "BYTES,MICROSECONDS, both above 0")
            }
        }
        let descriptors = try tapQueues(tap, count: frontend.connection.queues.count)
        let multicast = NetbackMulticastFilter()
        multicast.apply(frontend.features.requestMulticastControl)
        let hashing = NetbackHashing(queueCount: descriptors.count)
        var connected: [Connected] = []
        var control: ControlConnected?
        var inboxes: [NetbackInbox] = []
        do {
            // Only a frontend with a control ring can set a mapping table that steers.
            if descriptors.count > 1, frontend.connection.control != nil {
                for _ in descriptors {
                    inboxes.append(try NetbackInbox(mapper: platform.grantMapper, capacity: Self.inboxSlots,
                                                    stride: NetbackQueue.stride))
                }
            }
            for (index, keys) in frontend.connection.queues.enumerated() {
                connected.append(try makeQueue(keys, index: index, of: descriptors.count, descriptor: descriptors[index],
                                               features: features, configuration: configuration, multicast: multicast,
                                               hashing: hashing, inboxes: inboxes, paths: paths))
            }
            if let keys = frontend.connection.control {
                control = try makeControlQueue(keys, hashing: hashing, worker: connected[0].worker, paths: paths)
            }
        } catch {
            for queue in connected.reversed() { await release(queue) }
            for inbox in inboxes { inbox.close() }
            throw error
        }
        let watch = Task { [store, logger] in
            await Self.follow(paths.frontend + "/" + NetifFrontendFeatures.Key.requestMulticastControl, filter: multicast,
                              store: store, logger: logger)
        }
        state.withLock {
            $0.connected = connected
            $0.carrierOn = true
            $0.multicastWatch = watch
            $0.control = control
            $0.hashing = hashing
            $0.inboxes = inboxes
        }
        try? tap.setCarrier(true)
        logger.info("netback: connected", metadata: [
            "interface": "\(tap.name)", "queues": "\(connected.count)",
            "split-event-channels": "\(connected[0].queue.txPort != connected[0].queue.rxPort)",
            "ctrl-ring": "\(control != nil)",
            "sg": "\(features.scatterGather)", "csum-offload": "\(features.checksumOffload)",
            "gso-tcpv4": "\(features.gsoTCPv4)", "gso-tcpv6": "\(features.gsoTCPv6)",
            "rate": "\(configuration.rate.map { "\($0.bytesPerInterval) bytes per \($0.intervalMicroseconds) us" } ?? "unlimited")"])
        return XenbusKeys()
    }

    public func disconnect(paths: XenbusDevicePaths, reason: String) async {
        let (connected, watch, control, inboxes) = state.withLock {
            value -> ([Connected], Task<Void, Never>?, ControlConnected?, [NetbackInbox]) in
            defer {
                value.connected = []
                value.multicastWatch = nil
                value.control = nil
                value.hashing = nil
                value.inboxes = []
            }
            return (value.connected, value.multicastWatch, value.control, value.inboxes)
        }
        watch?.cancel()
        if let tap = state.withLock({ $0.tap }) { try? tap.setCarrier(false) }
        if let control { await release(control) }
        guard !connected.isEmpty else { return }
        for queue in connected { await release(queue) }
        // Every queue is off its worker: none hands packets over any more.
        for inbox in inboxes { inbox.close() }
        logger.info("netback: disconnected", metadata: ["reason": "\(reason)"])
    }

    /// Closes the TAP device; called once, after the driver stopped.
    public func release() {
        let tap = state.withLock { value -> TapDevice? in
            defer { value.tap = nil }
            return value.tap
        }
        tap?.close()
    }

    public func housekeeping(store: XenStoreClient) async {
        guestLog.flush()
        guard let (connected, tap) = state.withLock({ s in s.tap.map { (s.connected, $0) } }), !connected.isEmpty else { return }
        // An idle vif whose carrier is on has nothing to check: no wake-up of its workers.
        let watched = connected.filter { $0.queue.watchesStall.load(ordering: .relaxed) }
        guard !watched.isEmpty || !state.withLock({ $0.carrierOn }) else { return }
        // The carrier is off while any queue's guest side is stalled, as Linux's netback does.
        let carrier = Mutex(true)
        let policy = limits.stall
        for queue in watched {
            do {
                try await queue.worker.perform(on: queue.queue) { queue in
                    let on = queue.checkStall(now: .now, policy: policy)
                    carrier.withLock { $0 = $0 && on }
                }
            } catch {
                return
            }
        }
        let on = carrier.withLock { $0 }
        let changed = state.withLock { s -> Bool in
            defer { s.carrierOn = on }
            return s.carrierOn != on
        }
        guard changed else { return }
        try? tap.setCarrier(on)
        logger.notice(on ? "netback: guest posts rx buffers again; carrier on" : "netback: guest stalled (no rx buffers); carrier off",
                      metadata: ["interface": "\(tap.name)"])
    }

    // MARK: Internals

    /// Makes the vif's TAP device once (it outlives reconnections, as Linux's vif does):
    /// named by `vifname` or vifDOMID.DEVID, MTU from `mtu`, netback's MAC address.
    private func makeTap(_ paths: XenbusDevicePaths) async throws {
        guard state.withLock({ $0.tap }) == nil else { return }
        let name = (try? await store.readString(paths.backend + "/" + NetifToolstackKeys.vifName))
            ?? "vif\(paths.frontendID).\(paths.devid)"
        var mtu = NetifToolstackKeys.defaultMTU
        if let text = try? await store.readString(paths.backend + "/" + NetifToolstackKeys.mtu) {
            guard let value = Int(text), (68...65535).contains(value) else {
                throw XenbusError.invalidValue(path: paths.backend + "/" + NetifToolstackKeys.mtu, value: text,
                                               expected: "a decimal from 68 to 65535")
            }
            mtu = value
        }
        let tap: TapDevice
        do {
            // Multi-queue when more than one queue pair is offered: one TAP queue per netif queue.
            tap = try TapDevice(name: name, multiQueue: limits.maxQueues > 1, in: limits.namespace)
            try tap.setMTU(mtu)
            try tap.setHardwareAddress(.netbackVif)
            try tap.setCarrier(false)
        } catch {
            logger.error("netback: cannot make the TAP device", metadata: ["interface": "\(name)", "error": "\(error)"])
            throw NetbackError.tap(error)
        }
        state.withLock { $0.tap = tap }
        logger.info("netback: TAP device made", metadata: ["interface": "\(tap.name)", "mtu": "\(mtu)"])
    }

    /// io/netif.h, feature-dynamic-multicast-control: the frontend may set or clear
    /// request-multicast-control at any time, and the backend re-samples it on each watch
    /// event, until the task is cancelled (disconnect).
    private static func follow(_ path: String, filter: NetbackMulticastFilter, store: XenStoreClient,
                               logger: Logger) async {
        guard let watch = try? await store.watch(path) else {
            logger.warning("netback: cannot watch request-multicast-control; its value at connect stays", metadata: ["path": "\(path)"])
            return
        }
        await withTaskCancellationHandler {
            for await _ in watch {
                let value = try? await store.readString(path)
                let on = value == "1"
                if on != filter.isApplied {
                    filter.apply(on)
                    logger.info("netback: multicast filter \(on ? "applied" : "lifted") by the frontend", metadata: ["path": "\(path)"])
                }
            }
        } onCancel: {
            Task { try? await watch.cancel() }
        }
    }

    /// Waits for the hotplug script's `hotplug-status` to read `connected`.
    private func waitForHotplug() async throws {
        let path = backendPath + "/" + NetifToolstackKeys.hotplugStatus
        let clock = ContinuousClock()
        let deadline = clock.now + limits.hotplugTimeout
        var pause = Duration.milliseconds(5)
        var logged = false
        while true {
            let status = try? await store.readString(path)
            if status == NetifToolstackKeys.hotplugConnected { return }
            if status == "error" {
                let why = try? await store.readString(backendPath + "/" + NetifToolstackKeys.hotplugError)
                throw NetbackError.hotplugFailed(path: backendPath, error: why)
            }
            guard clock.now < deadline else {
                throw NetbackError.hotplugTimeout(path: backendPath, seconds: Int(limits.hotplugTimeout.components.seconds))
            }
            if !logged, pause >= .milliseconds(200) {
                logged = true
                logger.info("netback: waiting for the vif script's hotplug-status", metadata: ["path": "\(path)"])
            }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(200))
        }
    }

    /// The TAP queues for `count` netif queues: the device's first, more attached as
    /// needed, and any left from a connection with more queues closed (the kernel would
    /// steer packets to a queue nobody reads).
    private func tapQueues(_ tap: TapDevice, count: Int) throws -> [Int32] {
        do {
            while tap.queues.count < count { try tap.attachQueue() }
            for extra in tap.queues.dropFirst(count) { try tap.closeQueue(extra) }
        } catch {
            throw NetbackError.tap(error)
        }
        let descriptors = tap.queues
        guard descriptors.count == count else { throw NetbackError.tap(.closed(device: tap.name)) }
        return descriptors
    }

    private func makeQueue(_ keys: NetifConnectionKeys.Queue, index: Int, of count: Int, descriptor: Int32,
                           features: NetbackGuestFeatures, configuration: NetbackQueueConfiguration,
                           multicast: NetbackMulticastFilter, hashing: NetbackHashing, inboxes: [NetbackInbox],
                           paths: XenbusDevicePaths) throws -> Connected {
        let mapper = platform.grantMapper
        // The descriptor stays non-blocking, as TapDevice opened it: the queue polls it and
        // reads it itself (NetbackQueue.receive), and a TAP write never waits.
        let txMapping = try mapper.map([keys.txRingRef], from: paths.frontendID, writable: true)
        var mappings = [txMapping]
        do {
            let rxMapping = try mapper.map([keys.rxRingRef], from: paths.frontendID, writable: true)
            mappings.append(rxMapping)
            let txShared = try SharedRing(memory: txMapping.view, entrySize: NetifLayout.txSlotSize)
            let rxShared = try SharedRing(memory: rxMapping.view, entrySize: NetifLayout.rxSlotSize)
            let channel = try platform.openEventChannel()
            do {
                let txPort: EventPort, rxPort: EventPort
                switch keys.eventChannels {
                case let .shared(port):
                    txPort = try channel.bindInterdomain(remote: paths.frontendID, remotePort: port)
                    rxPort = txPort
                case let .split(tx, rx):
                    txPort = try channel.bindInterdomain(remote: paths.frontendID, remotePort: tx)
                    rxPort = try channel.bindInterdomain(remote: paths.frontendID, remotePort: rx)
                }
                let queue = try NetbackQueue(
                    name: count > 1 ? "\(backendPath)/queue-\(index)" : backendPath, frontendDomain: paths.frontendID,
                    txRing: BackRing(attaching: txShared, at: txShared.loadResponseProducer()),
                    rxRing: BackRing(attaching: rxShared, at: rxShared.loadResponseProducer()),
                    eventChannel: channel, txPort: txPort, rxPort: rxPort, mapper: mapper, tapDescriptor: descriptor,
                    features: features, configuration: configuration, multicast: multicast, hashing: hashing,
                    index: index, inboxes: inboxes, logger: logger, guestLog: guestLog)
                let worker = placement.take()
                do {
                    try worker.addQueue(queue) { [weak self, weak queue] in
                        // On the worker's thread: the queue's state is ours to read. A
                        // report from a connection already torn down changes nothing.
                        guard let self, let queue, let reason = queue.disconnectReason, self.serves(queue) else { return }
                        // The error node names the device already: name the queue only if several.
                        self.reportViolation(count > 1 ? "queue-\(index): \(reason)" : "\(reason)")
                    }
                } catch {
                    placement.give(worker)
                    try? queue.close()
                    throw NetbackError.worker(error)
                }
                return Connected(queue: queue, worker: worker, mappings: mappings, channel: channel)
            } catch {
                channel.close()
                throw error
            }
        } catch {
            for mapping in mappings { try? mapper.unmap(mapping) }
            throw error
        }
    }

    func serves(_ queue: NetbackQueue) -> Bool {
        state.withLock { $0.connected.contains { $0.queue === queue } }
    }

    /// Maps the control ring, binds its channel and puts its queue on `worker` (queue 0's:
    /// a few requests at setup do not earn a worker of their own).
    private func makeControlQueue(_ keys: NetifConnectionKeys.Control, hashing: NetbackHashing, worker: BackendWorker,
                                  paths: XenbusDevicePaths) throws -> ControlConnected {
        let mapper = platform.grantMapper
        let mapping = try mapper.map([keys.ringRef], from: paths.frontendID, writable: true)
        do {
            let shared = try SharedRing(memory: mapping.view, entrySize: NetifLayout.ctrlSlotSize)
            let channel = try platform.openEventChannel()
            do {
                let port = try channel.bindInterdomain(remote: paths.frontendID, remotePort: keys.eventChannel)
                let queue = try NetbackControlQueue(
                    name: backendPath + "/ctrl", frontendDomain: paths.frontendID,
                    ring: BackRing(attaching: shared, at: shared.loadResponseProducer()), eventChannel: channel, port: port,
                    mapper: mapper, hashing: hashing, guestLog: guestLog)
                do {
                    try worker.addQueue(queue) { [weak self, weak queue] in
                        guard let self, let queue, let reason = queue.disconnectReason, self.serves(queue) else { return }
                        self.reportViolation("ctrl-ring: \(reason)")
                    }
                } catch {
                    queue.close()
                    throw NetbackError.worker(error)
                }
                return ControlConnected(queue: queue, worker: worker, mapping: mapping, channel: channel)
            } catch {
                channel.close()
                throw error
            }
        } catch {
            try? mapper.unmap(mapping)
            throw error
        }
    }

    func serves(_ queue: NetbackControlQueue) -> Bool {
        state.withLock { $0.control?.queue === queue }
    }

    private func release(_ control: ControlConnected) async {
        do {
            try await control.worker.removeQueue(control.queue)
        } catch {
            logger.error("netback: removing the control queue from its worker failed", metadata: ["error": "\(error)"])
        }
        control.queue.close()
        control.channel.close()
        do { try platform.grantMapper.unmap(control.mapping) } catch {
            logger.error("netback: unmapping the control ring failed", metadata: ["error": "\(error)"])
        }
    }

    private func release(_ connected: Connected) async {
        do {
            try await connected.worker.removeQueue(connected.queue)
        } catch {
            logger.error("netback: removing a queue from its worker failed", metadata: ["error": "\(error)"])
        }
        placement.give(connected.worker)
        logger.info("netback: vif statistics", metadata: ["statistics": "\(connected.queue.statistics)"])
        try? connected.queue.close()
        connected.channel.close()
        for mapping in connected.mappings {
            do { try platform.grantMapper.unmap(mapping) } catch {
                logger.error("netback: unmapping a ring failed", metadata: ["error": "\(error)"])
            }
        }
    }


}
