import Glibc
import Netif
import SharedMemory
import XenBus
import XenPlatform
import XenRing
import XenStore

/// A scripted netfront for conformance runs against a net backend: it speaks xenbus,
/// `io/netif.h` keys and rings and the control ring itself, step by step, on the wire
/// modules and the platform's grants and event channels, so a check can behave, or lie,
/// at any step. The host end of the vif (``VifHostSide``) is where it sees what the
/// backend made of its packets and where it makes packets for it. It is no device:
/// nothing here is shared with NetFrontend.
///
/// Used by one task at a time (the runner runs clauses one after the other).
public final class NetfrontPeer: ConformancePeer, ScriptedFrontend, @unchecked Sendable {
    // SAFETY (@unchecked): the runner calls checks one at a time, on one task.

    /// How long a state change or a response may take: a safety net, not a timing requirement.
    public static let patience: Duration = .seconds(15)
    /// How long the peer watches a backend after a lie for it to refuse.
    public static let refusalWindow: Duration = .seconds(3)
    /// How long a frame may take to cross the backend before it counts as not delivered.
    public static let crossing: Duration = .seconds(10)

    let platform: any Platform
    let store: XenStoreClient
    /// dom0's xenstore, for what the guest may not read or write (the error node,
    /// hotplug-status); nil when the run has none.
    let observer: XenStoreClient?
    public let frontendPath: String
    public let backendPath: String
    /// The backend's directory as the peer reads it.
    let backend: XenbusOtherEnd
    public let backendID: DomainID
    public let host: VifHostSide
    /// The guest's MAC address, from the frontend node the toolstack wrote.
    public let mac: [UInt8]
    /// Data pages granted writable to the backend: 0..<16 carry tx data, 16..<32 take rx data.
    let data: SharedPages
    static let txPages = 0 ..< 16
    static let rxPages = 16 ..< 32
    /// One page granted read-only, for control-ring keys and tables.
    let controlData: SharedPages
    var stale: [SharedPages] = []
    var written: Set<String> = []
    var connection: NetfrontConnection?
    var isConnected = false
    var atInitWait: [String: String] = [:]
    var atConnected: [String: String] = [:]
    /// Every rx response flags value seen, for NETIF-BE-021.
    var rxFlagsSeen: Set<UInt16> = []
    /// rx responses that did not decode (flags or status unknown), for NETIF-BE-021.
    var rxDecodeErrors: [String] = []
    var nextTxID: UInt16 = 1
    var nextCtrlID: UInt16 = 1
    /// The clause running now (``willRun(_:)``).
    var currentClause = "-"
    /// Set when a tx request went unanswered for the whole ``patience``: which clause saw
    /// it. Until a tx response comes again, a tx wait gives the backend only
    /// ``refusalWindow`` and fails as a knock-on of that clause (a backend that disabled
    /// the vif answers no tx, and each later clause would wait out the patience for nothing).
    var txStalled: String?

    public func willRun(_ clause: String) { currentClause = clause }
    var frameSeed: UInt64 = 0xC0F_FEE

    /// Joins the vif whose frontend node is `frontendPath` as its domain on `platform`.
    public init(platform: any Platform, frontendPath: String, host: VifHostSide, observer: XenStoreClient? = nil) async throws {
        self.platform = platform
        self.observer = observer
        self.frontendPath = frontendPath
        self.host = host
        do { store = try platform.connectXenStore() } catch { throw PeerError.platform("xenstore: \(error)") }
        do {
            let directory = try await store.readString(frontendPath + "/backend")
            let id = try await store.readString(frontendPath + "/backend-id")
            guard let domain = DomainID(id) else { throw PeerError.badFrontendNode("backend-id reads \(id)") }
            let text = try await store.readString(frontendPath + "/mac")
            let octets = text.split(separator: ":").compactMap { UInt8($0, radix: 16) }
            guard octets.count == 6 else { throw PeerError.badFrontendNode("mac reads \(text)") }
            backendPath = directory
            backend = XenbusOtherEnd(store: store, path: directory)
            backendID = domain
            mac = octets
        } catch let error as PeerError {
            store.close()
            throw error
        } catch {
            store.close()
            throw PeerError.badFrontendNode("\(frontendPath): \(error)")
        }
        do {
            data = try platform.grantTable.share(pages: 32, with: backendID, writable: true)
            controlData = try platform.grantTable.share(pages: 1, with: backendID, writable: false)
        } catch {
            store.close()
            throw PeerError.platform("granting data pages: \(error)")
        }
    }

    public func targetNodes() async throws -> [String: String] {
        try await ensureConnected()
        return atConnected
    }

    // MARK: xenstore (the backend is read through ScriptedFrontend)

    func writeState(_ state: XenbusState) async throws { try await writeState(state.nodeValue) }

    func writeState(_ raw: String) async throws { try await store.write(frontendPath + "/state", raw) }

    /// The backend's error node, through the observer when there is one.
    func errorNode() async -> String? {
        let home = "/local/domain/\(backendID)/"
        guard backendPath.hasPrefix(home) else { return nil }
        return try? await (observer ?? store).readString(home + "error/" + backendPath.dropFirst(home.count) + "/error")
    }

    /// What the vif hotplug script does once the backend made the interface: the host
    /// side attached (and plugged, if the peer stands in for the script).
    func plug() async throws {
        let name = atInitWait["vifname"] ?? "vif\(frontendDomain).\(frontendPath.split(separator: "/").last ?? "0")"
        try host.attach(name)
        guard host.plugs else { return }
        guard let observer else { throw PeerError.unusable("standing in for the vif script needs dom0's xenstore to write hotplug-status") }
        try await observer.write(backendPath + "/hotplug-status", "connected")
    }

    /// The frontend's domain, from its path (`/local/domain/N/device/vif/D`).
    var frontendDomain: String {
        let parts = frontendPath.split(separator: "/")
        return parts.count > 2 ? String(parts[2]) : "?"
    }

    // MARK: handshake

    /// What a netfront publishes at Initialised; `tamper` lies on top of it.
    public struct Handshake: Sendable {
        public var queues = 1
        public var splitEventChannels = false
        public var controlRing = false
        /// rx buffers posted per queue before Initialised.
        public var rxBuffers = 8
        public var features: NetifFrontendFeatures = {
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            return features
        }()
        public var tamper: @Sendable (inout [String: String]) -> Void = { _ in }

        public init() {}

        /// Whether this is the plain handshake ``NetfrontPeer/ensureConnected()`` reuses.
        var isPlain: Bool { queues == 1 && !splitEventChannels && !controlRing }
    }

    /// Brings the vif to the start of a handshake, as a reloaded netfront does: Closing,
    /// Closed, rings given up, Initialising, and the backend's InitWait.
    public func startOver(force: Bool = false) async throws {
        if !force, connection == nil, await backendState() == .initWait,
           (try? await store.readString(frontendPath + "/state")) == XenbusState.initialising.nodeValue {
            if atInitWait.isEmpty {
                atInitWait = try await backendNodes()
                try await plug()
            }
            return
        }
        var current = await backendState()
        if current == nil || current == .initialising || current == .unknown {
            current = try await waitForBackend([.initWait, .initialised, .connected, .closing, .closed])
        }
        if current != .initWait {
            try await writeState(.closing)
            try await waitForBackend([.closing, .closed])
            try await writeState(.closed)
            try await waitForBackend([.closed])
        }
        release()
        for key in written.sorted() { try? await store.rm(frontendPath + "/" + key) }
        written = []
        try await writeState(.initialising)
        try await waitForBackend([.initWait])
        atInitWait = try await backendNodes()
        try await plug()
    }

    func release() {
        guard let connection else { return }
        self.connection = nil
        isConnected = false
        atConnected = [:]
        stale += connection.release()
    }

    /// Grants rings, posts rx buffers and publishes the keys with Connected in one
    /// transaction: a netif frontend moves to Connected once its keys are in, and the
    /// backend reads them on that move (io/netif.h, the control ring and multicast keys);
    /// Linux's xen-netback waits for it and does nothing on Initialised.
    public func publish(_ handshake: Handshake = Handshake()) async throws {
        let connection = try NetfrontConnection(platform: platform, backend: backendID, handshake: handshake)
        self.connection = connection
        let perQueue = Self.rxPages.count / max(handshake.queues, 1)
        for queue in connection.queues.indices {
            let pages = Self.rxPages.lowerBound + queue * perQueue ..< Self.rxPages.lowerBound + (queue + 1) * perQueue
            for (id, page) in pages.prefix(handshake.rxBuffers).enumerated() { try postRx(id: UInt16(id), page: page, queue: queue) }
            pushRx(queue: queue)
        }
        var features = handshake.features
        if handshake.queues > 1 { features.queueCount = UInt32(handshake.queues) }
        var keys = features.xenstoreEntries.merging(connection.keys.xenstoreEntries) { $1 }
        handshake.tamper(&keys)
        let path = frontendPath
        let sorted = keys.sorted { $0.key < $1.key }
        try await store.withTransaction { tx in
            for (key, value) in sorted { try await tx.write(path + "/" + key, value) }
            try await tx.write(path + "/state", XenbusState.connected.nodeValue)
        }
        written.formUnion(sorted.map { String($0.key.split(separator: "/").first ?? "") })
    }

    public func connect(_ handshake: Handshake = Handshake()) async throws {
        try await publish(handshake)
        try await waitForBackend([.connected])
        atConnected = try await backendNodes()
        isConnected = true
        // Not a requirement on the backend: the host's own link watch lags its carrier.
        _ = try await host.waitRunning(within: .seconds(10))
        host.drain()
    }

    /// A connected vif with one queue, a shared event channel and no control ring.
    public func ensureConnected() async throws {
        if isConnected, connection?.handshake.isPlain == true, await backendState() == .connected { return }
        try await startOver()
        try await connect()
    }

    @discardableResult
    public func close() async -> Int {
        let pending = stale + [data, controlData]
        stale = []
        return await closeDown(releasing: pending)
    }
}
