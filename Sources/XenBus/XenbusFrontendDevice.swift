import Logging
import XenStore

/// What a device type plugs into ``XenbusFrontendDevice``: the device-specific steps of
/// the frontend half of the handshake. The driver calls them from one task, one at a time.
public protocol XenbusFrontendHooks: Sendable {
    /// What ``readBackend(_:paths:)`` makes of the backend's features.
    associatedtype Backend: Sendable

    /// Reads the features the backend advertised with InitWait. Throwing refuses them:
    /// the device goes to Closing with an error node.
    func readBackend(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Backend

    /// Sets the device up (grants its rings, allocates event channels) and returns the
    /// keys to publish (`ring-ref`, `event-channel`, `protocol`, ...). The driver writes
    /// them with state Initialised in one transaction, retried on EAGAIN, so this is
    /// called once per handshake however often the transaction retries. If it throws it
    /// must have undone its own partial work.
    func initialise(_ backend: Backend, paths: XenbusDevicePaths) async throws -> XenbusKeys

    /// The backend is Connected: read what it published (`sectors`, `info`, ...) and
    /// start. Throwing makes the device go to Closing with an error node.
    func connect(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws

    /// Undoes ``initialise(_:paths:)`` (and ``connect(_:paths:)``): called exactly once
    /// after each successful initialise, before the keys it returned are removed.
    func disconnect(paths: XenbusDevicePaths, reason: String) async

    /// The state the keys are published with: Initialised (blkfront), or Connected for a
    /// device whose backend waits for a Connected frontend (Linux's netback connects only
    /// then, and Linux's netfront publishes its keys with Connected).
    var stateWithKeys: XenbusState { get }
}

extension XenbusFrontendHooks {
    public var stateWithKeys: XenbusState { .initialised }
}

/// The frontend half of the xenbus handshake for one device, as Linux's blkfront runs it
/// (`blkback_changed`), independent of the device type:
///
/// 1. read `backend-id` and `backend` from the frontend node and check them
///    (``XenbusDevicePaths/discover(frontend:store:)``); watch the backend's `state`;
/// 2. switch to Initialising; if the backend is still Connected to an earlier instance of
///    this frontend (the frontend process restarted), first walk Closing and Closed until
///    the backend follows, as Linux's `xenbus_reset_state` does after kexec;
/// 3. backend InitWait: read its features (hook), set up and write the device's keys
///    with Initialised (or the hooks' ``XenbusFrontendHooks/stateWithKeys``) in one
///    transaction (hook);
/// 4. backend Connected: connect (hook), switch to Connected;
/// 5. backend Closing, Closed or gone while Initialised or Connected: disconnect (hook),
///    remove the keys, Closing, Closed; when the backend comes back to InitWait (it
///    restarted, or a new one was started), redo 3.
///
/// A backend that goes through InitWait while this frontend is Connected (a backend
/// driver restarting in place) is ignored, as blkfront ignores it: the new backend
/// reconnects from the keys that are still there. Errors go the way of
/// `xenbus_dev_fatal` (see ``XenbusBackendDevice``).
public final class XenbusFrontendDevice<Hooks: XenbusFrontendHooks>: Sendable {
    /// The frontend node this driver runs.
    public let frontendPath: String
    let run: XenbusDriverRun

    /// Starts the driver for the frontend node `frontendPath` over `store` (a connection
    /// acting as the frontend's domain).
    public init(store: XenStoreClient, frontend frontendPath: String, hooks: Hooks,
                logger: Logger = Logger(label: "xensplit.xenbus")) {
        self.frontendPath = frontendPath
        var logger = logger
        logger[metadataKey: "xenbus.device"] = "\(frontendPath)"
        run = XenbusDriverRun { [logger] inbox in
            await FrontendMachine(store: store, path: frontendPath, hooks: hooks, logger: logger, inbox: inbox).run()
        }
    }

    /// The state this driver last wrote.
    public var state: XenbusState { run.state }

    /// Both ends' paths, once discovery succeeded.
    public var paths: XenbusDevicePaths? { run.paths }

    /// Closes the device: disconnect (once), removes the keys it wrote, Closing, Closed,
    /// cancels its watches. Returns how the driver ended.
    @discardableResult
    public func close() async -> XenbusStopReason { await run.close() }

    /// Waits until the driver stops, and says why.
    public func stopped() async -> XenbusStopReason { await run.stopped() }

    /// The device saw the backend break the ring protocol (`reason` says how): the driver
    /// treats it as `xenbus_dev_fatal` (error node, disconnect, Closing), and connects
    /// again when the backend next offers InitWait. Safe from any thread.
    public func reportViolation(_ reason: String) {
        run.reportViolation(.protocolViolation(path: frontendPath, reason: reason))
    }
}

/// The frontend driver's loop and its private state; lives in one task.
struct FrontendMachine<Hooks: XenbusFrontendHooks>: XenbusMachine {
    let store: XenStoreClient
    let path: String
    let hooks: Hooks
    let logger: Logger
    let inbox: XenbusInbox

    var role: String { "frontend" }

    func makeState() -> FrontendState { FrontendState(node: XenbusOwnNode(store: store, path: path, logger: logger)) }

    func start(_ s: inout FrontendState) async throws(XenbusError) {
        let paths: XenbusDevicePaths
        do {
            paths = try await XenbusDevicePaths.discover(frontend: path, store: store)
        } catch {
            if case .store(_, .connectionClosed) = error { throw error }
            await fatal(&s, error, context: "reading backend details")
            return
        }
        s.paths = paths
        inbox.status.withLock { $0.paths = paths }
        let watch: XenStoreWatch
        do {
            watch = try await store.watch(paths.backend + "/state")
        } catch {
            throw .store(path: paths.backend + "/state", error)
        }
        s.watches.append(watch)
        inbox.pump(watch)
        // A malformed backend state was fatal already.
        guard let backend = try await backendState(&s, paths) else { return }
        if backend == .connected || backend == .initialised {
            // The backend still serves an earlier instance of this frontend: make it let go.
            s.resetting = true
            try await switchState(&s, .closing, reason: "backend is \(backend) from an earlier frontend: resetting")
        } else {
            try await switchState(&s, .initialising, reason: "driver started, backend \(paths.backend) is \(backend)")
        }
    }

    /// The backend's state; a malformed one is fatal and reads as nil.
    private func backendState(_ s: inout FrontendState, _ paths: XenbusDevicePaths) async throws(XenbusError) -> XenbusState? {
        do {
            return try await XenbusNodeReader(store: store, path: paths.backend).state()
        } catch {
            if case .store = error { throw error }
            await fatal(&s, error, context: "reading backend state")
            return nil
        }
    }

    func reconcile(_ s: inout FrontendState) async throws(XenbusError) -> XenbusStopReason? {
        guard try await s.node.exists() else {
            await disconnect(&s, reason: "frontend node removed by the toolstack")
            logger.info("xenbus: \(path) removed, stopping")
            return .nodeRemoved
        }
        guard let paths = s.paths, let backend = try await backendState(&s, paths) else { return nil }
        if s.resetting {
            if s.own == .closing, [.closing, .closed, .unknown, .initWait].contains(backend) {
                try await switchState(&s, .closed, reason: "reset: backend is \(backend)")
            }
            if s.own == .closed, [.closed, .unknown, .initWait, .initialising].contains(backend) {
                s.resetting = false
                try await switchState(&s, .initialising, reason: "reset done: backend is \(backend)")
            } else {
                return nil
            }
        }
        switch backend {
        case .initWait:
            if s.own == .initialising || s.own == .closed {
                try await initialise(&s, paths, reason: s.own == .closed ? "backend back to InitWait: reconnecting" : "backend is InitWait")
            }
        case .connected:
            if s.initialised, !s.started, s.own == .initialised || s.own == .connected { try await connect(&s, paths) }
        case .closing, .closed, .unknown:
            // Only a handshake under way or done is torn down: a frontend still
            // Initialising waits for the backend's next InitWait (a Closed backend is
            // usually one that has not yet seen this frontend come back; Unknown, one
            // whose node is gone or not yet written).
            let why = backend == .unknown ? "backend state node is gone" : "backend is \(backend)"
            if s.own == .initialised || s.own == .connected {
                await disconnect(&s, reason: why)
                try await switchState(&s, .closing, reason: why)
            }
            if s.own == .closing {
                try await switchState(&s, .closed, reason: why)
            }
        case .initialising, .initialised, .reconfiguring, .reconfigured:
            logger.debug("xenbus: backend \(paths.backend) is \(backend); nothing to do")
        }
        return nil
    }

    private func initialise(_ s: inout FrontendState, _ paths: XenbusDevicePaths, reason: String) async throws(XenbusError) {
        let reader = XenbusNodeReader(store: store, path: paths.backend)
        let features: Hooks.Backend
        do {
            features = try await hooks.readBackend(reader, paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("reading backend features", error), context: "reading backend features")
            return
        }
        let keys: XenbusKeys
        do {
            keys = try await hooks.initialise(features, paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("initialise", error), context: "initialising")
            return
        }
        s.initialised = true
        do {
            try keys.validate()
        } catch {
            await fatal(&s, error, context: "frontend keys")
            return
        }
        s.keys = keys.keys
        do {
            try await switchState(&s, hooks.stateWithKeys, keys: keys, reason: reason)
        } catch {
            if case .store(_, .connectionClosed) = error { throw error }
            // The transaction was aborted, so none of the keys are there.
            await fatal(&s, error, context: "writing frontend keys")
        }
    }

    private func connect(_ s: inout FrontendState, _ paths: XenbusDevicePaths) async throws(XenbusError) {
        do {
            try await hooks.connect(XenbusNodeReader(store: store, path: paths.backend), paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("connect", error), context: "connecting")
            return
        }
        s.started = true
        try await switchState(&s, .connected, reason: "backend is Connected")
        if s.own == .connected { await s.node.clearError() }
    }

    private func switchState(_ s: inout FrontendState, _ next: XenbusState, keys: XenbusKeys = XenbusKeys(),
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

    func disconnect(_ s: inout FrontendState, reason: String) async {
        guard s.initialised, let paths = s.paths else { return }
        s.initialised = false
        s.started = false
        logger.info("xenbus: disconnecting \(path): \(reason)")
        await hooks.disconnect(paths: paths, reason: reason)
        await s.node.remove(s.keys)
        s.keys = []
    }

    func fatal(_ s: inout FrontendState, _ error: XenbusError, context: String) async {
        // The same error again while Closing (a bad value seen on every wake-up) is
        // reported once.
        guard s.own != .closing || s.lastFatal != error else { return }
        s.lastFatal = error
        let message = "\(context): \(error)"
        logger.error("xenbus: \(path) fatal: \(message)")
        await s.node.writeError(errno: error.errno, message: message)
        await disconnect(&s, reason: message)
        do {
            try await switchState(&s, .closing, reason: message)
        } catch {
            logger.error("xenbus: \(path) could not switch to Closing: \(error)")
        }
    }

    func shutdown(_ s: inout FrontendState) async {
        await disconnect(&s, reason: "driver closed")
        do {
            if s.own != .closing, s.own != .closed { try await switchState(&s, .closing, reason: "driver closed") }
            if s.own != .closed { try await switchState(&s, .closed, reason: "driver closed") }
        } catch {
            logger.error("xenbus: \(path) could not walk to Closed: \(error)")
        }
    }
}

/// The frontend driver's private state, owned by its loop.
struct FrontendState: XenbusMachineState {
    let node: XenbusOwnNode
    var paths: XenbusDevicePaths?
    var own: XenbusState = .unknown
    /// Whether ``XenbusFrontendHooks/disconnect(paths:reason:)`` is owed.
    var initialised = false
    /// Whether ``XenbusFrontendHooks/connect(_:paths:)`` ran for this handshake.
    var started = false
    /// Keys written with Initialised, removed on disconnect.
    var keys: [String] = []
    /// Walking Closing/Closed to make a backend let go of an earlier instance.
    var resetting = false
    var watches: [XenStoreWatch] = []
    /// The error that last sent the device to Closing.
    var lastFatal: XenbusError?
}
