import Logging
import Netif
import Tap
import XenBus
import XenDevice
import XenPlatform
import XenStore

/// A virtual network interface seen from the guest side: a userspace netfront
/// (`io/netif.h`) whose guest end is a TAP device, so ordinary tools (ping, iperf3,
/// tcpdump) use the vif.
///
/// It attaches to `device/vif/<devid>` of its domain through ``XenbusFrontendDevice``:
/// reads the backend's features and the toolstack's `mac` and `mtu`, grants a tx and an
/// rx ring and its buffer pages, publishes them with one event channel (two when the
/// backend offers `feature-split-event-channels`) and its own features: grant-copy
/// receive, rx notifications, scatter-gather, TCPv4/v6 GSO and checksum offload both
/// ways.
///
/// Queue pairs (`io/netif.h`, "Multiple transmit and receive queues"): as many as asked
/// for, or one per core up to the backend's `multi-queue-max-queues`; several pairs write
/// `multi-queue-num-queues` and their keys under `queue-N/`. A multi-queue TAP device
/// (IFF_MULTI_QUEUE) gets one TAP queue per pair, so the kernel spreads the guest's flows
/// over the pairs; the pairs are spread over up to one I/O thread per core.
///
/// Frames the TAP device hands over become tx chains (a page per fragment, checksum and
/// GSO as the backend takes them, the TAP's offloads set to exactly those); the rx rings
/// are kept full of pages and what arrives is written to the TAP device with its
/// virtio-net header. When the backend goes away and comes back, the frontend connects
/// again and the TAP carrier follows; a backend that breaks the protocol is disconnected
/// with the reason (``violation``).
public final class NetFrontend: Sendable {
    /// The frontend node, `/local/domain/<domid>/device/vif/<devid>`.
    public let frontendPath: String
    let core: NetFrontendCore
    let device: XenbusFrontendDevice<NetFrontendHooks>
    let store: XenStoreClient

    /// The xenstore device type of a vif.
    public static let deviceType = "vif"

    /// The most queue pairs a frontend uses (as many as a multi-queue TAP device may have).
    public static let maxQueues = 256

    /// Starts the frontend of vif `devid` of this domain over `platform`, with `txBuffers`
    /// pages per queue pair for frames in flight to the backend (at least one largest
    /// frame's), and `queues` queue pairs (1...``maxQueues``; nil: one per core, at most
    /// what the backend offers). A backend offering fewer than `queues` is refused:
    /// ``connected()`` throws ``NetFrontendError/queuesNotOffered(requested:offered:)``
    /// and the device walks to Closed (call ``close(grantWaitSeconds:)`` as ever).
    public init(platform: any Platform, devid: UInt32, txBuffers: Int = 256, queues: Int? = nil,
                logger: Logger = Logger(label: "xensplit.netfront")) throws(NetFrontendError) {
        core = try NetFrontendCore(platform: platform, txBuffers: max(txBuffers, NetFrontendTxPlan.maxFragments),
                                   queues: queues, logger: logger)
        let store: XenStoreClient
        do { store = try platform.connectXenStore() } catch { throw .platform(error) }
        self.store = store
        frontendPath = "/local/domain/\(platform.domainID)/device/\(Self.deviceType)/\(devid)"
        device = XenbusFrontendDevice(store: store, frontend: frontendPath,
                                      hooks: NetFrontendHooks(core: core, store: store), logger: logger)
        let device = self.device
        core.violationSink.withLock { $0 = { reason in device.reportViolation(reason) } }
        // Not awaited: the refusal is found inside the driver's own loop.
        core.refusalSink.withLock { $0 = { Task { _ = await device.close() } } }
        let core = self.core
        Task {
            _ = await device.stopped()
            core.close()
        }
    }

    /// Waits until the frontend's driver stops and says why: ``close(grantWaitSeconds:)``
    /// (or a refusal of the backend) closed it, the toolstack removed the device, or the
    /// xenstore connection closed (the hypervisor went away).
    public func stopped() async -> XenbusStopReason { await device.stopped() }

    /// The xenbus state the frontend last wrote.
    public var state: XenbusState { device.state }

    /// Waits until the backend connected (at once if it is now) and returns what was
    /// negotiated; throws if the frontend closed or refuses the backend (too few queue
    /// pairs offered).
    public func connected() async throws -> NetFrontendLink {
        try await core.connected()
    }

    /// The toolstack's `mac` and `mtu` for this vif, read from the frontend node now (they
    /// are there before any backend is): what to give the TAP device before it connects.
    public func vifSettings() async throws(NetFrontendError) -> NetifVifSettings {
        let node = XenbusNodeReader(store: store, path: frontendPath)
        var entries: [String: String] = [:]
        do {
            for key in [NetifVifSettings.Key.mac, NetifVifSettings.Key.mtu] {
                if let value = try await node.optionalString(key) { entries[key] = value }
            }
        } catch {
            throw .xenbus(error)
        }
        do { return try NetifVifSettings(xenstore: entries) } catch { throw .node(error) }
    }

    /// What the current connection negotiated, or nil while none is up.
    public var link: NetFrontendLink? { core.state.withLock { $0.connection == nil ? nil : $0.link } }

    /// Makes `tap` (made with a virtio-net header, as ``TapDevice`` is) the guest side:
    /// frames it transmits go to the backend, packets from the backend are written to it.
    /// Its offloads, address, MTU and carrier follow each connection; made with
    /// `multiQueue`, it gets (through ``TapDevice/attachQueue()``) exactly one TAP queue
    /// per queue pair of each connection, else its one queue carries all pairs. One TAP
    /// device per frontend (a second throws ``NetFrontendError/tapAlreadyAttached(_:)``).
    /// The caller keeps owning it and closes it after ``close(grantWaitSeconds:)``.
    public func attachTap(_ tap: TapDevice) throws(NetFrontendError) {
        try core.attach(tap)
    }

    /// Packet counts so far, all queue pairs together.
    public var counters: NetifCounters {
        core.queueCounters.reduce(into: NetifCounters()) { sum, queue in
            sum.txPackets += queue.txPackets
            sum.txBytes += queue.txBytes
            sum.txDropped += queue.txDropped
            sum.txErrors += queue.txErrors
            sum.rxPackets += queue.rxPackets
            sum.rxBytes += queue.rxBytes
            sum.rxDropped += queue.rxDropped
            sum.rxErrors += queue.rxErrors
        }
    }

    /// Packet counts so far per queue pair (pair 0 first), for as many pairs as this
    /// frontend may use; a pair counts across connections.
    public var queueCounters: [NetifCounters] { core.queueCounters }

    /// Handshakes completed (a backend restart adds one).
    public var connections: Int { core.state.withLock { $0.connections } }

    /// How the backend last broke `io/netif.h`, which disconnected it; nil if it never did.
    public var violation: NetFrontendError? { core.state.withLock { $0.violation } }

    /// Page sets granted and not yet given back (rings and buffers).
    public var grantedPageSets: Int { core.grants.outstanding }

    /// Closes the device: xenbus Closing and Closed, the TAP device let go (carrier off),
    /// every grant ended (retrying for up to `grantWaitSeconds` while the backend still
    /// maps pages). Returns how many page sets could not be given back in that time.
    @discardableResult
    public func close(grantWaitSeconds: Int = 5) async -> Int {
        await device.close()
        core.close()
        var remaining = core.releaseDeferred()
        let deadline = ContinuousClock.now + .seconds(grantWaitSeconds)
        while remaining > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
            remaining = core.releaseDeferred()
        }
        if remaining > 0 {
            core.logger.error("netfront: \(remaining) granted page sets still mapped by the backend after \(grantWaitSeconds) s")
        }
        store.close()
        return remaining
    }
}
