import Netif
import SharedMemory
import Tap
import XenBus
import XenPlatform
import XenRing
import XenStore

/// A scripted netback for conformance runs against a net frontend: it writes the
/// backend's keys and states itself (``ScriptedBackend``), maps the tx and rx rings the
/// frontend published and binds its event channel(s) on the platform. It is no device:
/// nothing is shared with NetBackend. Used by one task at a time.
public final class NetbackPeer: ScriptedBackend, @unchecked Sendable {
    // SAFETY (@unchecked): the runner calls checks one at a time, on one task.

    /// A safety net for a target that hangs, not a timing requirement.
    public static let patience: Duration = .seconds(15)
    /// How long the peer watches a frontend after a lie.
    public static let refusalWindow: Duration = .seconds(2)

    /// Keys of an honest netback before InitWait: rx copy, one queue, nothing optional.
    public static let honestFeatures: [String: String] = {
        var features = NetifBackendFeatures()
        features.rxCopy = true
        features.maxQueues = 1
        return features.xenstoreEntries
    }()

    let platform: any Platform
    let store: XenStoreClient
    let frontendPath: String
    let backendPath: String
    let frontendID: DomainID
    var own: XenbusState = .unknown
    let frontend: XenbusOtherEnd
    var connectedEarly: [String] = []
    var atInitialised: [String: String] = [:]
    var mapProblem: String?
    var written: Set<String> = []
    var offered: [String: String] = [:]
    /// Queue 0's tx and rx ring pages, as mapped.
    var tx: GrantMapping?
    var rx: GrantMapping?
    /// Each ring's header (req_prod, req_event, rsp_prod, rsp_event) as first mapped.
    var headersAtMap: (tx: [UInt32], rx: [UInt32]) = ([], [])
    var events: (any EventChannel)?
    var ports: [EventPort] = []
    /// The backend's end of queue 0's tx and rx rings.
    var txRing: BackRing?
    var rxRing: BackRing?
    /// Every tx slot consumed since the last ``forgetTx()``.
    var txSeen: [SeenTxSlot] = []
    /// Tx slots consumed and not yet answered: their index and id (nil for an extra slot).
    var txUnanswered: [(index: RingIndex, id: UInt16?)] = []
    /// The next slot to consume is an extra-info slot.
    var pendingExtra = false
    /// Packets (first slots) consumed since the last ``forgetTx()``.
    var txPackets = 0
    /// The last request consumed had more_data: the next continues its packet.
    var inPacket = false
    /// The frontend takes each device once (Linux's netfront answers InitWait only from
    /// Initialising): the clauses that show it serves again stop short of the second handshake.
    public var takesDeviceOnce = false
    /// The frontend's user side: its TAP device in its namespace, or a guest's interface
    /// through an agent.
    let host: (any FrontendFrames)?
    /// The user side's interface: the TAP device's name, or the guest's (name or MAC).
    let tap: String?

    /// Serves the vif whose frontend node is `frontendPath`, acting as its backend domain
    /// on `platform`: the node's `backend` must be under that domain's home. `tap` is the
    /// frontend's TAP device in `namespace` (nil: this process's), through which the
    /// checks that need packets send them; with `agent`, `tap` is the guest's interface
    /// (its name or MAC address) and the agent in the guest sends and receives there.
    public init(platform: any Platform, frontendPath: String, tap: String? = nil, namespace: NetworkNamespace? = nil,
                agent: FrontendAgent? = nil) async throws {
        self.platform = platform
        self.tap = tap
        if tap == nil {
            host = nil
        } else if let agent {
            host = AgentFrames(agent: agent)
        } else {
            host = VifHostSide(namespace: namespace, plugs: false)
        }
        self.frontendPath = frontendPath
        (store, frontend, backendPath, frontendID) = try await Self.open(platform: platform, frontendPath: frontendPath)
        watchForEarlyConnect()
    }

    var honestOffer: [String: String] { Self.honestFeatures }
    var honestConnect: [String: String] { [:] }
    var isAttached: Bool { tx != nil && rx != nil }

    /// Queue 0's key prefix: `queue-0/` when the frontend asked for several queues.
    var queuePrefix: String {
        (atInitialised[NetifFrontendFeatures.Key.queueCount].flatMap(Int.init) ?? 1) > 1 ? "queue-0/" : ""
    }

    /// Queue 0's ring grants and event channel(s) as the frontend published them.
    static func ringKeys(_ nodes: [String: String]) -> (ring: String?, port: String?) {
        let prefix = (nodes[NetifFrontendFeatures.Key.queueCount].flatMap(Int.init) ?? 1) > 1 ? "queue-0/" : ""
        let ring = nodes[prefix + NetifConnectionKeys.Key.txRingRef].flatMap { tx in nodes[prefix + NetifConnectionKeys.Key.rxRingRef].map { "\(tx)/\($0)" } }
        let port = nodes[prefix + NetifConnectionKeys.Key.eventChannel]
            ?? nodes[prefix + NetifConnectionKeys.Key.eventChannelTx].flatMap { tx in nodes[prefix + NetifConnectionKeys.Key.eventChannelRx].map { "\(tx)/\($0)" } }
        return (ring, port)
    }

    /// Maps queue 0's tx-ring-ref and rx-ring-ref and binds its event channel(s).
    func attach() {
        headersAtMap = ([], [])
        let prefix = queuePrefix
        var mapped: [GrantMapping] = []
        for key in [NetifConnectionKeys.Key.txRingRef, NetifConnectionKeys.Key.rxRingRef] {
            guard let raw = atInitialised[prefix + key], let ref = GrantRef(raw) else {
                mapProblem = "\(prefix + key) reads \(atInitialised[prefix + key] ?? "absent")"
                return
            }
            do { mapped.append(try platform.grantMapper.map([ref], from: frontendID, writable: true)) } catch {
                mapProblem = "\(prefix + key) \(ref) does not map: \(error)"
                for mapping in mapped { try? platform.grantMapper.unmap(mapping) }
                return
            }
        }
        (tx, rx) = (mapped[0], mapped[1])
        txRing = try? BackRing(SharedRing(memory: mapped[0].view, entrySize: NetifLayout.txSlotSize))
        rxRing = try? BackRing(SharedRing(memory: mapped[1].view, entrySize: NetifLayout.rxSlotSize))
        txUnanswered = []
        pendingExtra = false
        inPacket = false
        let header = { (m: GrantMapping) in (0 ..< 4).map { m.view.load(UInt32.self, at: $0 * 4) } }
        headersAtMap = (header(mapped[0]), header(mapped[1]))
        let keys = atInitialised[prefix + NetifConnectionKeys.Key.eventChannel] != nil ? [NetifConnectionKeys.Key.eventChannel]
            : [NetifConnectionKeys.Key.eventChannelTx, NetifConnectionKeys.Key.eventChannelRx]
        do {
            let channel = try platform.openEventChannel()
            events = channel
            for key in keys {
                guard let raw = atInitialised[prefix + key], let remote = EventPort(raw) else {
                    mapProblem = "\(prefix + key) reads \(atInitialised[prefix + key] ?? "absent")"
                    return
                }
                ports.append(try channel.bindInterdomain(remote: frontendID, remotePort: remote))
            }
        } catch {
            mapProblem = "event channel does not bind: \(error)"
        }
    }

    /// Lets go of the rings and the ports.
    func detach() {
        if let events { for port in ports { try? events.unbind(port) } }
        events?.close()
        events = nil
        ports = []
        for mapping in [tx, rx].compactMap({ $0 }) { try? platform.grantMapper.unmap(mapping) }
        (tx, rx) = (nil, nil)
        txRing = nil
        rxRing = nil
        txUnanswered = []
    }

    /// Forgets the tx slots seen, for a check that judges only its own.
    func forgetTx() {
        txSeen = []
        txPackets = 0
    }

    /// Closes the device and the peer's connection.
    public func close() async {
        try? await startOver()
        store.close()
    }
}
