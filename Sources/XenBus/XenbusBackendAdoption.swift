import Logging
import XenStore

extension XenbusBackendHooks {
    /// By default a device is not adopted: a driver finding it Connected on both ends
    /// goes through InitWait and connects again from the frontend's keys.
    public func adopts(paths: XenbusDevicePaths) async -> Bool { false }
}

extension BackendMachine {
    /// A device whose backend node and frontend both read Connected when the driver starts
    /// was served by an earlier process that did not close it (killed, or handed over).
    /// If the device type adopts it (``XenbusBackendHooks/adopts(paths:)``), the driver
    /// takes the connection over without a state change the frontend could see: it asks
    /// for the features (not written: the frontend negotiated against those published),
    /// reads the frontend's keys and connects, and leaves the state node at Connected.
    /// A refusal (a hook throws) is fatal as in a handshake: error node, Closing. True when
    /// the driver adopted the device or refused it; false to start a handshake as usual.
    func adoptsConnection(_ s: inout BackendState, _ paths: XenbusDevicePaths) async throws(XenbusError) -> Bool {
        let own = try? await XenbusNodeReader(store: store, path: path).state()
        let frontend = try? await XenbusNodeReader(store: store, path: paths.frontend).state()
        guard own == .connected, frontend == .connected, await hooks.adopts(paths: paths) else { return false }
        // The node is Connected and is this driver's from now on; nothing is written yet.
        s.own = .connected
        s.frontendSeenAway = true
        inbox.status.withLock { $0.state = .connected }
        let features: XenbusKeys
        do {
            features = try await hooks.features(for: paths)
            try features.validate()
        } catch {
            await fatal(&s, XenbusError.fromHook("features", error), context: "adopting a Connected device: features")
            return true
        }
        s.featureKeys = features.keys
        let values: Hooks.Frontend
        do {
            values = try await hooks.readFrontend(XenbusNodeReader(store: store, path: paths.frontend), paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("reading frontend keys", error),
                        context: "adopting a Connected device: reading frontend keys")
            return true
        }
        let keys: XenbusKeys
        do {
            keys = try await hooks.connect(values, paths: paths)
        } catch {
            await fatal(&s, XenbusError.fromHook("connect", error), context: "adopting a Connected device: connecting")
            return true
        }
        s.connected = true
        do {
            try keys.validate()
        } catch {
            await fatal(&s, error, context: "adopting a Connected device: connect keys")
            return true
        }
        s.connectKeys = keys.keys
        // The earlier process published these; a value that changed meanwhile (a disk
        // resized while no process served it) is rewritten with the state, as a resize
        // is, so a frontend watching the state notices. Otherwise nothing is written.
        if try await publishedDiffers(keys) {
            guard try await s.node.publish(keys, state: .connected) else { return true }
            logger.info("xenbus: \(path) adopted; connect keys changed while down, republished")
        } else {
            logger.info("xenbus: \(path) adopted: both ends Connected, taken over without a state change")
        }
        return true
    }

    /// Whether any of `keys` reads differently (or is missing) under the backend node.
    private func publishedDiffers(_ keys: XenbusKeys) async throws(XenbusError) -> Bool {
        let node = XenbusNodeReader(store: store, path: path)
        for (key, value) in keys.entries where try await node.optionalString(key) != value { return true }
        return false
    }
}
