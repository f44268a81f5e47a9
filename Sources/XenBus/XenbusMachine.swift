import Logging
import XenStore

/// What the shared driver loop needs of a driver's private state.
protocol XenbusMachineState {
    /// The driver's own device node.
    var node: XenbusOwnNode { get }
    /// Every watch the driver holds; the first is on its own node.
    var watches: [XenStoreWatch] { get set }
}

/// The loop both driver kinds run in their task: watch the own node, start, then on every
/// wake-up either close, give up on a lost watch, or reconcile with the other end. Each
/// role supplies the steps (``XenbusBackendDevice``, ``XenbusFrontendDevice``).
protocol XenbusMachine: Sendable {
    associatedtype State: XenbusMachineState
    var store: XenStoreClient { get }
    var path: String { get }
    var logger: Logger { get }
    var inbox: XenbusInbox { get }
    /// "backend" or "frontend", for the log line when the driver stops.
    var role: String { get }

    func makeState() -> State
    /// Discovery and the first state write.
    func start(_ s: inout State) async throws(XenbusError)
    /// Acts on the other end's current state; a stop reason ends the driver.
    func reconcile(_ s: inout State) async throws(XenbusError) -> XenbusStopReason?
    /// Disconnect, walk to Closed, remove the own keys (a close request).
    func shutdown(_ s: inout State) async
    /// Undoes a connect, if one is owed.
    func disconnect(_ s: inout State, reason: String) async
    /// `xenbus_dev_fatal`: log, error node, disconnect, Closing.
    func fatal(_ s: inout State, _ error: XenbusError, context: String) async
    /// The device reported that the other end broke the protocol on the data path.
    func violated(_ s: inout State, _ error: XenbusError) async
}

extension XenbusMachine {
    /// By default a reported violation is a fatal error.
    func violated(_ s: inout State, _ error: XenbusError) async {
        await fatal(&s, error, context: "data path")
    }
}

extension XenbusMachine {
    func run() async -> XenbusStopReason {
        var state = makeState()
        let reason = await loop(&state)
        for watch in state.watches { try? await watch.cancel() }
        logger.info("xenbus \(role) driver stopped: \(reason)")
        return reason
    }

    private func loop(_ s: inout State) async -> XenbusStopReason {
        do {
            s.watches.append(try await store.watch(path))
        } catch {
            logger.error("xenbus: cannot watch \(path): \(error)")
            return .connectionLost
        }
        inbox.pump(s.watches[0])
        do {
            guard try await s.node.exists() else { return .nodeRemoved }
            try await start(&s)
        } catch {
            if let reason = await handle(error, &s) { return reason }
        }
        for await _ in inbox.stream {
            let flags = inbox.flags.withLock { flags -> XenbusInbox.Flags in
                defer { flags.violation = nil }
                return flags
            }
            if flags.closeRequested {
                await shutdown(&s)
                return .closed
            }
            if flags.watchLost {
                await disconnect(&s, reason: "xenstore connection lost")
                return .connectionLost
            }
            if let violation = flags.violation { await violated(&s, violation) }
            do {
                if let reason = try await reconcile(&s) { return reason }
            } catch {
                if let reason = await handle(error, &s) { return reason }
            }
        }
        await disconnect(&s, reason: "driver loop ended")
        return .connectionLost
    }

    /// A xenstore failure of our own requests: a closed connection stops the driver,
    /// anything else is fatal for the device.
    private func handle(_ error: XenbusError, _ s: inout State) async -> XenbusStopReason? {
        if case .store(_, .connectionClosed) = error {
            await disconnect(&s, reason: "xenstore connection lost")
            return .connectionLost
        }
        await fatal(&s, error, context: "xenstore")
        return nil
    }
}
