import Blkif
import Glibc
import SharedMemory
import Synchronization
import XenPlatform
import XenRing

/// What the scripted blkback saw of one request, for the checks to judge.
struct SeenRequest: Sendable {
    /// The ring index it was read from.
    let index: RingIndex
    /// The id and operation bytes as read (also when the request did not decode).
    let id: UInt64
    let operation: UInt8
    /// The decoded request, or nil with `problem` saying why it did not decode.
    let request: BlkifRequest?
    let problem: String?
    /// Whether a request with the same id was still unanswered when this one arrived.
    let idInFlight: Bool
    /// Requests outstanding (published and not answered) as this one was consumed.
    let outstanding: Int
    /// The segments (direct or from the indirect pages).
    var segments: [BlkifSegment] = []
    /// Segments whose grant did not map as the operation needs (writable for a read).
    var mapProblems: [String] = []
}

extension SeenRequest {
    /// The first sector of a read, write or discard that decoded (nil for others).
    var startSector: UInt64? {
        switch request {
        case let .direct(r)?: r.sectorNumber
        case let .indirect(r)?: r.sectorNumber
        case let .discard(r)?: r.sectorNumber
        case nil: nil
        }
    }
}

/// How the scripted blkback answers one request.
enum BlkbackAnswer {
    /// Does it on the peer's disk and answers with its status.
    case honest
    /// Does nothing and answers with this raw status (a lie when it is not 0, -1 or -2).
    case status(Int16)
    /// Writes these raw responses instead of the honest one, after doing the request on
    /// the disk when `perform` (else the frontend's pages keep what they held).
    case raw([(id: UInt64, operation: UInt8, status: Int16)], perform: Bool)
    /// Leaves it unanswered.
    case hold
}

/// A batch of I/O through the frontend's user side, run off the peer's task.
final class PendingIO: Sendable {
    let result: Mutex<Result<[FrontendBlockIOResult], any Error>?>

    init(_ io: any FrontendBlockIO, _ batch: [FrontendBlockIOOperation]) {
        result = Mutex(nil)
        Task { [self] in
            let outcome: Result<[FrontendBlockIOResult], any Error>
            do { outcome = .success(try await io.run(batch)) } catch { outcome = .failure(error) }
            self.result.withLock { $0 = outcome }
        }
    }

    var isDone: Bool { result.withLock { $0 != nil } }
    /// The results, once done.
    func get() throws -> [FrontendBlockIOResult] {
        guard let done = result.withLock({ $0 }) else { throw PeerError.unusable("the I/O batch is still in flight") }
        return try done.get()
    }
}

extension BlkbackPeer {
    /// The ABI the frontend named (native when it named none).
    var abi: BlkifABI { (try? BlkifABI(protocol: atInitialised[BlkifFrontendFeatures.Key.protocolName])) ?? .native }

    /// The frontend's user side; without one the clause cannot run (``CheckCannotRun``).
    func userSide() throws -> any FrontendBlockIO {
        guard let io else {
            throw CheckCannotRun("the clause makes the frontend send requests through its user side, and this run was given none (xensplit conformance --nbd, or --agent with --agent-device)")
        }
        return io
    }

    /// Starts `batch` on the frontend's user side.
    func submit(_ batch: [FrontendBlockIOOperation]) throws -> PendingIO { PendingIO(try userSide(), batch) }

    /// Serves the ring, answering as `answer` says, until `done` holds. Past `bound`
    /// throws ``PeerError/unusable(_:)`` with `failure`'s words.
    func serve(within bound: Duration = patience, answer: (SeenRequest) -> BlkbackAnswer = { _ in .honest },
               until done: () throws -> Bool, failure: () -> String) async throws {
        let deadline = ContinuousClock.now + bound
        while try !done() {
            guard ContinuousClock.now < deadline else { throw PeerError.unusable(failure()) }
            if try serveOnce(answer) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
    }

    /// Serves the ring, answering as `answer` says, until `pending` is done; returns its
    /// results. Bounded by ``patience`` and the user side's allowance.
    func serve(until pending: PendingIO, answer: (SeenRequest) -> BlkbackAnswer = { _ in .honest }) async throws -> [FrontendBlockIOResult] {
        let bound = Self.patience + (io?.transferAllowance ?? .zero)
        try await serve(within: bound, answer: answer, until: { pending.isDone }) {
            "the frontend's user got no answer within \(bound) (\(seen.count) requests seen)"
        }
        return try pending.get()
    }

    /// Serves the ring, answering as `answer` says, until `count` more requests have
    /// arrived. Bounded by ``patience``.
    func serve(requests count: Int, answer: (SeenRequest) -> BlkbackAnswer) async throws {
        let goal = seen.count + count
        try await serve(answer: answer, until: { seen.count >= goal }) {
            "\(seen.count - goal + count) of \(count) requests arrived within \(Self.patience)"
        }
    }

    /// Serves the ring until the request for the user's operation at byte `offset` arrives,
    /// answering it as `answer` says and every other request honestly: a kernel frontend
    /// makes requests of its own too (Linux's blkfront reads the partition table once
    /// Connected), and a lie meant for the user's request must not land on one of those.
    /// Bounded by ``patience``.
    func serve(requestAt offset: UInt64, answer: (SeenRequest) -> BlkbackAnswer) async throws {
        let sector = offset / 512
        var found = false
        try await serve(answer: { request in
            guard !found, request.startSector == sector else { return .honest }
            found = true
            return answer(request)
        }, until: { found }) {
            "no request for sector \(sector) arrived within \(Self.patience) (\(seen.count) requests seen)"
        }
    }

    /// Serves honestly until the frontend has published nothing for `quiet` (bounded by
    /// ``patience``): a kernel frontend reads on its own once Connected (Linux's blkfront:
    /// the partition table, whose parsers read the disk's first pages and its end), and a
    /// lie meant for the user's request must not meet one of those on the same sector.
    func serveUntilQuiet(_ quiet: Duration = .milliseconds(200)) async throws {
        let deadline = ContinuousClock.now + Self.patience
        var lastRequest = ContinuousClock.now
        while ContinuousClock.now - lastRequest < quiet, ContinuousClock.now < deadline {
            if try serveOnce({ _ in .honest }) > 0 { lastRequest = .now } else { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    /// Honest I/O: runs `batch` and serves it; returns the user's results.
    func honestly(_ batch: [FrontendBlockIOOperation]) async throws -> [FrontendBlockIOResult] {
        try await serve(until: try submit(batch))
    }

    /// Serves the ring honestly while the peer waits on xenstore, as long as the connection
    /// is honest (``servesInBackground``): a frontend may read the disk on its own once
    /// Connected, and may handle no state change until answered (Linux's blkfront reads
    /// the partition table from its xenbus thread). A ring that cannot be served stops it.
    func serveInBackground() {
        guard servesInBackground, back != nil else { return }
        do { _ = try serveOnce { _ in .honest } } catch { servesInBackground = false }
    }

    /// Consumes what the frontend published, answers it, pushes and notifies. Returns
    /// how many requests it consumed.
    func serveOnce(_ answer: (SeenRequest) -> BlkbackAnswer) throws -> Int {
        guard var back else { throw PeerError.unusable(mapProblem ?? "no ring attached") }
        defer { self.back = back }
        // Bounded by what the peer consumed, not by its responses: after a lie with more
        // responses than requests, rsp_prod_pvt is ahead of req_prod, and the frontend's
        // next requests are still to be read.
        let producer = back.shared.loadRequestProducer()
        guard producer &- back.requestConsumer <= back.size else {
            throw PeerError.badResponse("the frontend's req_prod \(producer) is more than a ring (\(back.size)) past req_cons \(back.requestConsumer)")
        }
        var consumed = 0
        while back.requestConsumer != producer {
            let index = back.requestConsumer
            let request = take(back.requestSlot(index), index: index)
            back.requestConsumer = index &+ 1
            consumed += 1
            switch answer(request) {
            case .honest:
                respond(&back, id: request.id, operation: request.request?.responseOperation ?? request.operation, status: perform(request))
            case let .status(status):
                servesInBackground = false
                respond(&back, id: request.id, operation: request.request?.responseOperation ?? request.operation, status: status)
            case let .raw(responses, doIt):
                servesInBackground = false
                if doIt { _ = perform(request) }
                for r in responses { respond(&back, id: r.id, operation: r.operation, status: r.status) }
            case .hold:
                servesInBackground = false
                held.append(request)
            }
        }
        if consumed > 0 || back.responseProducerPrivate != back.shared.loadResponseProducer() {
            if back.pushResponsesAndCheckNotify() { notifyFrontend() }
        }
        drainEvents()
        return consumed
    }

    /// Reads and records the request in `slot`.
    func take(_ slot: SharedView, index: RingIndex) -> SeenRequest {
        let layout = abi.layout
        let id = slot.load(UInt64.self, at: layout.idOffset)
        let operation = slot.load(UInt8.self, at: BlkifLayout.operationOffset)
        var request: BlkifRequest?
        var problem: String?
        do { request = try BlkifRequest.decode(from: slot, at: 0, abi: abi, maxIndirectSegments: offeredIndirectSegments) } catch {
            problem = "\(error)"
        }
        var seenRequest = SeenRequest(index: index, id: id, operation: operation, request: request, problem: problem,
                                      idInFlight: outstanding.contains(id), outstanding: outstanding.count)
        outstanding.insert(id)
        if let request { seenRequest.segments = segments(of: request, problems: &seenRequest.mapProblems) }
        seen.append(seenRequest)
        return seenRequest
    }

    /// The feature-max-indirect-segments the peer offered this handshake (0: none).
    var offeredIndirectSegments: Int { offered["feature-max-indirect-segments"].flatMap(Int.init) ?? 0 }

    /// A request's segments; an indirect request's read from its indirect pages. Each data
    /// segment is mapped as its operation needs (writable for a read) while the request is
    /// in flight: once answered, a frontend may end the grant (Linux's blkfront without
    /// persistent grants does), so no later look can judge it.
    func segments(of request: BlkifRequest, problems: inout [String]) -> [BlkifSegment] {
        let (segments, reading): ([BlkifSegment], Bool)
        switch request {
        case let .direct(r):
            guard r.operation == .read || r.operation == .write else { return Array(r.segments) }
            (segments, reading) = (Array(r.segments), r.operation == .read)
        case .discard: return []
        case let .indirect(r):
            (segments, reading) = (indirectSegments(of: r, problems: &problems), r.operation == .read)
        }
        for segment in segments {
            do { try platform.grantMapper.unmap(try platform.grantMapper.map([GrantRef(segment.gref)], from: frontendID, writable: reading)) } catch {
                problems.append("gref \(segment.gref) of a \(reading ? "read" : "write") does not map \(reading ? "writable" : "read-only"): \(error)")
            }
        }
        return segments
    }

    /// An indirect request's segments, read from its indirect pages.
    func indirectSegments(of r: BlkifIndirectRequest, problems: inout [String]) -> [BlkifSegment] {
        var out: [BlkifSegment] = []
        for (page, gref) in r.indirectGrefs.enumerated() {
            do {
                let mapping = try platform.grantMapper.map([GrantRef(gref)], from: frontendID, writable: false)
                defer { try? platform.grantMapper.unmap(mapping) }
                let first = page * BlkifIndirectPage.segmentsPerPage
                for index in first ..< min(r.segmentCount, first + BlkifIndirectPage.segmentsPerPage) {
                    out.append(try BlkifIndirectPage.decodeSegment(index - first, from: mapping.view))
                }
            } catch {
                problems.append("indirect page \(page) (gref \(gref)): \(error)")
            }
        }
        return out
    }

    /// Does a decoded request on the peer's disk; the status to answer with.
    func perform(_ request: SeenRequest) -> Int16 {
        guard let decoded = request.request, request.mapProblems.isEmpty else { return BlkifStatus.error.rawValue }
        let reading: Bool
        let sector: UInt64
        switch decoded {
        case let .direct(r):
            guard r.operation == .read || r.operation == .write else { return BlkifStatus.okay.rawValue }
            reading = r.operation == .read
            sector = r.sectorNumber
        case let .indirect(r):
            reading = r.operation == .read
            sector = r.sectorNumber
        case .discard:
            return BlkifStatus.okay.rawValue
        }
        var offset = Int(clamping: sector) * 512
        var status = BlkifStatus.okay.rawValue
        for segment in request.segments {
            let length = segment.sectorCount * 512
            guard offset >= 0, offset + length <= disk.count else { return BlkifStatus.error.rawValue }
            do {
                let mapping = try platform.grantMapper.map([GrantRef(segment.gref)], from: frontendID, writable: reading)
                defer { try? platform.grantMapper.unmap(mapping) }
                let at = Int(segment.firstSector) * 512
                if reading {
                    disk.withUnsafeBytes { mapping.view.copyBytes(from: UnsafeRawBufferPointer(rebasing: $0[offset ..< offset + length]), to: at) }
                } else {
                    let bytes = mapping.view.bytes(at: at, length: length)
                    disk.replaceSubrange(offset ..< offset + length, with: bytes)
                }
            } catch {
                status = BlkifStatus.error.rawValue
            }
            offset += length
        }
        return status
    }

    /// Writes a raw response at the next response slot (not yet pushed).
    func respond(_ back: inout BackRing, id: UInt64, operation: UInt8, status: Int16) {
        let slot = back.responseSlot(back.responseProducerPrivate)
        slot.fill(0, at: 0, length: abi.layout.responseSize)
        slot.store(id, at: BlkifLayout.responseIDOffset)
        slot.store(operation, at: BlkifLayout.responseOperationOffset)
        slot.store(status, at: BlkifLayout.responseStatusOffset)
        back.responseProducerPrivate &+= 1
        outstanding.remove(id)
    }

    /// Answers the held requests as `answer` says and pushes.
    func release(_ answer: (SeenRequest) -> BlkbackAnswer = { _ in .honest }) throws {
        guard var back else { throw PeerError.unusable(mapProblem ?? "no ring attached") }
        for request in held {
            switch answer(request) {
            case .honest: respond(&back, id: request.id, operation: request.request?.responseOperation ?? request.operation, status: perform(request))
            case let .status(status): respond(&back, id: request.id, operation: request.request?.responseOperation ?? request.operation, status: status)
            case let .raw(responses, doIt):
                if doIt { _ = perform(request) }
                for r in responses { respond(&back, id: r.id, operation: r.operation, status: r.status) }
            case .hold: continue
            }
        }
        held = []
        self.back = back
        if back.pushResponsesAndCheckNotify() { notifyFrontend() }
    }

    func notifyFrontend() {
        if let events, let port { try? events.notify(port) }
    }

    /// Takes and unmasks whatever the frontend signalled: the peer polls the ring.
    func drainEvents() {
        guard let events else { return }
        try? events.takePending(atMost: 64) { port throws(PlatformError) in try events.unmask(port) }
    }

    /// Forgets what was seen, for a check that judges only its own requests.
    func forgetSeen() {
        seen = []
    }
}
