import XenBus

/// The frontend-role clauses of xenbus.tsv, for a scripted backend of any device type.
/// Each check brings the device to the state it needs, so any subset runs alone.
enum FrontendXenbusChecks<Peer: ScriptedBackend> {
    typealias Check = ClauseCheck<Peer>

    /// A fresh honest handshake up to Connected.
    static func freshHandshake(_ peer: Peer) async throws {
        try await peer.startOver()
        try await peer.offer()
        try await peer.connect()
    }

    /// The checks; `ringKeys` reads a ring's grant and event channel out of the
    /// frontend's nodes (the device's key names). `connectsAtInitWait`: the device's
    /// frontends switch to Connected once they have published their rings, at the
    /// backend's InitWait (netif: Linux's netfront does), so XENBUS-017 does not bind them.
    static func checks(connectsAtInitWait: Bool = false,
                       ringKeys: @escaping @Sendable ([String: String]) -> (ring: String?, port: String?)) -> [Check] {
        [
            Check("XENBUS-001") { peer in
                try await freshHandshake(peer)
                try await peer.startOver()
                let bad = peer.stateValuesSeen.filter { UInt8($0).map { $0 > 8 } ?? true }
                return .expect(bad.isEmpty, "frontend state values read: \(peer.stateValuesSeen.sorted().joined(separator: ", "))")
            },
            Check("XENBUS-016") { peer in
                try await peer.startOver()
                try await peer.offer()
                let (ring, port) = ringKeys(peer.atInitialised)
                return .expect(ring != nil && port != nil,
                               "at the first Initialised: ring \(ring ?? "absent"), event channel \(port ?? "absent")")
            },
            Check("XENBUS-017") { peer in
                if connectsAtInitWait {
                    return .notApplicable("this device's frontends switch to Connected at the backend's InitWait, once their rings are published")
                }
                try await peer.startOver()
                peer.connectedEarly = []
                try await peer.offer()
                // Held at InitWait with the ring published: the frontend must wait.
                let held = try await peer.watchFrontend()
                try await peer.connect()
                return .expect(peer.connectedEarly.isEmpty,
                               peer.connectedEarly.isEmpty ? "held at InitWait the frontend read \(held.joined(separator: " -> ")); Connected only after the backend"
                                                           : "\(peer.connectedEarly.first!) (held: \(held.joined(separator: " -> ")))")
            },
            Check("XENBUS-018") { peer in
                try await peer.ensureConnected()
                try await peer.writeState(.closing)
                let state = try await peer.waitForFrontend([.closed])
                return .pass("backend Closing: frontend read \(state)")
            },
            Check("XENBUS-019") { peer in
                try await peer.ensureConnected()
                let before = ringKeys(peer.atInitialised).ring ?? "absent"
                try await peer.startOver()
                try await peer.offer()
                let after = ringKeys(peer.atInitialised).ring
                try await peer.connect()
                return .expect(after != nil && peer.mapProblem == nil,
                               "backend Closed then InitWait: frontend Initialised again with ring \(after ?? "absent") (was \(before))\(peer.mapProblem.map { "; \($0)" } ?? "")")
            },
            Check("XENBUS-021") { peer in
                // A frontend that takes each device once gets the lie on its first handshake.
                if !peer.takesDeviceOnce { try await peer.ensureConnected() }
                try await peer.startOver()
                try await peer.offer()
                try await peer.writeRawState("eleven")
                var states = try await peer.watchFrontend()
                // A frontend Connected at InitWait already was not connected by the lie:
                // staying so is allowed, leaving and coming back is not.
                var stayed = false
                if connectsAtInitWait, states.first == "Connected" {
                    states.removeFirst()
                    stayed = states.isEmpty
                    if stayed { states = ["Connected (as before the lie: it connects at InitWait)"] }
                }
                guard stayed || !states.contains("Connected") else { return .fail("backend state 'eleven': the frontend read \(states.joined(separator: " -> "))") }
                if peer.takesDeviceOnce {
                    return .pass("backend state 'eleven': the frontend read \(states.joined(separator: " -> ")); no second handshake tried (the frontend takes each device once)")
                }
                try await freshHandshake(peer)
                return .pass("backend state 'eleven': the frontend read \(states.joined(separator: " -> ")); connected to an honest backend after a start over")
            },
            Check("XENBUS-022") { peer in
                try await peer.ensureConnected()
                let seen = try await peer.withBackendNodeRemoved { () async throws -> String in
                    let deadline = ContinuousClock.now + Peer.patience
                    while ContinuousClock.now < deadline {
                        guard (try? await peer.store.readString(peer.frontendPath + "/state")) != nil else { return "its node gone" }
                        if await peer.frontendState() == .closed { return "Closed" }
                        // Reads the frontend sent on its own (a partition table) are still
                        // answered: unanswered, they could hold it from seeing the removal.
                        peer.frontend.whileWaiting?()
                        try await Task.sleep(for: .milliseconds(2))
                    }
                    return "still \(await peer.describeFrontendState())"
                }
                guard !seen.hasPrefix("still") else { return .fail("backend node removed: the frontend reads \(seen)") }
                if peer.takesDeviceOnce { return .pass("backend node removed: the frontend read \(seen); no second handshake tried (the frontend takes each device once)") }
                // Not part of the clause, but the rest of a run needs it: say whether it came back.
                let again = (try? await freshHandshake(peer)) != nil
                return .pass("backend node removed: the frontend read \(seen); \(again ? "connected again" : "did not connect again") once the node came back")
            },
        
        ]
    }
}
