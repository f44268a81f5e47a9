import Blkif
import XenBus

/// The checks a scripted blkback runs against a block frontend: frontend-role clauses of
/// xenbus.tsv, ring.tsv and blkif-frontend.tsv that the handshake shows. Each check brings
/// the device to the state it needs, so any subset runs alone.
public enum BlkifFrontendSuite {
    public typealias Check = ClauseCheck<BlkbackPeer>

    /// Every check written so far.
    public static var checks: [Check] { xenbus + ring + keys + ringKeys + badKeys + io }

    /// The evidence for a frontend that takes each device once: what a second handshake
    /// would have shown is not tried.
    static let onceOnly = "no second handshake tried (the frontend takes each device once)"

    /// A fresh honest handshake up to Connected.
    static func freshHandshake(_ peer: BlkbackPeer) async throws {
        try await peer.startOver()
        try await peer.offer()
        try await peer.connect()
    }

    /// The frontend is offered `disk` at Connected; it must not connect on it, and must
    /// connect to an honest backend after a start over.
    static func lyingDisk(_ id: String, _ key: String, _ value: String) -> Check {
        Check(id) { peer in
            try await peer.startOver()
            try await peer.offer()
            var disk = BlkbackPeer.honestDisk
            disk[key] = value
            try await peer.connect(disk, awaitFrontend: false)
            let states = try await peer.watchFrontend()
            guard !states.contains("Connected") else { return .fail("with \(key) '\(value)' the frontend read \(states.joined(separator: " -> "))") }
            if peer.takesDeviceOnce { return .pass("with \(key) '\(value)' the frontend read \(states.joined(separator: " -> ")); \(onceOnly)") }
            try await freshHandshake(peer)
            return .pass("with \(key) '\(value)' the frontend read \(states.joined(separator: " -> ")); connected to an honest backend after a start over")
        }
    }

    // MARK: xenbus.tsv

    static let xenbus: [Check] = FrontendXenbusChecks<BlkbackPeer>.checks { nodes in
        (nodes["ring-ref"] ?? nodes["queue-0/ring-ref"], nodes["event-channel"] ?? nodes["queue-0/event-channel"])
    }

    // MARK: ring.tsv

    static let ring: [Check] = [
        Check("RING-012") { peer in
            try await peer.startOver()
            try await peer.offer()
            guard peer.headerAtMap.count == 4 else { return .fail(peer.mapProblem ?? "ring not mapped") }
            let h = peer.headerAtMap
            return .expect(h == [0, 1, 0, 1], "at Initialised: req_prod \(h[0]) req_event \(h[1]) rsp_prod \(h[2]) rsp_event \(h[3])")
        },
    ]

    // MARK: blkif-frontend.tsv

    static let keys: [Check] = [
        Check("BLKIF-FE-001") { peer in
            try await peer.startOver()
            try await peer.offer()
            let ring = peer.atInitialised["ring-ref"], port = peer.atInitialised["event-channel"]
            let decimal = ring.flatMap(UInt32.init) != nil && port.flatMap(UInt32.init) != nil
            return .expect(decimal && peer.mapProblem == nil,
                           "ring-ref \(ring ?? "absent"), event-channel \(port ?? "absent")\(peer.mapProblem.map { ": \($0)" } ?? ": mapped and bound")")
        },
        Check("BLKIF-FE-004") { peer in
            try await peer.ensureConnected()
            let value = peer.atInitialised[BlkifFrontendFeatures.Key.protocolName]
            return .expect(value == nil || ["x86_32-abi", "x86_64-abi", "arm-abi"].contains(value!), "protocol reads \(value ?? "absent")")
        },
        Check("BLKIF-FE-005") { peer in
            try await peer.ensureConnected()
            let value = peer.atInitialised["feature-persistent"]
            return .expect(value == nil || value == "0" || value == "1", "feature-persistent reads \(value ?? "absent")")
        },
    ]

    static let badKeys: [Check] = [
        lyingDisk("BLKIF-FE-033", BlkifDiskProperties.Key.sectors, "lots"),
        lyingDisk("BLKIF-FE-034", BlkifDiskProperties.Key.sectorSize, "1000"),
        Check("BLKIF-FE-036") { peer in
            try await peer.startOver()
            try await peer.offer(BlkbackPeer.honestFeatures.merging(["multi-queue-max-queues": "0"]) { $1 })
            let queues = peer.atInitialised["multi-queue-num-queues"]
            let ring = peer.atInitialised["ring-ref"] ?? peer.atInitialised["queue-0/ring-ref"]
            let oneRing = (queues == nil || queues == "1") && ring != nil
            guard oneRing else { return .fail("with multi-queue-max-queues 0: multi-queue-num-queues \(queues ?? "absent"), ring-ref \(ring ?? "absent")") }
            try await peer.connect()
            return .pass("with multi-queue-max-queues 0: one ring (ring-ref \(ring!), multi-queue-num-queues \(queues ?? "absent")), Connected")
        },
        Check("BLKIF-FE-037") { peer in
            try await peer.startOver()
            let features = BlkbackPeer.honestFeatures.merging(["max-ring-page-order": "many"]) { $1 }
            let state = try await peer.offer(features, until: [.initialised, .connected, .closing, .closed])
            var seen = "the frontend read \(state)"
            if state == .initialised || state == .connected {
                let order = peer.atInitialised["ring-page-order"]
                guard (order == nil || order == "0"), peer.atInitialised["ring-ref"] != nil else {
                    return .fail("with max-ring-page-order 'many': ring-page-order \(order ?? "absent"), ring-ref \(peer.atInitialised["ring-ref"] ?? "absent")")
                }
                try await peer.connect()
                seen = "a one-page ring (ring-page-order \(order ?? "absent")), Connected"
            }
            if peer.takesDeviceOnce { return .pass("with max-ring-page-order 'many': \(seen); \(onceOnly)") }
            try await freshHandshake(peer)
            return .pass("with max-ring-page-order 'many': \(seen); connected to an honest backend after a start over")
        },
        Check("BLKIF-FE-038") { peer in
            try await peer.startOver()
            try await peer.offer()
            let states = try await peer.watchFrontend()
            let alive = states.allSatisfy { $0 == "Initialised" }
            try await peer.connect()
            return .expect(alive, "held at InitWait after its Initialised, the frontend read \(states.joined(separator: " -> ")); connected once the backend did")
        },
    ]
}
