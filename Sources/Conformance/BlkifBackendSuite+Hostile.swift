import Blkif
import Dispatch
import Foundation
import SharedMemory
import Synchronization
import XenPlatform

extension BlkifBackendSuite {
    /// A grant reference no frontend is expected to have made.
    static let neverGranted: UInt32 = 0x7FFF_FFF0

    /// One lying request: built by `make` (a request and the lie written over its slot),
    /// answered with one of `accept`, then a valid read still answered OKAY.
    static func badRequest(_ id: String, _ accept: Set<BlkifStatus>, what: String,
                           _ make: @escaping @Sendable (BlkfrontPeer) throws -> (BlkifRequest, @Sendable (SharedView, BlkifLayout) -> Void)) -> Check {
        Check(id) { peer in
            try await peer.ensureConnected()
            let (request, lie) = try make(peer)
            let response = try await peer.exchange(request, lie: lie)
            let answered = "\(what): answered \(response.status)"
            guard accept.contains(response.status) else { return .fail("\(answered), expected \(accept.map { "\($0)" }.sorted())") }
            if let problem = await peer.probe() { return .fail("\(answered), then \(problem)") }
            return .pass("\(answered); the next read was answered OKAY")
        }
    }

    /// The indirect limit the backend published (clauses needing it are gated on it).
    static func indirectLimit(_ peer: BlkfrontPeer) -> Int {
        Int(peer.atConnected[BlkifBackendFeatures.Key.maxIndirectSegments] ?? "") ?? 0
    }

    static let badRequests: [Check] = {
        let honest: @Sendable (SharedView, BlkifLayout) -> Void = { _, _ in }
        let error: Set<BlkifStatus> = [.error]
        let refused: Set<BlkifStatus> = [.error, .notSupported]
        return [
            badRequest("BLKIF-BE-040", error, what: "read with nr_segments 0") { peer in
                (try peer.direct(.read, sector: 0, sectors: 8), { slot, _ in slot.store(UInt8(0), at: BlkifLayout.secondByteOffset) })
            },
            badRequest("BLKIF-BE-041", error, what: "write with nr_segments 0") { peer in
                (try peer.direct(.write, sector: 0, sectors: 8), { slot, _ in slot.store(UInt8(0), at: BlkifLayout.secondByteOffset) })
            },
            badRequest("BLKIF-BE-042", error, what: "write with nr_segments 12") { peer in
                (try peer.direct(.write, sector: 0, sectors: 8), { slot, _ in slot.store(UInt8(12), at: BlkifLayout.secondByteOffset) })
            },
            badRequest("BLKIF-BE-043", error, what: "write with first_sect 5, last_sect 2") { peer in
                (try peer.direct(.write, sector: 0, sectors: 8), { slot, layout in
                    slot.store(UInt8(5), at: layout.segmentsOffset + BlkifSegment.firstSectorOffset)
                    slot.store(UInt8(2), at: layout.segmentsOffset + BlkifSegment.lastSectorOffset)
                })
            },
            badRequest("BLKIF-BE-044", error, what: "read with last_sect 8") { peer in
                (try peer.direct(.read, sector: 0, sectors: 8), { slot, layout in
                    slot.store(UInt8(8), at: layout.segmentsOffset + BlkifSegment.lastSectorOffset)
                })
            },
            badRequest("BLKIF-BE-045", error, what: "read of 8 sectors from 4 before the end") { peer in
                (try peer.direct(.read, sector: peer.sectors - 4, sectors: 8), honest)
            },
            badRequest("BLKIF-BE-046", error, what: "write of 8 sectors at 2^64-4") { peer in
                (try peer.direct(.write, sector: .max - 3, sectors: 8), honest)
            },
            badRequest("BLKIF-BE-047", [.notSupported], what: "operation 4") { peer in
                (try peer.direct(.read, sector: 0, sectors: 8), { slot, _ in slot.store(BlkifOperation.reserved1, at: BlkifLayout.operationOffset) })
            },
            badRequest("BLKIF-BE-048", [.notSupported], what: "operation 9") { peer in
                (try peer.direct(.read, sector: 0, sectors: 8), { slot, _ in slot.store(UInt8(9), at: BlkifLayout.operationOffset) })
            },
            badRequest("BLKIF-BE-049", error, what: "discard of 16 sectors from 8 before the end") { peer in
                (.discard(BlkifDiscardRequest(handle: 0, id: peer.takeID(), sectorNumber: peer.sectors - 8, sectorCount: 16, secure: false)), honest)
            },
            Check("BLKIF-BE-050") { peer in
                try await peer.ensureConnected()
                if peer.atConnected[BlkifBackendFeatures.Key.discardSecure] == "1" { return .notApplicable("discard-secure is offered") }
                return try await badRequest("BLKIF-BE-050", refused, what: "secure discard without discard-secure") { peer in
                    (.discard(BlkifDiscardRequest(handle: 0, id: peer.takeID(), sectorNumber: 0, sectorCount: 8, secure: true)), honest)
                }.run(peer)
            },
            badRequest("BLKIF-BE-051", error, what: "write from a never-granted gref") { peer in
                (try peer.direct(.write, sector: 0, sectors: 8), { slot, layout in
                    slot.store(neverGranted, at: layout.segmentsOffset + BlkifSegment.grefOffset)
                })
            },
            Check("BLKIF-BE-052") { peer in
                try await peer.ensureConnected()
                let page = try peer.platform.grantTable.share(pages: 1, with: peer.backendID, writable: false)
                let before = pattern(4096, seed: 52)
                before.withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
                let verdict = try await badRequest("BLKIF-BE-052", error, what: "read into a read-only grant") { peer in
                    (try peer.direct(.read, sector: 0, sectors: 8), { slot, layout in
                        slot.store(page.refs[0], at: layout.segmentsOffset + BlkifSegment.grefOffset)
                    })
                }.run(peer)
                let unchanged = page.view.bytes(at: 0, length: 4096) == before
                if (try? peer.platform.grantTable.endAccess(page)) == nil { peer.stale.append(page) }
                guard unchanged else { return .fail("\(verdict.evidence); the read-only page was written") }
                return verdict
            },
            badRequest("BLKIF-BE-053", error, what: "write from a revoked gref") { peer in
                let page = try peer.platform.grantTable.share(pages: 1, with: peer.backendID, writable: true)
                try peer.platform.grantTable.endAccess(page)
                return (try peer.direct(.write, sector: 0, sectors: 8), { slot, layout in
                    slot.store(page.refs[0], at: layout.segmentsOffset + BlkifSegment.grefOffset)
                })
            },
            badRequest("BLKIF-BE-054", error, what: "indirect write whose indirect page was never granted") { peer in
                (try peer.indirectRequest(.write, sector: 0, count: 12, maxSegments: indirectLimit(peer)), { slot, layout in
                    slot.store(neverGranted, at: layout.indirectGrefsOffset)
                })
            },
            badRequest("BLKIF-BE-055", error, what: "indirect read of one segment more than advertised") { peer in
                let count = indirectLimit(peer) + 1
                for index in 0 ..< count {
                    BlkifIndirectPage.encodeSegment(BlkifSegment(gref: peer.data.refs[0], firstSector: 0, lastSector: 0),
                                                    index: index, into: peer.indirect.view)
                }
                let grefs = try BlkifIndirectGrefs(peer.indirect.refs)
                // The request names one indirect page; more than 512 segments would need two.
                guard count <= BlkifIndirectPage.segmentsPerPage else { throw PeerError.unusable("\(count) segments need more than one indirect page") }
                return (.indirect(try BlkifIndirectRequest(operation: .read, segmentCount: count, handle: 0, id: peer.takeID(),
                                                           sectorNumber: 0, indirectGrefs: grefs, maxSegments: count)), honest)
            },
            badRequest("BLKIF-BE-056", error, what: "indirect read with one segment's first_sect after its last_sect") { peer in
                let request = try peer.indirectRequest(.read, sector: 0, count: 12, maxSegments: indirectLimit(peer))
                BlkifIndirectPage.encodeSegment(BlkifSegment(gref: peer.data.refs[3], firstSector: 6, lastSector: 1),
                                                index: 3, into: peer.indirect.view)
                return (request, honest)
            },
            badRequest("BLKIF-BE-057", refused, what: "indirect request with indirect_op 3") { peer in
                (try peer.indirectRequest(.read, sector: 0, count: 12, maxSegments: indirectLimit(peer)), { slot, _ in
                    slot.store(UInt8(3), at: BlkifLayout.secondByteOffset)
                })
            },
            badRequest("BLKIF-BE-058", error, what: "indirect read with nr_segments 0") { peer in
                (try peer.indirectRequest(.read, sector: 0, count: 12, maxSegments: indirectLimit(peer)), { slot, _ in
                    slot.store(UInt16(0), at: BlkifLayout.indirectSegmentCountOffset)
                })
            },
            Check("BLKIF-BE-059") { peer in
                try await peer.ensureConnected()
                if let problem = try await fillRing(peer, warmUp: 0, sector: peer.sectors + 8, expect: .error) { return .fail(problem) }
                return .pass("a ring's worth of reads past the end: one ERROR per id; the next read was answered OKAY")
            },
        ]
    }()

    /// A handshake that lies: the backend must not read Connected, and must serve the
    /// device after a start over.
    static func badHandshake(_ id: String, what: String,
                             _ make: @escaping @Sendable (BlkfrontPeer) -> BlkfrontPeer.Handshake) -> Check {
        Check(id) { peer in
            try await peer.startOver()
            try await peer.publish(make(peer))
            let states = try await peer.watchBackend()
            var seen = "\(what): backend read \(states.joined(separator: " -> "))"
            if case let .present(error) = await peer.errorNode() { seen += ", error node '\(error)'" }
            guard !states.contains("Connected") else { return .fail(seen) }
            if let problem = await peer.servedAfterStartOver() { return .fail("\(seen); \(problem)") }
            return .pass("\(seen); served again after a start over")
        }
    }

    static func tampered(_ body: @escaping @Sendable (inout [String: String]) -> Void) -> BlkfrontPeer.Handshake {
        var handshake = BlkfrontPeer.Handshake()
        handshake.tamper = body
        return handshake
    }

    static let badHandshakes: [Check] = {
        typealias Key = BlkifFrontendFeatures.Key
        typealias Ring = BlkifConnectionKeys.Key
        return [
            badHandshake("BLKIF-BE-060", what: "ring-page-order 9") { _ in tampered { $0[Key.ringPageOrder] = "9" } },
            badHandshake("BLKIF-BE-061", what: "no ring-ref") { _ in tampered { $0[Ring.ringRef] = nil } },
            badHandshake("BLKIF-BE-062", what: "no event-channel") { _ in tampered { $0[Ring.eventChannel] = nil } },
            badHandshake("BLKIF-BE-063", what: "ring-ref never granted") { _ in tampered { $0[Ring.ringRef] = String(neverGranted) } },
            badHandshake("BLKIF-BE-064", what: "protocol sparc-abi") { _ in tampered { $0[Key.protocolName] = "sparc-abi" } },
            badHandshake("BLKIF-BE-065", what: "one queue more than multi-queue-max-queues") { peer in
                var handshake = BlkfrontPeer.Handshake()
                handshake.queues = (Int(peer.atInitWait[BlkifBackendFeatures.Key.maxQueues] ?? "") ?? 1) + 1
                return handshake
            },
            badHandshake("BLKIF-BE-066", what: "multi-queue-num-queues 0") { _ in tampered { $0[Key.queueCount] = "0" } },
            badHandshake("BLKIF-BE-067", what: "event-channel never allocated") { _ in tampered { $0[Ring.eventChannel] = "4093" } },
            badHandshake("BLKIF-BE-068", what: "ring-page-order 'two'") { _ in tampered { $0[Key.ringPageOrder] = "two" } },
            badHandshake("BLKIF-BE-069", what: "ring granted read-only") { _ in
                var handshake = BlkfrontPeer.Handshake()
                handshake.readOnlyRing = true
                return handshake
            },
        ]
    }()
}

extension BlkifBackendSuite {
    /// BLKIF-BE-070: requests whose sector flips between valid and past the end while
    /// published, each answered once with OKAY or ERROR, then a valid read served.
    static let doubleFetch = Check("BLKIF-BE-070") { peer in
        try await peer.ensureConnected()
        let rings = try peer.rings()
        let offset = rings.layout.sectorNumberOffset
        let outside = peer.sectors + 1024
        var statuses: [BlkifStatus: Int] = [:]
        for _ in 0 ..< 200 {
            let request = try peer.direct(.read, sector: 0, sectors: 8)
            let index = try rings.produce(request)
            let slot = rings.queues[0].ring.requestSlot(index)
            let flipper = Flipper(slot: slot, offset: offset, values: (0, outside))
            flipper.start()
            defer { flipper.stop() }
            try rings.push()
            let (responses, _) = try rings.awaitResponses([request.id])
            // awaitResponses has refused a second answer or one to another id.
            let status = responses[request.id]!.status
            guard status == .okay || status == .error else { return .fail("a flipped request was answered \(status)") }
            statuses[status, default: 0] += 1
        }
        if let problem = await peer.probe() { return .fail("after 200 flipped requests: \(problem)") }
        return .pass("200 requests with the sector flipping between 0 and \(outside): \(statuses[.okay] ?? 0) OKAY, \(statuses[.error] ?? 0) ERROR, each answered once; the next read OKAY")
    }
}

/// A thread storing two values in turn into a request slot until stopped: a frontend
/// rewriting a request while the backend reads it.
final class Flipper: @unchecked Sendable {
    // SAFETY (@unchecked): `slot` is shared memory written on purpose while the backend
    // reads it; `running` and `done` order the thread's start and end.
    let slot: SharedView
    let offset: Int
    let values: (UInt64, UInt64)
    let running = Atomic<Bool>(true)
    let done = DispatchSemaphore(value: 0)

    init(slot: SharedView, offset: Int, values: (UInt64, UInt64)) {
        self.slot = slot
        self.offset = offset
        self.values = values
    }

    func start() {
        Thread { [self] in
            var flip = false
            while running.load(ordering: .relaxed) {
                slot.store(flip ? values.1 : values.0, at: offset)
                flip.toggle()
            }
            done.signal()
        }.start()
    }

    func stop() {
        running.store(false, ordering: .relaxed)
        done.wait()
    }
}
