import Blkif
import Glibc
import SharedMemory
import XenBus
import XenPlatform
import XenRing

/// The frontend-role checks that need requests: the scripted blkback serves its disk and
/// the frontend's user side (``FrontendBlockIO``) makes the frontend send them.
extension BlkifFrontendSuite {
    /// An honest handshake offering `features` on top of the honest ones, and `disk`.
    static func connect(_ peer: BlkbackPeer, offering features: [String: String] = [:],
                        disk: [String: String] = BlkbackPeer.honestDisk) async throws {
        try await peer.startOver()
        try await peer.offer(BlkbackPeer.honestFeatures.merging(features) { $1 })
        try await peer.connect(disk)
    }

    /// A write of `bytes` at byte `offset` then a read of it back, served honestly: nil
    /// when the read returned what was written, else what went wrong.
    static func roundTrip(_ peer: BlkbackPeer, offset: UInt64, bytes: [UInt8]) async throws -> String? {
        let written = try await peer.honestly([.write(offset: offset, bytes: bytes)])
        if let error = written[0].error { return "the write at \(offset) failed: \(error)" }
        let read = try await peer.honestly([.read(offset: offset, length: bytes.count)])
        if let error = read[0].error { return "the read at \(offset) failed: \(error)" }
        return read[0].data == bytes ? nil : "the read at \(offset) returned other bytes than were written"
    }

    /// A mixed load: writes of several sizes (one page to 256 KiB), reads of them, a
    /// flush, some of it in flight at once.
    static func workload(_ peer: BlkbackPeer, seed: UInt64) async throws -> String? {
        for (index, length) in [4096, 512 * 3, 65536, 262_144].enumerated() {
            let offset = UInt64(index) * 1_048_576 + 512
            if let problem = try await roundTrip(peer, offset: offset, bytes: pattern(length, seed: seed &+ UInt64(index))) { return problem }
        }
        let batch: [FrontendBlockIOOperation] = (0 ..< 24).map { .read(offset: UInt64($0) * 8192, length: 8192) } + [.flush]
        let results = try await peer.honestly(batch)
        if let bad = results.dropLast().firstIndex(where: { $0.error != nil }) { return "read \(bad) of a batch failed: \(results[bad].error!)" }
        return nil
    }

    /// Requests seen that `violates` names, as evidence.
    static func judge(_ peer: BlkbackPeer, _ what: String, _ violates: (SeenRequest) -> String?) -> ClauseVerdict {
        let bad = peer.seen.compactMap { request in violates(request).map { "id \(request.id): \($0)" } }
        return .expect(bad.isEmpty, bad.isEmpty ? "\(peer.seen.count) requests, \(what)" : bad.prefix(3).joined(separator: "; "))
    }

    /// Runs the honest workload against `features` and judges every request seen.
    static func underLoad(_ id: String, offering features: [String: String] = [:], _ what: String,
                          _ violates: @escaping @Sendable (SeenRequest, BlkbackPeer) -> String?) -> Check {
        Check(id) { peer in
            try await connect(peer, offering: features)
            peer.forgetSeen()
            if let problem = try await workload(peer, seed: id.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }) { return .fail(problem) }
            return judge(peer, what) { violates($0, peer) }
        }
    }

    /// The direct or indirect operation of a request, as the frontend meant it.
    static func dataOperation(_ request: SeenRequest) -> BlkifOperation? {
        switch request.request {
        case let .direct(r)?: return r.operation.operation
        case let .indirect(r)?: return r.operation == .read ? .read : .write
        default: return nil
        }
    }

    /// A read at `offset` whose first request is answered by `answer`, then served
    /// honestly for ``BlkbackPeer/refusalWindow``; a frontend that stopped its ring over
    /// the lie gets a start over, after which it may send the read again. Returns what the
    /// user saw and whether it took the start over.
    static func lyingRead(_ peer: BlkbackPeer, offset: UInt64 = 2 << 20,
                          answer: @escaping (SeenRequest) -> BlkbackAnswer) async throws -> (result: FrontendBlockIOResult, restarted: Bool) {
        try await peer.ensureConnected()
        try await peer.serveUntilQuiet()
        let pending = try peer.submit([.read(offset: offset, length: 4096)])
        try await peer.serve(requestAt: offset, answer: answer)
        let deadline = ContinuousClock.now + BlkbackPeer.refusalWindow
        while !pending.isDone, ContinuousClock.now < deadline {
            if try peer.serveOnce({ _ in .honest }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
        if pending.isDone { return (try pending.get()[0], false) }
        // A frontend that takes each device once cannot be started over to free the read:
        // it is reported held (Linux's blkfront stops a ring that lied and keeps the read).
        if peer.takesDeviceOnce {
            return (FrontendBlockIOResult(error: "\(heldMark) no completion \(BlkbackPeer.refusalWindow) after the lie, no start over tried (the frontend takes each device once)"), false)
        }
        try await connect(peer)
        return (try await peer.serve(until: pending)[0], true)
    }

    /// The start of a ``lyingRead(_:offset:answer:)`` result's error when the read was held.
    static let heldMark = "held:"

    /// How the user's read ended, as evidence.
    static func describe(_ read: (result: FrontendBlockIOResult, restarted: Bool)) -> String {
        let outcome = read.result.error.map { "failed (\($0))" } ?? "completed"
        return read.restarted ? "was held (the frontend stopped its ring) and \(outcome) after a start over" : "\(outcome)"
    }

    /// Nil when a write and read through the frontend still work (after a start over if
    /// it closed), else why not.
    /// What the evidence says of the device after a lie: served afresh, or not asked.
    static func servedAgain(_ peer: BlkbackPeer) -> String {
        peer.takesDeviceOnce ? "no fresh connection tried (the frontend takes each device once)" : "the device still serves"
    }

    /// A frontend that takes each device once cannot be asked for a fresh connection: nil,
    /// and the clause's evidence stands on what the lie did.
    static func stillServes(_ peer: BlkbackPeer, seed: UInt64) async -> String? {
        if peer.takesDeviceOnce { return nil }
        do {
            // A fresh connection: the lie may have left this one's indices apart.
            try await connect(peer)
            return try await roundTrip(peer, offset: 12288, bytes: pattern(4096, seed: seed))
        } catch {
            return "afterwards: \(error)"
        }
    }

    /// The checks that make requests through the frontend's user side: without one they
    /// are not executed (``CheckCannotRun``), before any handshake.
    static let io: [Check] = (ringIO + dataIO + lies).map { check in
        Check(check.id) { peer in
            _ = try peer.userSide()
            return try await check.run(peer)
        }
    }

    // MARK: blkif-frontend.tsv, ring keys (no requests)

    static let ringKeys: [Check] = [
        Check("BLKIF-FE-002") { peer in
            try await peer.startOver()
            try await peer.offer(BlkbackPeer.honestFeatures.merging(["max-ring-page-order": "2"]) { $1 })
            let nodes = peer.atInitialised
            let order = nodes["ring-page-order"].flatMap(Int.init) ?? 0
            guard order <= 2 else { return .fail("with max-ring-page-order 2 offered, ring-page-order reads \(order)") }
            let refs = order == 0 ? [nodes["ring-ref"]] : (0 ..< (1 << order)).map { nodes["ring-ref\($0)"] }
            for (index, raw) in refs.enumerated() {
                guard let raw, let ref = GrantRef(raw) else { return .fail("ring-ref\(order == 0 ? "" : "\(index)") reads \(raw ?? "absent")") }
                do { try peer.platform.grantMapper.unmap(try peer.platform.grantMapper.map([ref], from: peer.frontendID, writable: true)) } catch {
                    return .fail("ring page \(index) (gref \(ref)) does not map: \(error)")
                }
            }
            try await peer.startOver()
            return .pass("with max-ring-page-order 2 offered: ring-page-order \(nodes["ring-page-order"] ?? "absent"), \(refs.count) ring page(s), each maps")
        },
        Check("BLKIF-FE-003") { peer in
            try await peer.startOver()
            try await peer.offer(BlkbackPeer.honestFeatures.merging(["multi-queue-max-queues": "4"]) { $1 })
            let nodes = peer.atInitialised
            try await peer.startOver()
            guard let raw = nodes["multi-queue-num-queues"] else {
                // io/blkif.h: one queue is asked for with the top-level keys, as before.
                return .expect(nodes["ring-ref"] != nil, "multi-queue-num-queues absent: one ring, ring-ref \(nodes["ring-ref"] ?? "absent")")
            }
            guard let count = Int(raw), (1 ... 4).contains(count) else { return .fail("multi-queue-num-queues reads \(raw) with 4 offered") }
            let missing = (0 ..< count).filter { nodes["queue-\($0)/event-channel"] == nil || (nodes["queue-\($0)/ring-ref"] ?? nodes["queue-\($0)/ring-ref0"]) == nil }
            return .expect(missing.isEmpty, "multi-queue-num-queues \(count)\(missing.isEmpty ? ", each queue-N with ring-ref and event-channel" : "; queue-\(missing[0]) lacks its keys")")
        },
    ]

    // MARK: ring.tsv

    static let ringIO: [Check] = [
        Check("RING-001") { peer in
            try await connect(peer)
            peer.forgetSeen()
            let bytes = pattern(4096, seed: 1)
            if let problem = try await roundTrip(peer, offset: 0, bytes: bytes) { return .fail(problem) }
            let first = peer.seen.first.map { "slot \($0.index) (byte \(SharedRing.Header.size) + \($0.index) x \(peer.abi.slotSize))" } ?? "none"
            return .pass("a write and a read answered at the slots their indices name, first \(first); the read returned the bytes written")
        },
        Check("RING-002") { peer in
            try await connect(peer)
            peer.forgetSeen()
            let size = peer.back?.size ?? 0
            // Past a wrap: more requests than slots, one batch after another.
            for round in 0 ..< 3 {
                let batch: [FrontendBlockIOOperation] = (0 ..< Int(size)).map { .read(offset: UInt64(round * Int(size) + $0) * 4096, length: 4096) }
                let results = try await peer.honestly(batch)
                if let bad = results.firstIndex(where: { $0.error != nil }) { return .fail("round \(round): read \(bad) failed: \(results[bad].error!)") }
                for (index, result) in results.enumerated() {
                    let offset = (round * Int(size) + index) * 4096
                    guard result.data == Array(peer.disk[offset ..< offset + 4096]) else { return .fail("round \(round): read \(index) returned other bytes than the disk holds") }
                }
            }
            let last = peer.seen.map(\.index).max() ?? 0
            return .expect(last >= size, "\(peer.seen.count) requests over ring indices 0...\(last) of a \(size)-slot ring, each answered in its slot and completed with the disk's bytes")
        },
        Check("RING-013") { peer in
            try await connect(peer)
            peer.forgetSeen()
            let size = Int(peer.back?.size ?? 0)
            // Hold everything: the frontend can publish only what the ring holds.
            let pending = try peer.submit((0 ..< 2 * size).map { .read(offset: UInt64($0) * 4096, length: 4096) })
            var quiet = 0
            while quiet < 200, peer.seen.count <= size {
                quiet = try peer.serveOnce { _ in .hold } == 0 ? quiet + 1 : 0
                try await Task.sleep(for: .milliseconds(1))
            }
            let most = peer.seen.count
            try peer.release()
            let results = try await peer.serve(until: pending)
            if let bad = results.firstIndex(where: { $0.error != nil }) { return .fail("read \(bad) failed once released: \(results[bad].error!)") }
            return .expect(most <= size, "with none answered, \(most) requests were published on a \(size)-slot ring; all \(2 * size) completed once answered")
        },
        Check("RING-014") { peer in
            try await peer.ensureConnected()
            // A kernel frontend reads on its own once connected (Linux's blkfront: the
            // partition table): serve until the ring is quiet with req_event set, then ask.
            guard peer.back != nil else { return .fail(peer.mapProblem ?? "no ring") }
            let quiet = "the frontend kept publishing requests of its own for \(BlkbackPeer.patience)"
            do {
                // peer.back afresh each time: the ring is a value whose req_cons serving moves.
                try await peer.serve(within: BlkbackPeer.patience, until: { try peer.back.map { try !$0.finalCheckForRequests() } ?? true },
                                     failure: { quiet })
            } catch PeerError.unusable(quiet) {
                return .fail(quiet)
            }
            guard let events = peer.events else { return .fail(peer.mapProblem ?? "no event channel") }
            peer.drainEvents()
            let pending = try peer.submit([.read(offset: 0, length: 4096)])
            var fd = pollfd(fd: events.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&fd, 1, Int32(BlkbackPeer.patience.components.seconds * 1000))
            let results = try await peer.serve(until: pending)
            return .expect(ready > 0 && results[0].error == nil,
                           ready > 0 ? "req_event set to req_cons + 1 while idle: the next request woke the backend's event channel" : "no event within \(BlkbackPeer.patience) of the next request")
        },
        Check("RING-015") { peer in
            try await peer.ensureConnected()
            _ = try await peer.honestly([.read(offset: 0, length: 4096)])
            guard let shared = peer.back?.shared else { return .fail(peer.mapProblem ?? "no ring") }
            let deadline = ContinuousClock.now + BlkbackPeer.patience
            while ContinuousClock.now < deadline {
                let event = shared.loadResponseEvent(), producer = shared.loadResponseProducer()
                if event == producer &+ 1 { return .pass("idle after its responses: rsp_event \(event), rsp_prod \(producer)") }
                try await Task.sleep(for: .milliseconds(2))
            }
            return .fail("idle after its responses: rsp_event \(shared.loadResponseEvent()), rsp_prod \(shared.loadResponseProducer())")
        },
        Check("RING-016") { peer in
            try await peer.ensureConnected()
            let pending = try peer.submit([.read(offset: 8192, length: 4096)])
            try await peer.serve(requestAt: 8192) { _ in .hold }
            guard let back = peer.back else { return .fail("no ring") }
            back.shared.storeResponseProducer(back.responseProducerPrivate &+ back.size)
            peer.notifyFrontend()
            let states = try await peer.watchFrontend()
            if let results = try? pending.get(), results[0].error == nil { return .fail("a read completed as a success off a response producer a ring ahead (states \(states.joined(separator: " -> ")))") }
            if peer.takesDeviceOnce {
                return .pass("no read completed off a response producer a ring ahead (frontend: \(states.joined(separator: " -> "))); \(onceOnly)")
            }
            // Back to an honest backend: the held read may complete then, from real data.
            try await connect(peer)
            _ = try await peer.serve(until: pending)
            if let problem = await stillServes(peer, seed: 16) { return .fail(problem) }
            return .pass("rsp_prod a ring ahead: no read completed off it; the frontend read \(states.isEmpty ? "no change" : states.joined(separator: " -> ")) and served again after a start over")
        },
        Check("RING-017") { peer in
            try await peer.ensureConnected()
            guard let ring = peer.ring else { return .fail("no ring") }
            let noise = pattern(pageSize, seed: 17)
            let before = ring.view.bytes(at: 0, length: pageSize)
            peer.servesInBackground = false
            noise.withUnsafeBytes { ring.view.copyBytes(from: $0, to: 0) }
            peer.notifyFrontend()
            let states = try await peer.watchFrontend()
            let read = states.isEmpty ? "no change" : states.joined(separator: " -> ")
            if peer.takesDeviceOnce {
                // No start over: the page goes back as it was and the user side reads. An
                // answer, data or an error, shows the frontend stayed up.
                before.withUnsafeBytes { ring.view.copyBytes(from: $0, to: 0) }
                let after = try await peer.honestly([.read(offset: 0, length: 4096)])
                return .pass("ring page overwritten with noise: the frontend read \(read) and stayed up, a read afterwards \(after[0].error.map { "refused (\($0))" } ?? "completed"); \(onceOnly)")
            }
            try await connect(peer)
            if let problem = await stillServes(peer, seed: 17) { return .fail(problem) }
            return .pass("ring page overwritten with noise: the frontend read \(read) and served again after a start over")
        },
        Check("RING-018") { peer in
            try await peer.ensureConnected()
            for _ in 0 ..< 10000 { peer.notifyFrontend() }
            let results = try await peer.honestly([.read(offset: 0, length: 4096)])
            return .expect(results[0].error == nil, "after 10000 notifications with nothing published, a read \(results[0].error.map { "failed: \($0)" } ?? "completed")")
        },
    ]

    // MARK: blkif-frontend.tsv, honest backend

    static let dataIO: [Check] = [
        underLoad("BLKIF-FE-006", "none indirect against a backend offering none") { request, _ in
            request.operation == BlkifOperation.indirect.rawValue ? "BLKIF_OP_INDIRECT arrived" : nil
        },
        underLoad("BLKIF-FE-007", offering: ["feature-flush-cache": "0"], "no cache flush against feature-flush-cache 0") { request, _ in
            request.operation == BlkifOperation.flushDiskCache.rawValue ? "BLKIF_OP_FLUSH_DISKCACHE arrived" : nil
        },
        underLoad("BLKIF-FE-008", "no write barrier against feature-barrier 0") { request, _ in
            request.operation == BlkifOperation.writeBarrier.rawValue ? "BLKIF_OP_WRITE_BARRIER arrived" : nil
        },
        underLoad("BLKIF-FE-009", "no discard against feature-discard 0") { request, _ in
            request.operation == BlkifOperation.discard.rawValue ? "BLKIF_OP_DISCARD arrived" : nil
        },
        Check("BLKIF-FE-010") { peer in
            try await connect(peer)
            peer.forgetSeen()
            let end = BlkbackPeer.diskSectors * 512
            // The last page, then a read across the end the user side must not pass on.
            if let problem = try await roundTrip(peer, offset: end - 4096, bytes: pattern(4096, seed: 10)) { return .fail(problem) }
            let across = try await peer.honestly([.read(offset: end - 4096, length: 8192)])
            return judge(peer, "all within the \(BlkbackPeer.diskSectors) published sectors; a read across the end was \(across[0].error.map { "refused (\($0))" } ?? "completed")") { request in
                guard let decoded = request.request else { return nil }
                let sector: UInt64, count: UInt64
                switch decoded {
                case let .direct(r): (sector, count) = (r.sectorNumber, UInt64(r.segments.reduce(0) { $0 + $1.sectorCount }))
                case let .indirect(r): (sector, count) = (r.sectorNumber, UInt64(request.segments.reduce(0) { $0 + $1.sectorCount }))
                case let .discard(r): (sector, count) = (r.sectorNumber, r.sectorCount)
                }
                return sector + count > BlkbackPeer.diskSectors ? "sectors \(sector)..<\(sector + count) pass the \(BlkbackPeer.diskSectors) published" : nil
            }
        },
        underLoad("BLKIF-FE-011", "every segment's first_sect <= last_sect <= 7") { request, _ in
            if let problem = request.problem { return problem }
            return request.segments.first { $0.firstSector > $0.lastSector || $0.lastSector > 7 }.map { "a segment with first_sect \($0.firstSector), last_sect \($0.lastSector)" }
        },
        underLoad("BLKIF-FE-012", "every direct read or write with 1 to 11 segments") { request, _ in
            guard case let .direct(r)? = request.request else { return request.problem }
            guard r.operation == .read || r.operation == .write else { return nil }
            return (1 ... 11).contains(r.segments.count) ? nil : "nr_segments \(r.segments.count)"
        },
        underLoad("BLKIF-FE-013", "no id reused while its request was in flight") { request, _ in
            request.idInFlight ? "id reused while in flight" : nil
        },
        Check("BLKIF-FE-014") { peer in
            var disk = BlkbackPeer.honestDisk
            disk[BlkifDiskProperties.Key.info] = "\(BlkifDiskInfo.readOnly.rawValue)"
            try await connect(peer, disk: disk)
            peer.forgetSeen()
            let pending = try peer.submit([.write(offset: 0, bytes: pattern(4096, seed: 14)), .flush, .read(offset: 0, length: 4096)])
            let results = try await peer.serve(until: pending)
            let verdict = judge(peer, "the user's write was \(results[0].error.map { "refused (\($0))" } ?? "reported done"); no write, barrier or discard arrived") { request in
                let op = dataOperation(request)
                return op == .write || request.operation == BlkifOperation.writeBarrier.rawValue || request.operation == BlkifOperation.discard.rawValue
                    ? "operation \(request.operation) on a read-only disk" : nil
            }
            // Back to a writable disk for the checks after, where a device serves again.
            if !peer.takesDeviceOnce { try await connect(peer) }
            return verdict
        },
        Check("BLKIF-FE-015") { peer in
            var disk = BlkbackPeer.honestDisk
            disk[BlkifDiskProperties.Key.sectorSize] = "4096"
            disk["physical-sector-size"] = "4096"
            // A 512-byte disk first: a user side that takes its geometry from the first
            // connection (our blkfront's NBD export) keeps serving the checks after this one.
            // A frontend that takes each device once gets the 4096-byte disk at once.
            if !peer.takesDeviceOnce { try await peer.ensureConnected() }
            try await connect(peer, disk: disk)
            peer.forgetSeen()
            let results = try await peer.honestly([.write(offset: 8192, bytes: pattern(8192, seed: 15)), .read(offset: 4096, length: 4096)])
            let verdict = judge(peer, "every request in whole 4096-byte sectors (user: \(results.map { $0.error ?? "ok" }.joined(separator: ", ")))") { request in
                guard let decoded = request.request else { return request.problem }
                let sector: UInt64
                switch decoded {
                case let .direct(r): sector = r.sectorNumber
                case let .indirect(r): sector = r.sectorNumber
                case let .discard(r): sector = r.sectorNumber
                }
                let count = request.segments.reduce(0) { $0 + $1.sectorCount }
                return sector % 8 == 0 && count % 8 == 0 ? nil : "sector \(sector), \(count) units of 512"
            }
            if !peer.takesDeviceOnce { try await connect(peer) }
            return verdict
        },
        underLoad("BLKIF-FE-016", "every read's segments map writable, every write's readable") { request, _ in
            // Mapped while the request was in flight (the peer's take), not after its answer.
            request.mapProblems.first
        },
        Check("BLKIF-FE-017") { peer in
            let failed = try await lyingRead(peer) { _ in .status(BlkifStatus.error.rawValue) }
            guard failed.result.error != nil, !failed.restarted else { return .fail("a read answered BLKIF_RSP_ERROR \(describe(failed))") }
            let bytes = pattern(4096, seed: 17)
            if let problem = try await roundTrip(peer, offset: 4096, bytes: bytes) { return .fail(problem) }
            return .pass("a read answered BLKIF_RSP_ERROR \(describe(failed)) for the user; one answered OKAY returned the bytes written")
        },
        Check("BLKIF-FE-035") { peer in
            try await connect(peer, offering: ["feature-max-indirect-segments": "4294967295"])
            peer.forgetSeen()
            if let problem = try await roundTrip(peer, offset: 0, bytes: pattern(1_048_576, seed: 35)) { return .fail(problem) }
            let most = peer.seen.map(\.segments.count).max() ?? 0
            return judge(peer, "connected; the most segments in one request \(most), within \(BlkifIndirectPage.maxSegments)") { request in
                if let problem = request.problem { return problem }
                return request.segments.count > BlkifIndirectPage.maxSegments ? "\(request.segments.count) segments" : nil
            }
        },
    ]

    // MARK: blkif-frontend.tsv, lying backend

    static let lies: [Check] = [
        Check("BLKIF-FE-030") { peer in
            let read = try await lyingRead(peer) { request in
                .raw([(id: request.id ^ 0x5A5A_0000_0000, operation: request.operation, status: BlkifStatus.okay.rawValue),
                      (id: request.id, operation: request.operation, status: BlkifStatus.okay.rawValue)], perform: true)
            }
            if let error = read.result.error {
                // Held, not completed: nothing completed off the unknown id.
                if error.hasPrefix(heldMark) { return .pass("after a response with an unknown id the read was \(error)") }
                return .fail("the read answered after an unknown-id response \(describe(read)): \(error)")
            }
            if let problem = await stillServes(peer, seed: 30) { return .fail(problem) }
            return .pass("after a response with an unknown id the read \(describe(read)), once, with the disk's bytes; \(servedAgain(peer))")
        },
        Check("BLKIF-FE-031") { peer in
            let read = try await lyingRead(peer) { request in
                .raw([(id: request.id, operation: request.operation, status: BlkifStatus.okay.rawValue),
                      (id: request.id, operation: request.operation, status: BlkifStatus.okay.rawValue)], perform: true)
            }
            if let error = read.result.error { return .fail("the read answered twice \(describe(read)): \(error)") }
            if let problem = await stillServes(peer, seed: 31) { return .fail(problem) }
            return .pass("a read answered twice \(describe(read)) for the user, once; \(servedAgain(peer))")
        },
        Check("BLKIF-FE-032") { peer in
            let read = try await lyingRead(peer) { _ in .status(7) }
            // Completed from the honest answer after a start over is fine; from the lie is not.
            guard read.result.error != nil || read.restarted else { return .fail("a read answered with status 7 was reported a success") }
            if let problem = await stillServes(peer, seed: 32) { return .fail(problem) }
            return .pass("a read answered with status 7 \(describe(read)); \(servedAgain(peer))")
        },
        Check("BLKIF-FE-039") { peer in
            try await peer.ensureConnected()
            let bytes = pattern(4096, seed: 39)
            let pending = try peer.submit([.write(offset: 16384, bytes: bytes)])
            try await peer.serve(requestAt: 16384) { _ in .hold }
            try await peer.writeState(.closing)
            let state = try await peer.waitForFrontend([.closed])
            let early = (try? pending.get()).map { $0[0].error == nil ? "reported done" : "failed" } ?? "still waiting"
            let held = peer.held.count
            guard early != "reported done" else { return .fail("with \(held) request unanswered at Closing, the user's write was reported done") }
            if peer.takesDeviceOnce {
                return .pass("backend Closing with \(held) request unanswered: the frontend read \(state), the user's write was \(early); \(onceOnly)")
            }
            // Never answered: the peer's disk must not hold it until a new connection does.
            try await connect(peer)
            let results = try await peer.serve(until: pending)
            return .pass("backend Closing with \(held) request unanswered: the frontend read \(state), the user's write was \(early); after a start over it \(results[0].error.map { "failed (\($0))" } ?? "completed, sent again")")
        },
        Check("BLKIF-FE-040") { peer in
            try await peer.ensureConnected()
            if let problem = try await roundTrip(peer, offset: 24576, bytes: pattern(4096, seed: 41)) { return .fail(problem) }
            // The disk changes under the frontend, and the lie leaves its page as it was:
            // a success from the lie would hand the user the old bytes.
            peer.disk.replaceSubrange(24576 ..< 28672, with: pattern(4096, seed: 42))
            let read = try await lyingRead(peer, offset: 24576) { request in
                .raw([(id: request.id, operation: BlkifOperation.write.rawValue, status: BlkifStatus.okay.rawValue)], perform: false)
            }
            if read.result.error == nil, read.result.data != Array(peer.disk[24576 ..< 28672]) {
                return .fail("a read answered with operation BLKIF_OP_WRITE was reported a success with bytes the disk does not hold")
            }
            if let problem = await stillServes(peer, seed: 40) { return .fail(problem) }
            return .pass("a read answered with operation BLKIF_OP_WRITE \(describe(read))\(read.result.error == nil ? " with the disk's bytes" : ""); \(servedAgain(peer))")
        },
    ]
}
