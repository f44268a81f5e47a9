import Logging
import XenStore

/// What a device type plugs into ``XenbusBackendDevice``: the device-specific steps of the
/// backend half of the handshake. The driver calls them from one task, one at a time.
public protocol XenbusBackendHooks: Sendable {
    /// What ``readFrontend(_:paths:)`` makes of the frontend's keys.
    associatedtype Frontend: Sendable

    /// The keys advertised before InitWait (`feature-*`, `max-ring-page-order`, ...),
    /// written in the same transaction as the state.
    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys

    /// Reads and validates the frontend's keys (ring refs, event channels, protocol)
    /// once it is Initialised or Connected. Throwing (preferably a ``XenbusError`` that
    /// names the key) refuses them: the device goes to Closing with an error node.
    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Frontend

    /// Connects: maps the rings, binds the event channels, starts serving. Returns the
    /// keys to publish with Connected (`sectors`, `info`, ...). If it throws it must
    /// have undone its own partial work; the device goes to Closing with an error node.
    func connect(_ frontend: Frontend, paths: XenbusDevicePaths) async throws -> XenbusKeys

    /// Undoes ``connect(_:paths:)``: called exactly once after each successful connect,
    /// before the device leaves Connected (or when the driver stops).
    func disconnect(paths: XenbusDevicePaths, reason: String) async

    /// Whether a device found Connected on both ends when the driver starts (an earlier
    /// process served it and did not close it) is taken over as it is: features, frontend
    /// keys and connect without a state write (`XenbusBackendAdoption.swift`). Defaults to
    /// false: the driver goes through InitWait and the device connects again.
    func adopts(paths: XenbusDevicePaths) async -> Bool
}

/// The backend half of the xenbus handshake for one device, as Linux's backend drivers
/// run it (blkback's `frontend_changed`), independent of the device type:
///
/// 1. read `frontend-id` and `frontend` from the backend node and check them
///    (``XenbusDevicePaths/discover(backend:store:)``); watch the frontend's `state`;
/// 2. write the features and switch to InitWait;
/// 3. when the frontend is Initialised or Connected: read its keys (a hook that may
///    refuse them), connect (a hook), publish the connect keys and switch to Connected;
/// 4. frontend Closing (while InitWait or Connected): disconnect, Closing; frontend
///    Closed (while Connected or Closing): disconnect, Closing, Closed;
/// 5. frontend back to Initialising after Closing/Closed, or to Initialised after Closed:
///    features and InitWait again, and redo 3.
///
/// A new driver for a device whose frontend is already Connected (the backend process
/// restarted) goes through InitWait and connects again from the frontend's keys, unless
/// the backend node says the device was refused or closed (below), or the node is still
/// Connected and the device type adopts the connection as it is (``XenbusBackendHooks/adopts(paths:)``). A node
/// the toolstack removed and added again before the driver noticed (it reads Initialising,
/// which only the toolstack writes) is a new device: the driver disconnects and starts over.
/// When the toolstack removes the backend node the driver disconnects and stops without
/// writing. Errors go the way of `xenbus_dev_fatal`: `<home>/error/<node>/error` is
/// written as "<errno> <message>", the device disconnects and switches to Closing; it
/// is cleared when a later handshake connects. Every state change is logged with the
/// device path and the reason.
///
/// A refused device stays down: after a fatal error (a refused key, a failed connect, a
/// protocol violation the device reports through ``reportViolation(_:)``) the driver
/// follows the frontend only to Closed and serves it again only once the frontend writes
/// Initialising, which starts a new handshake with new rings. A driver that starts on a
/// node carrying the error node, or reading Closing or Closed while the frontend still has
/// a ring published (Initialised or Connected), does not take that ring over: it keeps the
/// state it finds and waits the same way (for a closed-but-not-refused node, until the
/// frontend has let go of the ring, then InitWait). So no process, this one or a later
/// one, reconnects to a ring it has refused.
///
/// The driver reacts to the current values of the nodes, not to the sequence of watch
/// events, so coalesced or missed intermediate states do no harm.
public final class XenbusBackendDevice<Hooks: XenbusBackendHooks>: Sendable {
    /// The backend node this driver serves.
    public let backendPath: String
    let run: XenbusDriverRun

    /// Starts the driver for the device whose backend node is `backendPath`, over `store`
    /// (a connection acting as the backend domain, shared by any number of drivers).
    public init(store: XenStoreClient, backend backendPath: String, hooks: Hooks,
                logger: Logger = Logger(label: "xensplit.xenbus")) {
        self.backendPath = backendPath
        var logger = logger
        logger[metadataKey: "xenbus.device"] = "\(backendPath)"
        run = XenbusDriverRun { [logger] inbox in
            await BackendMachine(store: store, path: backendPath, hooks: hooks, logger: logger, inbox: inbox).run()
        }
    }

    /// The state this driver last wrote.
    public var state: XenbusState { run.state }

    /// Both ends' paths, once discovery succeeded.
    public var paths: XenbusDevicePaths? { run.paths }

    /// Closes the device: disconnect (once), Closing, Closed, removes the keys this
    /// driver wrote, cancels its watches. Returns how the driver ended (if it had already
    /// stopped for another reason, that one).
    @discardableResult
    public func close() async -> XenbusStopReason { await run.close() }

    /// Waits until the driver stops, and says why.
    public func stopped() async -> XenbusStopReason { await run.stopped() }

    /// The device saw the frontend break the ring protocol (`reason` says how): the driver
    /// refuses the device as `xenbus_dev_fatal` would (error node with EPROTO, disconnect,
    /// Closing) and keeps it down until the frontend starts over. Safe from any thread;
    /// a report that arrives while nothing is connected is ignored.
    public func reportViolation(_ reason: String) {
        run.reportViolation(.protocolViolation(path: backendPath, reason: reason))
    }
}

/// The backend driver's loop and its private state; lives in one task.
struct BackendMachine<Hooks: XenbusBackendHooks>: XenbusMachine {
    let store: XenStoreClient
    let path: String
    let hooks: Hooks
    let logger: Logger
    let inbox: XenbusInbox

    var role: String { "backend" }

    func makeState() -> BackendState { BackendState(node: XenbusOwnNode(store: store, path: path, logger: logger)) }

    func start(_ s: inout BackendState) async throws(XenbusError) {
        let paths: XenbusDevicePaths
        do {
            paths = try await XenbusDevicePaths.discover(backend: path, store: store)
        } catch {
            if case .store(_, .connectionClosed) = error { throw error }
            await fatal(&s, error, context: "reading frontend details")
            return
        }
        s.paths = paths
        inbox.status.withLock { $0.paths = paths }
        // A device added again at the same path usually has the same frontend: one watch.
        if !s.watchedFrontends.contains(paths.frontend) {
            let watch: XenStoreWatch
            do {
                watch = try await store.watch(paths.frontend + "/state")
            } catch {
                throw .store(path: paths.frontend + "/state", error)
            }
            s.watches.append(watch)
            s.watchedFrontends.insert(paths.frontend)
            inbox.pump(watch)
        }
        if try await keepsEarlierRefusal(&s, paths) { return }
        if try await adoptsConnection(&s, paths) { return }
        try await prepare(&s, paths, reason: "driver started, frontend \(paths.frontend)")
    }

    /// A node an earlier driver (in this process or another) refused or closed is not
    /// taken over as a backend restart while the frontend still has a ring published:
    /// the driver adopts the state it finds and holds the device. True when it did.
    private func keepsEarlierRefusal(_ s: inout BackendState, _ paths: XenbusDevicePaths) async throws(XenbusError) -> Bool {
        let error = await s.node.readError()
        let own = try? await XenbusNodeReader(store: store, path: path).state()
        let frontend = try? await XenbusNodeReader(store: store, path: paths.frontend).state()
        guard frontend != .initialising else { return false }
        let closed = own == .closing || own == .closed
        let ringPublished = frontend == .initialised || frontend == .connected
        guard error != nil || (closed && ringPublished) else { return false }
        s.hold = error != nil ? .refused : .staleRing
        s.frontendSeenAway = true
        let why = error.map { "refused earlier (\($0))" } ?? "closed earlier (state \(own ?? .unknown))"
        logger.warning("xenbus: \(path) was \(why); not taking over the frontend's ring: waiting for the frontend to start over")
        if let own, closed {
            s.own = own
            inbox.status.withLock { $0.state = own }
        } else {
            try await switchState(&s, .closing, reason: "refused earlier, frontend is \(frontend ?? .unknown)")
        }
        return true
    }

    /// While the device is held (``BackendState/hold``): follows the frontend to Closed
    /// and lets go of the hold as it says. Returns false when the frontend's state is to be
    /// handled as usual.
    private func whileHeld(_ s: inout BackendState, _ paths: XenbusDevicePaths, _ hold: BackendHold,
                           frontend: XenbusState) async throws(XenbusError) -> Bool {
        if frontend != .initialising { s.frontendSeenAway = true }
        switch frontend {
        case .initialising:
            // Only a frontend that comes back to Initialising starts over; one that never
            // left it (refused before it published anything) is still waiting for InitWait.
            guard s.frontendSeenAway || hold == .staleRing else { return true }
            // The refusal is history: a later process must not hold the new handshake.
            s.hold = nil
            await s.node.clearError()
            logger.info("xenbus: \(path): frontend started over; serving it again")
            return false
        case .closed, .unknown:
            if s.own == .closing { try await switchState(&s, .closed, reason: "frontend is \(frontend)") }
            if hold == .staleRing {
                s.hold = nil
                try await prepare(&s, paths, reason: "frontend let go of the ring it had before this driver started")
            }
            return true
        default:
            return true
        }
    }

    /// Features, then InitWait.
    private func prepare(_ s: inout BackendState, _ paths: XenbusDevicePaths, reason: String) async throws(XenbusError) {
        // A new handshake: the frontend has published nothing for it yet.
        s.frontendSeenAway = false
        let keys: XenbusKeys
        do {
            keys = try await hooks.features(for: paths)
            try keys.validate()
        } catch {
            await fatal(&s, XenbusError.fromHook("features", error), context: "writing features")
            return
        }
        s.featureKeys = keys.keys
        try await switchState(&s, .initWait, keys: keys, reason: reason)
    }

    /// Acts on the frontend's current state. Returns a stop reason when the driver ends.
    func reconcile(_ s: inout BackendState) async throws(XenbusError) -> XenbusStopReason? {
        guard try await s.node.exists() else {
            await disconnect(&s, reason: "backend node removed by the toolstack")
            logger.info("xenbus: \(path) removed, stopping")
            return .nodeRemoved
        }
        if try await nodeWasReplaced(s) {
            // Removed and added again between two wake-ups (the watcher saw no change):
            // the old connection is over and the new device starts from the beginning.
            await disconnect(&s, reason: "backend node was removed and added again")
            logger.info("xenbus: \(path) was removed and added again; starting over")
            s.own = .unknown
            s.paths = nil
            s.lastFatal = nil
            s.hold = nil
            s.featureKeys = []
            inbox.status.withLock { $0 = XenbusDriverStatus() }
            try await start(&s)
            return nil
        }
        guard let paths = s.paths else { return nil }
        let frontend: XenbusState
        do {
            frontend = try await XenbusNodeReader(store: store, path: paths.frontend).state()
        } catch {
            if case .store = error { throw error }
            await fatal(&s, error, context: "reading frontend state")
            return nil
        }
        if let hold = s.hold, try await whileHeld(&s, paths, hold, frontend: frontend) { return nil }
        switch frontend {
        case .initialising:
            if s.own == .closing || s.own == .closed {
                await disconnect(&s, reason: "frontend back to Initialising")
                if s.own == .closing { try await switchState(&s, .closed, reason: "frontend passed Closed") }
                try await prepare(&s, paths, reason: "frontend back to Initialising: reconnecting")
            }
        case .initialised, .connected:
            if s.own == .closed {
                // Back from Closed with its keys already written, skipping Initialising.
                try await prepare(&s, paths, reason: "frontend back to \(frontend): reconnecting")
            }
            if s.own == .initWait { try await connect(&s, paths, frontend: frontend) }
        case .closing:
            // From InitWait too, as blkback does: a frontend giving up before it
            // connected is followed to Closing, and its Closed then to Closed.
            if s.own == .connected || s.own == .initWait {
                await disconnect(&s, reason: "frontend is Closing")
                try await switchState(&s, .closing, reason: "frontend is Closing")
            }
        case .closed:
            // From InitWait a Closed frontend is one that has not come (back) yet, as
            // after a backend restart: it is left to start the handshake.
            if s.own == .connected || s.own == .closing {
                await disconnect(&s, reason: "frontend is Closed")
                if s.own != .closing { try await switchState(&s, .closing, reason: "frontend is Closed") }
                try await switchState(&s, .closed, reason: "frontend is Closed")
            }
        case .unknown:
            // The frontend's node went (its domain died, or the toolstack is unplugging).
            if s.own == .connected || s.own == .closing {
                await disconnect(&s, reason: "frontend state node is gone")
                try await switchState(&s, .closing, reason: "frontend state node is gone")
                try await switchState(&s, .closed, reason: "frontend state node is gone")
            }
        case .initWait, .reconfiguring, .reconfigured:
            logger.debug("xenbus: frontend \(paths.frontend) is \(frontend); nothing to do")
        }
        return nil
    }

    /// The toolstack writes Initialising only into a node it has just made, and this
    /// driver never writes it: a node reading Initialising after this driver wrote another
    /// state is a new device at the same path. (A toolstack writing Closing, as xl's
    /// detach does, is not a replacement; the frontend answers it.)
    private func nodeWasReplaced(_ s: BackendState) async throws(XenbusError) -> Bool {
        guard s.own != .unknown, s.own != .initialising else { return false }
        return try await XenbusNodeReader(store: store, path: path).state() == .initialising
    }

    private func connect(_ s: inout BackendState, _ paths: XenbusDevicePaths, frontend: XenbusState) async throws(XenbusError) {
        // The frontend is Initialised or Connected: it has left Initialising.
        s.frontendSeenAway = true
        let values: Hooks.Frontend
        do {
            values = try await hooks.readFrontend(XenbusNodeReader(store: store, path: paths.frontend), paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("reading frontend keys", error), context: "reading frontend keys")
            return
        }
        let keys: XenbusKeys
        do {
            keys = try await hooks.connect(values, paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("connect", error), context: "connecting")
            return
        }
        s.connected = true
        do {
            try keys.validate()
        } catch {
            await fatal(&s, error, context: "connect keys")
            return
        }
        s.connectKeys = keys.keys
        try await switchState(&s, .connected, keys: keys, reason: "frontend is \(frontend), its keys accepted")
        if s.own == .connected { await s.node.clearError() }
    }

    private func switchState(_ s: inout BackendState, _ next: XenbusState, keys: XenbusKeys = XenbusKeys(),
                             reason: String) async throws(XenbusError) {
        if next == s.own, keys.entries.isEmpty { return }
        guard try await s.node.publish(keys, state: next) else {
            logger.info("xenbus: \(path) is gone; not switching to \(next)")
            return
        }
        logger.info("xenbus state \(s.own) -> \(next): \(reason)")
        s.own = next
        inbox.status.withLock { $0.state = next }
    }

    func disconnect(_ s: inout BackendState, reason: String) async {
        guard s.connected, let paths = s.paths else { return }
        s.connected = false
        logger.info("xenbus: disconnecting \(path): \(reason)")
        await hooks.disconnect(paths: paths, reason: reason)
        await s.node.remove(s.connectKeys)
        s.connectKeys = []
    }

    /// xenbus_dev_fatal: log, error node, disconnect, Closing.
    func fatal(_ s: inout BackendState, _ error: XenbusError, context: String) async {
        // The same error again while Closing (a bad value seen on every wake-up) is
        // reported once.
        guard s.own != .closing || s.lastFatal != error else { return }
        s.lastFatal = error
        s.hold = .refused
        let message = "\(context): \(error)"
        logger.error("xenbus: \(path) fatal: \(message); kept down until the frontend starts over")
        await s.node.writeError(errno: error.errno, message: message)
        await disconnect(&s, reason: message)
        do {
            try await switchState(&s, .closing, reason: message)
        } catch {
            logger.error("xenbus: \(path) could not switch to Closing: \(error)")
        }
    }

    /// A violation reported for a connection that is already gone changes nothing.
    func violated(_ s: inout BackendState, _ error: XenbusError) async {
        guard s.connected else { return }
        await fatal(&s, error, context: "data path")
    }

    func shutdown(_ s: inout BackendState) async {
        await disconnect(&s, reason: "driver closed")
        do {
            if s.own != .closing, s.own != .closed { try await switchState(&s, .closing, reason: "driver closed") }
            if s.own != .closed { try await switchState(&s, .closed, reason: "driver closed") }
        } catch {
            logger.error("xenbus: \(path) could not walk to Closed: \(error)")
        }
        await s.node.remove(s.featureKeys)
    }
}

/// The backend driver's private state, owned by its loop.
struct BackendState: XenbusMachineState {
    let node: XenbusOwnNode
    var paths: XenbusDevicePaths?
    /// The state this driver last wrote; Unknown until its first write.
    var own: XenbusState = .unknown
    /// Whether ``XenbusBackendHooks/disconnect(paths:reason:)`` is owed.
    var connected = false
    var featureKeys: [String] = []
    var connectKeys: [String] = []
    var watches: [XenStoreWatch] = []
    /// Frontend paths whose `state` is watched (more than one only after the node was
    /// replaced by one for another frontend).
    var watchedFrontends: Set<String> = []
    /// The error that last sent the device to Closing.
    var lastFatal: XenbusError?
    /// Why the device is kept down, if it is.
    var hold: BackendHold?
    /// Whether the frontend was seen (or known to be) past Initialising since this
    /// handshake began: only then does Initialising after a refusal mean it started over.
    var frontendSeenAway = false
}

/// Why a backend driver keeps its device down.
enum BackendHold: Equatable {
    /// Refused (a fatal error here or in an earlier process): served again only once the
    /// frontend writes Initialising.
    case refused
    /// Found Closing or Closed, unrefused, with the frontend's ring still published: not
    /// taken over; served again once the frontend is Closed (or starts over).
    case staleRing
}
