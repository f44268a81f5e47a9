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
public final class BlkbackPeer: ScriptedBackend, @unchecked Sendable {
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
    let frontendPath: String
    let backendPath: String
    let frontendID: DomainID
    /// The state the peer last wrote.
    var own: XenbusState = .unknown
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
    var offered: [String: String] = [:]
    /// Whether the ring is served while the peer waits (``serveInBackground()``): set when
    /// the peer connects, cleared by any answer but an honest one and by a new handshake.
    var servesInBackground = false
    /// The frontend takes each device once (Linux's blkfront answers InitWait only from
    /// Initialising): the clauses that show it serves again after a lie stop short of the
    /// second handshake and say so.
    public var takesDeviceOnce = false
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
        (store, frontend, backendPath, frontendID) = try await Self.open(platform: platform, frontendPath: frontendPath)
        watchForEarlyConnect()
        frontend.whileWaiting = { [unowned self] in serveInBackground() }
    }

    var honestOffer: [String: String] { Self.honestFeatures }
    var honestConnect: [String: String] { Self.honestDisk }
    var isAttached: Bool { ring != nil }

    /// Maps `ring-ref` and binds `event-channel` as the frontend published them.
    func attach() {
        headerAtMap = []
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

    /// Connected: the ring is served while the peer waits, until a lie.
    func didWriteConnected() { servesInBackground = isAttached }

    /// Lets go of the ring and the port.
    func detach() {
        if let port, let events { try? events.unbind(port) }
        events?.close()
        events = nil
        port = nil
        if let ring { try? platform.grantMapper.unmap(ring) }
        ring = nil
        back = nil
        servesInBackground = false
        outstanding = []
        held = []
    }

    /// Closes the device and the peer's connection.
    public func close() async {
        try? await startOver()
        store.close()
    }
}
