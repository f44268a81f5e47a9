import Blkif
import Glibc
import SharedMemory
import XenBus
import XenPlatform
import XenRing
import XenStore

/// A scripted blkback for conformance runs against a block frontend: it writes the
/// backend's keys and states itself, step by step, maps the frontend's ring and binds its
/// event channel on the platform, so a check can offer honest or lying keys at any step
/// and observe what the frontend does. It is no device: nothing is shared with
/// BlockBackend. Used by one task at a time (the runner runs clauses one after another).
public final class BlkbackPeer: ConformancePeer, @unchecked Sendable {
    // SAFETY (@unchecked): the runner calls checks one at a time, on one task.

    /// A safety net for a target that hangs, not a timing requirement.
    public static let patience: Duration = .seconds(15)
    /// How long the peer watches a frontend after a lie: negative clauses are time-boxed by it.
    public static let refusalWindow: Duration = .seconds(2)
    /// The disk the peer describes: 8 MiB of 512-byte sectors.
    public static let diskSectors: UInt64 = 16384

    /// Keys of an honest blkback before InitWait (no multi-page ring, no multi-queue).
    public static let honestFeatures: [String: String] = [
        "feature-flush-cache": "1", "feature-barrier": "0", "feature-discard": "0",
        "feature-persistent": "0", "feature-max-indirect-segments": "0",
    ]
    /// Keys of an honest blkback at Connected.
    public static let honestDisk: [String: String] = [
        BlkifDiskProperties.Key.sectors: "\(diskSectors)", BlkifDiskProperties.Key.info: "0",
        BlkifDiskProperties.Key.sectorSize: "512", "physical-sector-size": "512",
    ]

    let platform: any Platform
    let store: XenStoreClient
    public let frontendPath: String
    public let backendPath: String
    public let frontendID: DomainID
    /// The state the peer last wrote.
    public private(set) var own: XenbusState = .unknown
    /// The frontend's directory as the peer reads it.
    let frontend: XenbusOtherEnd
    /// Frontend states read as Connected while the peer was not (XENBUS-017).
    var connectedEarly: [String] = []
    /// The frontend's nodes when its state first read Initialised (or Connected) this handshake.
    var atInitialised: [String: String] = [:]
    /// The ring page header (req_prod, req_event, rsp_prod, rsp_event) as first mapped.
    var headerAtMap: [UInt32] = []
    /// Why this handshake's ring did not map, if it did not.
    var mapProblem: String?
    /// Keys the peer wrote besides the state, removed when it starts over.
    var written: Set<String> = []
    var ring: GrantMapping?
    var events: (any EventChannel)?
    var port: EventPort?
    /// The backend's end of the mapped ring, for the checks that answer requests.
    var back: BackRing?
    /// The features offered with the last InitWait.
    var offered: [String: String] = [:]
    /// The frontend's user side, for the checks that need requests (nil: they cannot run).
    let io: (any FrontendBlockIO)?
    /// The disk the peer serves, ``diskSectors`` of 512 bytes, zeroed at first.
    var disk = [UInt8](repeating: 0, count: Int(diskSectors) * 512)
    /// Ids of requests consumed and not yet answered.
    var outstanding: Set<UInt64> = []
    /// Requests consumed and left unanswered on purpose (``BlkbackAnswer/hold``).
    var held: [SeenRequest] = []
    /// Every request consumed since the last ``forgetSeen()``.
    var seen: [SeenRequest] = []

    /// Serves the vbd whose frontend node is `frontendPath`, acting as its backend domain
    /// on `platform`: the node's `backend` must be under that domain's home. `io` is the
    /// frontend's user side, through which the checks that need requests make them.
    public init(platform: any Platform, frontendPath: String, io: (any FrontendBlockIO)? = nil) async throws {
        self.platform = platform
        self.io = io
        self.frontendPath = frontendPath
        do { store = try platform.connectXenStore() } catch { throw PeerError.platform("xenstore: \(error)") }
        frontend = XenbusOtherEnd(store: store, path: frontendPath)
        do {
            backendPath = try await store.readString(frontendPath + "/backend")
            let home = "/local/domain/\(platform.domainID)/backend/"
            guard backendPath.hasPrefix(home) else {
                throw PeerError.badFrontendNode("backend \(backendPath) is not under \(home), the peer's domain")
            }
            let id = try await store.readString(backendPath + "/frontend-id")
            guard let domain = DomainID(id) else { throw PeerError.badFrontendNode("\(backendPath)/frontend-id reads \(id)") }
            frontendID = domain
        } catch let error as PeerError {
            store.close()
            throw error
        } catch {
            store.close()
            throw PeerError.badFrontendNode("\(frontendPath): \(error)")
        }
        // XENBUS-017: a frontend Connected before the backend is.
        frontend.observe = { [unowned self] state in
            if state == .connected, own != .connected { connectedEarly.append("Connected while the backend was \(own)") }
        }
    }

    /// The frontend's nodes now.
    public func targetNodes() async throws -> [String: String] { try await frontend.nodes() }

    // MARK: states

    /// Every value the frontend's state node read, for XENBUS-001.
    var stateValuesSeen: Set<String> { frontend.stateValuesSeen }

    /// The frontend's state (nil when absent or not a number).
    func frontendState() async -> XenbusState? { await frontend.state() }

    func describeFrontendState() async -> String { await frontend.describeState() }

    /// Waits for the frontend's state to read one of `wanted`.
    @discardableResult
    func waitForFrontend(_ wanted: Set<XenbusState>, within: Duration = patience) async throws -> XenbusState {
        try await frontend.wait(for: wanted, within: within)
    }

    /// The frontend's states over `window`, in order of change: a time box for clauses
    /// where the frontend must not do something.
    func watchFrontend(for window: Duration = refusalWindow) async throws -> [String] {
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

    // MARK: handshake

    /// Offers `features` with InitWait and waits for the frontend's Initialised (or
    /// Connected): its nodes are kept, its ring mapped and its port bound.
    public func offer(_ features: [String: String] = honestFeatures) async throws {
        _ = try await offer(features, until: [.initialised, .connected])
    }

    /// Offers `features` with InitWait and waits for the frontend to read one of
    /// `wanted`; at Initialised or Connected its nodes are kept and its ring attached.
    func offer(_ features: [String: String], until wanted: Set<XenbusState>) async throws -> XenbusState {
        atInitialised = [:]
        headerAtMap = []
        mapProblem = nil
        offered = features
        try await writeState(.initWait, keys: features)
        let state = try await waitForFrontend(wanted)
        guard state == .initialised || state == .connected else { return state }
        atInitialised = try await targetNodes()
        attach()
        return state
    }

    /// Maps `ring-ref` and binds `event-channel` as the frontend published them.
    func attach() {
        guard let raw = atInitialised["ring-ref"], let ref = GrantRef(raw) else {
            mapProblem = "ring-ref reads \(atInitialised["ring-ref"] ?? "absent")"
            return
        }
        do {
            let mapping = try platform.grantMapper.map([ref], from: frontendID, writable: true)
            ring = mapping
            headerAtMap = (0 ..< 4).map { mapping.view.load(UInt32.self, at: $0 * 4) }
            back = BackRing(try SharedRing(memory: mapping.view, entrySize: abi.slotSize))
        } catch {
            mapProblem = "ring-ref \(ref) does not map: \(error)"
            return
        }
        guard let raw = atInitialised["event-channel"], let remote = EventPort(raw) else {
            mapProblem = "event-channel reads \(atInitialised["event-channel"] ?? "absent")"
            return
        }
        do {
            let channel = try platform.openEventChannel()
            events = channel
            port = try channel.bindInterdomain(remote: frontendID, remotePort: remote)
        } catch {
            mapProblem = "event-channel \(remote) does not bind: \(error)"
        }
    }

    /// Lets go of the ring and the port.
    func detach() {
        if let port, let events { try? events.unbind(port) }
        events?.close()
        events = nil
        port = nil
        if let ring { try? platform.grantMapper.unmap(ring) }
        ring = nil
        back = nil
        outstanding = []
        held = []
    }

    /// Publishes `disk` with Connected; waits for the frontend's Connected when `await`.
    public func connect(_ disk: [String: String] = honestDisk, awaitFrontend: Bool = true) async throws {
        try await writeState(.connected, keys: disk)
        if awaitFrontend { _ = try await waitForFrontend([.connected]) }
    }

    /// Closes whatever handshake there is (Closing, the frontend's Closed, Closed), so
    /// the next ``offer(_:)`` starts a new one.
    public func startOver() async throws {
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
    public func ensureConnected() async throws {
        if own == .connected, ring != nil, await frontendState() == .connected { return }
        try await startOver()
        try await offer()
        try await connect()
    }

    /// Removes the backend node as a toolstack unplugging it would, runs `body`, then
    /// puts the node back as it was (values and permissions, state Closed), so the run
    /// can go on.
    func withBackendNodeRemoved<T>(_ body: () async throws -> T) async throws -> T {
        let saved = try await store.nodes(under: backendPath)
        var permissions: [String: [XenStorePermission]] = ["": try await store.getPermissions(backendPath)]
        for key in saved.keys { permissions[key] = try await store.getPermissions(backendPath + "/" + key) }
        detach()
        try await store.rm(backendPath)
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
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

    /// Closes the device and the peer's connection.
    public func close() async {
        try? await startOver()
        store.close()
    }
}
