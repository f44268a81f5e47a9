import Blkif
import Glibc
import SharedMemory
import XenBus
import XenPlatform
import XenRing
import XenStore

/// A scripted blkfront for conformance runs against a block backend: it speaks xenbus,
/// `io/blkif.h` keys and `io/ring.h` rings itself, step by step, on the wire modules and
/// the platform's grants and event channels, so a check can behave, or lie, at any step
/// and observe what the backend does. It is no device: nothing here is shared with
/// BlockFrontend, whose job is to hide exactly these steps.
///
/// Used by one task at a time (the runner runs clauses one after the other).
public final class BlkfrontPeer: ConformancePeer, ScriptedFrontend, @unchecked Sendable {
    // SAFETY (@unchecked): the runner calls checks one at a time, on one task.

    /// How long a state change or a response may take before the peer gives up: a
    /// safety net for a target that hangs, not a timing requirement.
    public static let patience: Duration = .seconds(15)
    /// How long the peer watches a target that neither connects nor refuses after a lie
    /// (a backend may stay silent): negative clauses are time-boxed by it.
    public static let refusalWindow: Duration = .seconds(3)

    let platform: any Platform
    let store: XenStoreClient
    /// A xenstore connection that may read the backend's domain (dom0's), for what a
    /// guest cannot see (the error node); nil when the run has none.
    let observer: XenStoreClient?
    public let frontendPath: String
    public let backendPath: String
    /// The backend's directory as the peer reads it.
    let backend: XenbusOtherEnd
    public let backendID: DomainID
    /// Data pages granted writable to the backend for the peer's life.
    let data: SharedPages
    /// One page of indirect segments, granted read-only (the backend only reads it).
    let indirect: SharedPages
    /// Pages the backend still mapped when the peer let go of them; retried at close.
    var stale: [SharedPages] = []
    /// Keys the peer wrote to its node, removed when it starts over.
    var written: Set<String> = []
    /// The current handshake's rings, once published.
    var connection: BlkfrontConnection?
    /// Whether the backend last read Connected with our Connected written.
    var isConnected = false
    /// The backend's nodes when its state first read InitWait and Connected, this handshake.
    var atInitWait: [String: String] = [:]
    var atConnected: [String: String] = [:]
    var nextID: UInt64 = 1

    /// Data pages granted at start; a request uses at most this many.
    public static let dataPageCount = 16

    /// Joins the vbd whose frontend node is `frontendPath`, acting as its domain on
    /// `platform`; reads the backend's location from the node, as a blkfront does.
    /// `observer`, if given, is used only to read what the frontend's domain may not, and
    /// is closed with the peer.
    public init(platform: any Platform, frontendPath: String, observer: XenStoreClient? = nil) async throws {
        self.platform = platform
        self.observer = observer
        self.frontendPath = frontendPath
        do { store = try platform.connectXenStore() } catch { throw PeerError.platform("xenstore: \(error)") }
        do {
            let directory = try await store.readString(frontendPath + "/backend")
            let id = try await store.readString(frontendPath + "/backend-id")
            guard let domain = DomainID(id) else { throw PeerError.badFrontendNode("backend-id reads \(id)") }
            backendPath = directory
            backend = XenbusOtherEnd(store: store, path: directory)
            backendID = domain
        } catch let error as PeerError {
            store.close()
            throw error
        } catch {
            store.close()
            throw PeerError.badFrontendNode("\(frontendPath): \(error)")
        }
        do {
            data = try platform.grantTable.share(pages: Self.dataPageCount, with: backendID, writable: true)
            indirect = try platform.grantTable.share(pages: 1, with: backendID, writable: false)
        } catch {
            store.close()
            throw PeerError.platform("granting data pages: \(error)")
        }
    }

    /// The backend's nodes on a connected device: some features (info) are written only
    /// at Connected.
    public func targetNodes() async throws -> [String: String] {
        try await ensureConnected()
        return try await backendNodes()
    }

    /// The disk size the backend published at Connected, in 512-byte sectors.
    public var sectors: UInt64 { atConnected[BlkifDiskProperties.Key.sectors].flatMap(UInt64.init) ?? 0 }

    // MARK: xenstore (the backend is read through ScriptedFrontend)

    /// Writes our state node.
    func writeState(_ state: XenbusState) async throws { try await writeState(state.nodeValue) }

    func writeState(_ raw: String) async throws {
        try await store.write(frontendPath + "/state", raw)
    }

    /// What the backend's error node (`<backend domain>/error/<backend path>/error`) holds.
    public enum ErrorNode: Sendable, Equatable {
        case absent
        case present(String)
        /// Neither the frontend's domain nor an observer may read it.
        case unreadable(String)
    }

    /// Reads the backend's error node, through the observer when there is one: the node
    /// lives in the backend's domain, which a guest may not read.
    public func errorNode() async -> ErrorNode {
        let home = "/local/domain/\(backendID)/"
        guard backendPath.hasPrefix(home) else { return .unreadable("backend path \(backendPath) is outside \(home)") }
        let path = home + "error/" + backendPath.dropFirst(home.count) + "/error"
        do {
            return .present(try await (observer ?? store).readString(path))
        } catch .daemon(.enoent) {
            return .absent
        } catch {
            return .unreadable("\(path): \(error)")
        }
    }

    // MARK: handshake

    /// What a frontend publishes at Initialised; `tamper` lies on top of it.
    public struct Handshake: Sendable {
        public var abi: BlkifABI = .native
        public var ringPageOrder: UInt32 = 0
        public var queues: Int = 1
        public var persistent: Bool = false
        /// Ring pages granted read-only (a lie: the backend must write responses).
        public var readOnlyRing = false
        /// Applied to the keys before they are written.
        public var tamper: @Sendable (inout [String: String]) -> Void = { _ in }

        public init() {}
    }

    /// Brings the device to the start of a handshake: whatever happened before, the peer
    /// walks Closing, Closed, gives up its rings and writes Initialising, as a reloaded
    /// blkfront does, and waits for the backend's InitWait. Nothing to do when already
    /// there, unless `force`.
    public func startOver(force: Bool = false) async throws {
        if !force, connection == nil, await backendState() == .initWait,
           (try? await store.readString(frontendPath + "/state")) == XenbusState.initialising.nodeValue {
            return
        }
        // A backend not yet started on the device (no state, Initialising) is waited for.
        var current = await backendState()
        if current == nil || current == .initialising || current == .unknown {
            current = try await waitForBackend([.initWait, .initialised, .connected, .closing, .closed])
        }
        // From InitWait too: a backend follows Closing from any state (XENBUS-023).
        try await writeState(.closing)
        try await waitForBackend([.closing, .closed])
        try await writeState(.closed)
        try await waitForBackend([.closed])
        release()
        for key in written.sorted() { try? await store.rm(frontendPath + "/" + key) }
        written = []
        try await writeState(.initialising)
        try await waitForBackend([.initWait])
        atInitWait = try await backendNodes()
    }

    /// Gives up the current rings: ports closed, pages ended or kept for a later retry.
    func release() {
        guard let connection else { return }
        self.connection = nil
        isConnected = false
        atConnected = [:]
        stale += connection.release()
    }

    /// Grants rings as `handshake` says and publishes their keys with Initialised in one
    /// transaction; the device must be at the start of a handshake.
    public func publish(_ handshake: Handshake = Handshake()) async throws {
        let connection = try BlkfrontConnection(platform: platform, backend: backendID, handshake: handshake)
        self.connection = connection
        var keys: [String: String] = [BlkifFrontendFeatures.Key.protocolName: handshake.abi.protocolName,
                                      BlkifFrontendFeatures.Key.persistent: handshake.persistent ? "1" : "0"]
        if handshake.ringPageOrder > 0 { keys[BlkifFrontendFeatures.Key.ringPageOrder] = String(handshake.ringPageOrder) }
        if handshake.queues > 1 { keys[BlkifFrontendFeatures.Key.queueCount] = String(handshake.queues) }
        let entries = BlkifConnectionKeys(ringPageOrder: handshake.ringPageOrder, queues: connection.queues.map {
            BlkifConnectionKeys.Queue(ringRefs: $0.pages.refs, eventChannel: $0.port)
        }).xenstoreEntries
        keys.merge(entries) { $1 }
        handshake.tamper(&keys)
        let path = frontendPath
        let sorted = keys.sorted { $0.key < $1.key }
        try await store.withTransaction { tx in
            for (key, value) in sorted { try await tx.write(path + "/" + key, value) }
            try await tx.write(path + "/state", XenbusState.initialised.nodeValue)
        }
        // The top-level names to remove when starting over (queue-N goes with its children).
        written.formUnion(sorted.map { String($0.key.split(separator: "/").first ?? "") })
    }

    /// The whole handshake from its start: publish, the backend's Connected, ours.
    public func connect(_ handshake: Handshake = Handshake()) async throws {
        try await publish(handshake)
        try await waitForBackend([.connected])
        atConnected = try await backendNodes()
        try await writeState(.connected)
        isConnected = true
    }

    /// A connected device on a plain one-page native ring, reusing the current one.
    public func ensureConnected() async throws {
        if isConnected, connection?.handshake.abi == .native, connection?.queues.count == 1,
           connection?.handshake.ringPageOrder == 0, await backendState() == .connected {
            return
        }
        try await startOver()
        try await connect()
    }

    /// Ends access to every page still granted, retrying for a while those the backend
    /// still maps; closes the xenstore connection. Returns how many page sets stay granted.
    @discardableResult
    public func close() async -> Int {
        let pending = stale + [data, indirect]
        stale = []
        return await closeDown(releasing: pending)
    }
}
