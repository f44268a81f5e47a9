import Blkif
import XenBus
import XenPlatform

extension BlkifBackendSuite {
    /// The backend feature keys XENBUS-002 compares between InitWait and Connected.
    static let featureKeys: [String] = {
        typealias Key = BlkifBackendFeatures.Key
        return [Key.flushCache, Key.barrier, Key.discard, Key.discardGranularity, Key.discardAlignment, Key.discardSecure,
                Key.persistent, Key.maxIndirectSegments, Key.maxQueues, Key.maxRingPageOrder]
    }()

    /// Connected, then the frontend walks Closing (and Closed, and Initialising, as far
    /// as `steps` says); what the backend read after each step.
    static func closeSequence(_ peer: BlkfrontPeer, steps: Int) async throws -> [XenbusState] {
        try await peer.ensureConnected()
        var seen: [XenbusState] = []
        try await peer.writeState(.closing)
        seen.append(try await peer.waitForBackend([.closing, .closed]))
        guard steps > 1 else { return seen }
        try await peer.writeState(.closed)
        seen.append(try await peer.waitForBackend([.closed]))
        guard steps > 2 else { return seen }
        try await peer.writeState(.initialising)
        seen.append(try await peer.waitForBackend([.initWait]))
        return seen
    }

    /// The frontend writes `raw` to its state node with nothing published; the backend
    /// must not connect, and must serve the device after a start over.
    static func lyingState(_ id: String, _ raw: String) -> Check {
        Check(id) { peer in
            try await peer.startOver()
            try await peer.writeState(raw)
            let states = try await peer.watchBackend()
            guard !states.contains("Connected") else { return .fail("state '\(raw)' with nothing published: backend read \(states)") }
            if let problem = await peer.servedAfterStartOver() { return .fail(problem) }
            return .pass("state '\(raw)': backend read \(states.joined(separator: " -> ")); served again after a start over")
        }
    }

    /// A fatal key error (ring-page-order 9, beyond any backend's maximum) after a start
    /// over; the states the backend read.
    static func fatalKeyError(_ peer: BlkfrontPeer) async throws -> [String] {
        try await peer.startOver()
        var handshake = BlkfrontPeer.Handshake()
        handshake.tamper = { $0[BlkifFrontendFeatures.Key.ringPageOrder] = "9" }
        try await peer.publish(handshake)
        return try await peer.watchBackend()
    }

    static let xenbus: [Check] = [
        Check("XENBUS-001") { peer in
            try await peer.ensureConnected()
            let seen = peer.stateValuesSeen.sorted()
            let bad = seen.filter { value in
                !(1 ... 3).contains(value.count) || UInt8(value).map { $0 > 8 } ?? true
            }
            return .expect(bad.isEmpty && !seen.isEmpty, "backend state values read over the run so far: \(seen)")
        },
        Check("XENBUS-002") { peer in
            try await peer.startOver(force: true)
            let initWait = peer.atInitWait
            try await peer.connect()
            let differing = featureKeys.filter { peer.atConnected[$0] != nil && initWait[$0] != peer.atConnected[$0] }
            let offered = featureKeys.filter { initWait[$0] != nil }
            return .expect(differing.isEmpty, differing.isEmpty
                ? "at the first InitWait the backend had published \(offered)"
                : "features not readable, or different, at InitWait: \(differing.map { "\($0)=\(initWait[$0] ?? "absent")" })")
        },
        Check("XENBUS-003") { peer in
            try await peer.startOver(force: true)
            try await peer.connect()
            return .pass("Initialised with a one-page native ring: the backend read Connected")
        },
        Check("XENBUS-004") { peer in
            try await peer.startOver(force: true)
            try await peer.connect()
            typealias Key = BlkifDiskProperties.Key
            let missing = [Key.sectors, Key.info, Key.sectorSize].filter { peer.atConnected[$0] == nil }
            return .expect(missing.isEmpty, missing.isEmpty
                ? "at the first Connected: sectors=\(peer.atConnected[Key.sectors]!) info=\(peer.atConnected[Key.info]!) sector-size=\(peer.atConnected[Key.sectorSize]!)"
                : "not readable at the first Connected: \(missing)")
        },
        Check("XENBUS-005") { peer in
            let seen = try await closeSequence(peer, steps: 1)
            return .pass("frontend Closing: backend read \(seen[0])")
        },
        Check("XENBUS-006") { peer in
            let seen = try await closeSequence(peer, steps: 2)
            return .pass("frontend Closing, Closed: backend read \(seen.map(\.description).joined(separator: ", "))")
        },
        Check("XENBUS-007") { peer in
            let seen = try await closeSequence(peer, steps: 3)
            return .pass("frontend Closing, Closed, Initialising: backend read \(seen.map(\.description).joined(separator: ", "))")
        },
        Check("XENBUS-008") { peer in
            try await peer.ensureConnected()
            try await peer.startOver(force: true)
            try await peer.connect()
            let bytes = pattern(8192, seed: 0x8008)
            let written = try await peer.write(bytes, sector: 40)
            let (read, back) = try await peer.read(sector: 40, count: 8192)
            return .expect(written.status == .okay && read.status == .okay && back == bytes,
                           "on the second handshake's ring: write \(written.status), read \(read.status), data \(back == bytes ? "equal" : "different")")
        },
        Check("XENBUS-009") { peer in
            guard peer.platform.grantTable.reportsStillMapped else { return .notApplicable(stillMappedUnseen) }
            _ = try await closeSequence(peer, steps: 2)
            let staleBefore = peer.stale.count
            peer.release()
            let kept = peer.stale.count - staleBefore
            return .expect(kept == 0, kept == 0 ? "after Closed the frontend ended access to its ring pages"
                                                 : "after Closed \(kept) ring page set(s) still mapped by the backend")
        },
        lyingState("XENBUS-010", XenbusState.connected.nodeValue),
        lyingState("XENBUS-011", "banana"),
        lyingState("XENBUS-012", "9"),
        Check("XENBUS-013") { peer in
            let states = try await fatalKeyError(peer)
            switch await peer.errorNode() {
            case .absent: return .fail("ring-page-order 9: no error node (backend read \(states))")
            case let .unreadable(why): return ClauseVerdict(.notExecuted, "the error node cannot be read here: \(why)")
            case let .present(error):
                let parts = error.split(separator: " ", maxSplits: 1)
                let wellFormed = parts.count == 2 && Int32(parts[0]) != nil && !parts[1].isEmpty
                return .expect(wellFormed, "ring-page-order 9: backend read \(states.joined(separator: " -> ")); error node '\(error)'")
            }
        },
        Check("XENBUS-014") { peer in
            let states = try await fatalKeyError(peer)
            let before = await peer.errorNode()
            if let problem = await peer.servedAfterStartOver() { return .fail("after the fatal error (\(states)): \(problem)") }
            // io/xenbus.h does not describe the error node: what became of it is evidence.
            return .pass("after the fatal error (\(states.joined(separator: " -> "))) and a start over: served; error node \(before), then \(await peer.errorNode())")
        },
        Check("XENBUS-015") { peer in
            let states = try await fatalKeyError(peer)
            try await peer.writeState(.initialised)
            let after = try await peer.watchBackend(stopOnRefusal: false)
            return .expect(!after.contains("Connected"),
                           "after the fatal error (\(states.joined(separator: " -> "))) and Initialised rewritten, the backend read \(after.joined(separator: " -> "))")
        },
        Check("XENBUS-023") { peer in
            try await peer.startOver()
            try await peer.writeState(.closing)
            let closing = try await peer.waitForBackend([.closing, .closed])
            try await peer.writeState(.closed)
            let closed = try await peer.waitForBackend([.closed])
            if let problem = await peer.servedAfterStartOver() { return .fail(problem) }
            return .pass("frontend Closing, Closed from InitWait: backend read \(closing), \(closed); served again after a start over")
        },
    ]
}
