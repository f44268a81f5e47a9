import XenBus
import XenPlatform
import XenStore

/// A scripted backend (of any device type) in the frontend role's runs: it writes the
/// backend's keys and states itself, step by step, so a check can offer honest or lying
/// keys at any step and watch what the frontend does. The device's own part is what it
/// offers and how it attaches to the rings the frontend published.
protocol ScriptedBackend: ConformancePeer {
    var platform: any Platform { get }
    var store: XenStoreClient { get }
    var frontendPath: String { get }
    var backendPath: String { get }
    var frontendID: DomainID { get }
    /// The frontend's directory as the peer reads it.
    var frontend: XenbusOtherEnd { get }
    /// The state the peer last wrote.
    var own: XenbusState { get set }
    /// Keys the peer wrote besides the state, removed when it starts over.
    var written: Set<String> { get set }
    /// The features offered with the last InitWait.
    var offered: [String: String] { get set }
    /// The frontend's nodes when its state first read Initialised (or Connected) this handshake.
    var atInitialised: [String: String] { get set }
    /// Frontend states read as Connected while the peer was not (XENBUS-017).
    var connectedEarly: [String] { get set }
    /// Why this handshake's rings did not map, if they did not.
    var mapProblem: String? { get set }
    /// What an honest backend of the device offers with InitWait.
    var honestOffer: [String: String] { get }
    /// What an honest backend of the device writes with Connected.
    var honestConnect: [String: String] { get }
    /// The rings the frontend published are mapped and bound.
    var isAttached: Bool { get }
    /// Maps and binds the rings ``atInitialised`` names, or sets ``mapProblem``.
    func attach()
    /// Lets go of the rings and ports.
    func detach()
    /// Called once the peer wrote Connected: a peer that serves its rings while it waits
    /// starts doing so.
    func didWriteConnected()
    /// The frontend takes each device once (see ``BlkbackPeer/takesDeviceOnce``).
    var takesDeviceOnce: Bool { get }
    /// How long a state change may take before the peer gives up (a safety net).
    static var patience: Duration { get }
    /// How long the peer watches a frontend after a lie: negative clauses are time-boxed by it.
    static var refusalWindow: Duration { get }
}

extension ScriptedBackend {
    func didWriteConnected() {}

    /// Connects to xenstore on `platform` and finds the backend of the device whose
    /// frontend node is `frontendPath` (``locate(_:platform:frontendPath:)``).
    static func open(platform: any Platform, frontendPath: String) async throws
        -> (store: XenStoreClient, frontend: XenbusOtherEnd, backendPath: String, frontendID: DomainID) {
        let store: XenStoreClient
        do { store = try platform.connectXenStore() } catch { throw PeerError.platform("xenstore: \(error)") }
        do {
            let (backendPath, frontendID) = try await locate(store, platform: platform, frontendPath: frontendPath)
            return (store, XenbusOtherEnd(store: store, path: frontendPath), backendPath, frontendID)
        } catch {
            store.close()
            throw error
        }
    }

    /// Reads the frontend node's `backend` (which must be under the peer's domain's home)
    /// and the backend's `frontend-id`.
    static func locate(_ store: XenStoreClient, platform: any Platform, frontendPath: String) async throws -> (backendPath: String, frontendID: DomainID) {
        do {
            let backendPath = try await store.readString(frontendPath + "/backend")
            let home = "/local/domain/\(platform.domainID)/backend/"
            guard backendPath.hasPrefix(home) else {
                throw PeerError.badFrontendNode("backend \(backendPath) is not under \(home), the peer's domain")
            }
            let id = try await store.readString(backendPath + "/frontend-id")
            guard let domain = DomainID(id) else { throw PeerError.badFrontendNode("\(backendPath)/frontend-id reads \(id)") }
            return (backendPath, domain)
        } catch let error as PeerError {
            throw error
        } catch {
            throw PeerError.badFrontendNode("\(frontendPath): \(error)")
        }
    }

    /// Watches for a frontend Connected before the backend is (XENBUS-017).
    func watchForEarlyConnect() {
        frontend.observe = { [unowned self] state in
            if state == .connected, own != .connected { connectedEarly.append("Connected while the backend was \(own)") }
        }
    }

    /// The frontend's nodes now.
    public func targetNodes() async throws -> [String: String] { try await frontend.nodes() }

    /// The frontend's nodes, with each `queue-N` directory's as `queue-N/KEY`.
    func nodesWithQueues() async throws -> [String: String] {
        var nodes = try await targetNodes()
        for queue in nodes.keys.filter({ $0.hasPrefix("queue-") && !$0.contains("/") }) {
            for (key, value) in try await store.nodes(under: frontendPath + "/" + queue) { nodes[queue + "/" + key] = value }
        }
        return nodes
    }

    /// Every value the frontend's state node read, for XENBUS-001.
    var stateValuesSeen: Set<String> { frontend.stateValuesSeen }

    /// The frontend's state (nil when absent or not a number).
    func frontendState() async -> XenbusState? { await frontend.state() }

    func describeFrontendState() async -> String { await frontend.describeState() }

    /// Waits for the frontend's state to read one of `wanted`.
    @discardableResult
    func waitForFrontend(_ wanted: Set<XenbusState>, within: Duration = Self.patience) async throws -> XenbusState {
        try await frontend.wait(for: wanted, within: within)
    }

    /// The frontend's states over `window`, in order of change: a time box for clauses
    /// where the frontend must not do something.
    func watchFrontend(for window: Duration = Self.refusalWindow) async throws -> [String] {
        try await frontend.watch(for: window, stopOnRefusal: false)
    }

    /// Writes `keys` and the state in one transaction.
    func writeState(_ state: XenbusState, keys: [String: String] = [:]) async throws {
        let path = backendPath
        try await store.withTransaction { tx in
            for (key, value) in keys { try await tx.write(path + "/" + key, value) }
            try await tx.write(path + "/state", state.nodeValue)
        }
        written.formUnion(keys.keys)
        own = state
    }

    /// Writes `raw` to the state node, a lie: ``own`` keeps the last state written honestly.
    func writeRawState(_ raw: String) async throws {
        try await store.write(backendPath + "/state", raw)
    }

    /// Offers the honest features with InitWait and waits for the frontend's Initialised
    /// (or Connected): its nodes are kept, its rings mapped and its ports bound.
    func offer() async throws { try await offer(honestOffer) }

    /// Offers `features` with InitWait and waits for the frontend's Initialised (or Connected).
    func offer(_ features: [String: String]) async throws {
        _ = try await offer(features, until: [.initialised, .connected])
    }

    /// Offers `features` with InitWait and waits for the frontend to read one of
    /// `wanted`; at Initialised or Connected its nodes are kept and its rings attached.
    func offer(_ features: [String: String], until wanted: Set<XenbusState>) async throws -> XenbusState {
        atInitialised = [:]
        mapProblem = nil
        offered = features
        try await writeState(.initWait, keys: features)
        let state = try await waitForFrontend(wanted)
        guard state == .initialised || state == .connected else { return state }
        atInitialised = try await nodesWithQueues()
        attach()
        return state
    }

    /// Publishes the honest keys with Connected and waits for the frontend's Connected.
    func connect() async throws { try await connect(honestConnect) }

    /// Publishes `keys` with Connected; waits for the frontend's Connected when `awaitFrontend`.
    func connect(_ keys: [String: String], awaitFrontend: Bool = true) async throws {
        try await writeState(.connected, keys: keys)
        didWriteConnected()
        if awaitFrontend { _ = try await waitForFrontend([.connected]) }
    }

    /// Closes whatever handshake there is (Closing, the frontend's Closed, Closed), so
    /// the next ``offer()`` starts a new one.
    func startOver() async throws {
        if own != .unknown, own != .closed {
            try await writeState(.closing)
            _ = try await waitForFrontend([.closed, .initialising])
        }
        detach()
        for key in written { try? await store.rm(backendPath + "/" + key) }
        written = []
        if own != .unknown { try await writeState(.closed) }
    }

    /// An honest handshake, unless one is in place.
    func ensureConnected() async throws {
        if own == .connected, isAttached, await frontendState() == .connected { return }
        try await startOver()
        try await offer()
        try await connect()
    }

    /// Removes the backend node as a toolstack unplugging it would, runs `body`, then
    /// puts the node back as it was (values and permissions, state Closed), so the run
    /// can go on. The rings are let go after `body`: a frontend may wait on a request in
    /// flight before it handles the removal.
    func withBackendNodeRemoved<T>(_ body: () async throws -> T) async throws -> T {
        let saved = try await store.nodes(under: backendPath)
        var permissions: [String: [XenStorePermission]] = ["": try await store.getPermissions(backendPath)]
        for key in saved.keys { permissions[key] = try await store.getPermissions(backendPath + "/" + key) }
        try await store.rm(backendPath)
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        detach()
        let path = backendPath
        try await store.withTransaction { tx in
            try await tx.write(path, "")
            try await tx.setPermissions(path, permissions[""]!)
            for (key, value) in saved where key != "state" {
                try await tx.write(path + "/" + key, value)
                if let p = permissions[key] { try await tx.setPermissions(path + "/" + key, p) }
            }
            try await tx.write(path + "/state", XenbusState.closed.nodeValue)
            if let p = permissions["state"] { try await tx.setPermissions(path + "/state", p) }
        }
        own = .closed
        return try result.get()
    }
}
