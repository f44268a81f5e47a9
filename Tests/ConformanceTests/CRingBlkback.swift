import Blkif
import SharedMemory
import CRingReference
import Foundation
import Glibc
import Synchronization
import XenBus
import XenPlatform
import XenRing
import XenStore

/// A blkif backend whose ring is driven by Xen's own io/ring.h macros (CRingReference),
/// on XenBus's backend driver and a platform's grants and event channels: the "C peer"
/// of expected.tsv. It answers requests by validating them as io/blkif.h says (no data
/// moves: the ring clauses look at statuses only). A ``Mutation`` breaks one rule on
/// purpose, so a test can show that the clause about that rule fails.
final class CRingBlkback: XenbusBackendHooks, @unchecked Sendable {
    // SAFETY (@unchecked): `serving` is guarded by its mutex; the serving thread owns the
    // cref ring while it runs and is joined before the ring is freed.

    /// One rule broken on purpose, named as its expected.tsv target.
    enum Mutation: String, CaseIterable, Sendable {
        /// Serves whatever req_prod says, ignoring RING_REQUEST_PROD_OVERFLOW.
        case noOverflowCheck = "c-mutant-no-overflow-check"
        /// Consumes one slot past req_prod whenever it serves.
        case readsPastReqProd = "c-mutant-reads-past-req-prod"
        /// Never asks to be notified (no RING_FINAL_CHECK_FOR_REQUESTS).
        case noRequestEvent = "c-mutant-no-req-event"
        /// Pushes responses without notifying.
        case noNotify = "c-mutant-no-notify"
        /// Answers with the request's id plus one.
        case wrongID = "c-mutant-wrong-id"
        /// Answers every request OKAY, validating nothing.
        case acceptsAnything = "c-mutant-accepts-anything"
        /// Reads ring-ref and event-channel only: any ring-page-order or protocol goes.
        case acceptsAnyKeys = "c-mutant-accepts-any-keys"
        /// Answers every discard OKAY: neither its range nor its secure flag is checked.
        case noDiscardCheck = "c-mutant-no-discard-check"
        /// Never maps a data segment's grant: a gref never made, read-only or ended goes.
        case noGrantCheck = "c-mutant-no-grant-check"
        /// Answers every indirect request OKAY: its inner operation, segment count,
        /// indirect pages and segments are not checked.
        case noIndirectCheck = "c-mutant-no-indirect-check"
        /// Leaves every invalid request after the first of a batch unanswered.
        case dropsErrors = "c-mutant-drops-errors"
        /// Stops serving for good, and refuses every later connection, once the ring
        /// header's private area (zero since SHARED_RING_INIT) reads otherwise.
        case stopsOnScribble = "c-mutant-stops-on-scribble"
        /// Stops serving for good after 100 notifications in a row with nothing published.
        case stopsOnFlood = "c-mutant-stops-on-flood"
    }

    struct Frontend: Sendable {
        let ref: GrantRef
        let port: EventPort
    }

    /// One connection's ring and the thread serving it.
    final class Serving: @unchecked Sendable {
        let mapping: GrantMapping
        let channel: any EventChannel
        let port: EventPort
        let ring: OpaquePointer
        let frontendID: DomainID
        let stop = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)

        init(mapping: GrantMapping, channel: any EventChannel, port: EventPort, ring: OpaquePointer, frontendID: DomainID) {
            self.mapping = mapping
            self.channel = channel
            self.port = port
            self.ring = ring
            self.frontendID = frontendID
        }
    }

    static let diskSectors: UInt64 = 16384
    /// The feature-max-indirect-segments it offers.
    static let maxIndirectSegments = 32
    /// Slots of the one-page ring (cref_size reads the front ring's, unset on this side).
    static let ringSize = SharedRing.entryCount(bytes: pageSize, entrySize: BlkifABI.native.slotSize)
    let platform: any Platform
    let mutation: Mutation?
    let serving = Mutex<Serving?>(nil)
    /// Tells the xenbus driver of a ring violation (set once the driver exists).
    let violation = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// Set when a stopping mutant has stopped: it serves nothing more.
    let stopped = Atomic<Bool>(false)

    init(platform: any Platform, mutation: Mutation?) {
        self.platform = platform
        self.mutation = mutation
    }

    /// Discard (not secure) and indirect requests, for the clauses about them.
    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        XenbusKeys([BlkifBackendFeatures.Key.discard: "1", BlkifBackendFeatures.Key.discardSecure: "0",
                    BlkifBackendFeatures.Key.maxIndirectSegments: String(Self.maxIndirectSegments)])
    }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> Frontend {
        if stopped.load(ordering: .acquiring) {
            throw XenbusError.invalidValue(path: frontend.path(of: BlkifConnectionKeys.Key.ringRef), value: "-", expected: "nothing: this backend stopped for good")
        }
        if mutation != .acceptsAnyKeys {
            if let order = try await frontend.optionalString(BlkifFrontendFeatures.Key.ringPageOrder), order != "0" {
                throw XenbusError.invalidValue(path: frontend.path(of: BlkifFrontendFeatures.Key.ringPageOrder), value: order,
                                               expected: "0 (one page)")
            }
            let abi = try await frontend.optionalString(BlkifFrontendFeatures.Key.protocolName)
            guard abi == nil || abi == "x86_64-abi" else {
                throw XenbusError.invalidValue(path: frontend.path(of: BlkifFrontendFeatures.Key.protocolName), value: abi ?? "",
                                               expected: "x86_64-abi")
            }
        }
        return Frontend(ref: try await frontend.unsigned(BlkifConnectionKeys.Key.ringRef),
                        port: try await frontend.unsigned(BlkifConnectionKeys.Key.eventChannel))
    }

    func connect(_ frontend: Frontend, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        let mapping = try platform.grantMapper.map([frontend.ref], from: paths.frontendID, writable: true)
        let channel: any EventChannel
        let port: EventPort
        do {
            channel = try platform.openEventChannel()
            port = try channel.bindInterdomain(remote: paths.frontendID, remotePort: frontend.port)
        } catch {
            try? platform.grantMapper.unmap(mapping)
            throw error
        }
        let ring = cref_ring_new(Int32(CREF_BLKIF.rawValue), mapping.view.baseAddress, pageSize)!
        cref_back_init(ring)
        let serving = Serving(mapping: mapping, channel: channel, port: port, ring: ring, frontendID: paths.frontendID)
        self.serving.withLock { $0 = serving }
        let thread = Thread { [self] in
            serve(serving)
            serving.done.signal()
        }
        thread.start()
        return XenbusKeys([BlkifDiskProperties.Key.sectors: String(Self.diskSectors), BlkifDiskProperties.Key.info: "0",
                           BlkifDiskProperties.Key.sectorSize: "512"])
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        guard let serving = serving.withLock({ s in defer { s = nil }; return s }) else { return }
        serving.stop.store(true, ordering: .releasing)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                serving.done.wait()
                done.resume()
            }
        }
        serving.channel.close()
        try? platform.grantMapper.unmap(serving.mapping)
        cref_ring_free(serving.ring)
    }

    /// Sleeps on the event channel (and wakes every 10 ms regardless, so mutants that
    /// never ask for events still serve) and answers what the ring holds.
    func serve(_ s: Serving) {
        var emptyEvents = 0
        while !s.stop.load(ordering: .acquiring) {
            var fd = pollfd(fd: s.channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            var woken = 0
            if poll(&fd, 1, 10) > 0 {
                try? s.channel.takePending(atMost: 8) { [channel = s.channel] port throws(PlatformError) in
                    woken += 1
                    try channel.unmask(port)
                }
            }
            if mutation == .stopsOnScribble, (SharedRing.Header.privateArea ..< SharedRing.Header.size).contains(where: { s.mapping.view.load(UInt8.self, at: $0) != 0 }) {
                stopped.store(true, ordering: .releasing)
                return
            }
            let before = cref_req_cons(s.ring)
            guard serveAvailable(s) else { return }
            if cref_req_cons(s.ring) != before { emptyEvents = 0 } else { emptyEvents += woken }
            if mutation == .stopsOnFlood, emptyEvents >= 100 {
                stopped.store(true, ordering: .releasing)
                return
            }
        }
    }

    /// Answers every request published; false after a ring violation (the ring is left).
    func serveAvailable(_ s: Serving) -> Bool {
        let requestSize = cref_request_size(Int32(CREF_BLKIF.rawValue))
        var request = [UInt8](repeating: 0, count: requestSize)
        var more = true
        var errors = 0
        // A mutant without the overflow check always finds more: the stop flag ends it.
        while more, !s.stop.load(ordering: .relaxed) {
            let produced = s.mapping.view.atomicLoad32(at: 0, ordering: .acquiring)
            if mutation != .noOverflowCheck, cref_request_prod_overflow(s.ring, produced) != 0 {
                violation.withLock { $0 }?("req_prod \(produced) overruns the ring")
                return false
            }
            var served: UInt32 = 0
            // As Linux's backends do: up to the req_prod read once, checked above, so a
            // frontend moving it meanwhile cannot keep this loop going.
            while cref_req_cons(s.ring) != produced, served < Self.ringSize, !s.stop.load(ordering: .relaxed) {
                request.withUnsafeMutableBytes { cref_consume_request(s.ring, $0.baseAddress) }
                respond(to: request, s, errors: &errors)
                served += 1
            }
            if mutation == .readsPastReqProd, served > 0 {
                request.withUnsafeMutableBytes { cref_consume_request(s.ring, $0.baseAddress) }
                respond(to: request, s, errors: &errors)
            }
            if cref_push_responses_and_check_notify(s.ring) != 0, mutation != .noNotify {
                try? s.channel.notify(s.port)
            }
            more = mutation == .noRequestEvent ? false : cref_final_check_for_requests(s.ring) != 0
        }
        return true
    }

    /// Validates a request copied out of the ring (io/blkif.h, native layout) and
    /// produces its response. `errors` counts the error answers of this batch.
    func respond(to request: [UInt8], _ s: Serving, errors: inout Int) {
        let layout = BlkifABI.native.layout
        func u64(_ at: Int) -> UInt64 { (0 ..< 8).reduce(0) { $0 | UInt64(request[at + $1]) << (8 * $1) } }
        func u32(_ at: Int) -> UInt32 { (0 ..< 4).reduce(0) { $0 | UInt32(request[at + $1]) << (8 * $1) } }
        let operation = request[BlkifLayout.operationOffset]
        let id = u64(layout.idOffset)
        let sector = u64(layout.sectorNumberOffset)
        var status = BlkifStatus.okay
        if mutation != .acceptsAnything {
            switch BlkifOperation(rawValue: operation) {
            case .read?, .write?:
                var segments: [(gref: UInt32, first: UInt8, last: UInt8)] = []
                let count = Int(request[BlkifLayout.secondByteOffset])
                if !(1 ... BlkifSegments.capacity).contains(count) { status = .error }
                for index in 0 ..< min(count, BlkifSegments.capacity) {
                    let at = layout.segmentsOffset + index * BlkifSegment.size
                    segments.append((u32(at + BlkifSegment.grefOffset), request[at + BlkifSegment.firstSectorOffset], request[at + BlkifSegment.lastSectorOffset]))
                }
                if !check(segments, from: sector, reading: operation == BlkifOperation.read.rawValue, s) { status = .error }
            case .discard?:
                guard mutation != .noDiscardCheck else { break }
                let count = u64(layout.discardSectorCountOffset)
                let (end, overflow) = sector.addingReportingOverflow(count)
                if overflow || end > Self.diskSectors { status = .error }
                // discard-secure is not offered.
                if request[BlkifLayout.secondByteOffset] & BlkifDiscardRequest.secureFlag != 0 { status = .notSupported }
            case .indirect?:
                guard mutation != .noIndirectCheck else { break }
                status = checkIndirect(request, sector: sector, s) ? .okay : .error
            default:
                status = .notSupported
            }
        }
        if status != .okay {
            errors += 1
            if mutation == .dropsErrors, errors > 1 { return }
        }
        var response = [UInt8](repeating: 0, count: cref_response_size(Int32(CREF_BLKIF.rawValue)))
        let answeredID = mutation == .wrongID ? id &+ 1 : id
        for byte in 0 ..< 8 { response[BlkifLayout.responseIDOffset + byte] = UInt8(truncatingIfNeeded: answeredID >> (8 * byte)) }
        response[BlkifLayout.responseOperationOffset] = operation == BlkifOperation.indirect.rawValue ? request[BlkifLayout.secondByteOffset] : operation
        let raw = UInt16(bitPattern: status.rawValue)
        response[BlkifLayout.responseStatusOffset] = UInt8(raw & 0xFF)
        response[BlkifLayout.responseStatusOffset + 1] = UInt8(raw >> 8)
        response.withUnsafeBytes { cref_produce_response(s.ring, $0.baseAddress) }
    }

    /// Segments obey first_sect <= last_sect <= 7, lie inside the disk from `sector`, and
    /// each grant maps as the operation needs (writable to read into). No data moves.
    func check(_ segments: [(gref: UInt32, first: UInt8, last: UInt8)], from sector: UInt64, reading: Bool, _ s: Serving) -> Bool {
        var sectors: UInt64 = 0
        for segment in segments {
            if segment.first > segment.last || segment.last > BlkifSegment.lastSectorLimit { return false }
            sectors += UInt64(segment.last) - UInt64(segment.first) + 1
        }
        let (end, overflow) = sector.addingReportingOverflow(sectors)
        if overflow || end > Self.diskSectors { return false }
        guard mutation != .noGrantCheck else { return true }
        for segment in segments {
            guard let mapping = try? platform.grantMapper.map([GrantRef(segment.gref)], from: s.frontendID, writable: reading) else { return false }
            try? platform.grantMapper.unmap(mapping)
        }
        return true
    }

    /// An indirect request: a read or write inside, 1 to the offered segments, its
    /// indirect pages granted, and its segments as direct ones.
    func checkIndirect(_ request: [UInt8], sector: UInt64, _ s: Serving) -> Bool {
        let layout = BlkifABI.native.layout
        let inner = request[BlkifLayout.secondByteOffset]
        guard inner == BlkifOperation.read.rawValue || inner == BlkifOperation.write.rawValue else { return false }
        let count = Int(request[BlkifLayout.indirectSegmentCountOffset]) | Int(request[BlkifLayout.indirectSegmentCountOffset + 1]) << 8
        guard (1 ... Self.maxIndirectSegments).contains(count) else { return false }
        var segments: [(gref: UInt32, first: UInt8, last: UInt8)] = []
        for page in 0 ..< BlkifIndirectPage.pageCount(forSegments: count) {
            let at = layout.indirectGrefsOffset + page * 4
            let gref = (0 ..< 4).reduce(UInt32(0)) { $0 | UInt32(request[at + $1]) << (8 * $1) }
            guard let mapping = try? platform.grantMapper.map([GrantRef(gref)], from: s.frontendID, writable: false) else { return false }
            defer { try? platform.grantMapper.unmap(mapping) }
            let first = page * BlkifIndirectPage.segmentsPerPage
            for index in first ..< min(count, first + BlkifIndirectPage.segmentsPerPage) {
                let offset = (index - first) * BlkifSegment.size
                segments.append((mapping.view.load(UInt32.self, at: offset + BlkifSegment.grefOffset),
                                 mapping.view.load(UInt8.self, at: offset + BlkifSegment.firstSectorOffset),
                                 mapping.view.load(UInt8.self, at: offset + BlkifSegment.lastSectorOffset)))
            }
        }
        return check(segments, from: sector, reading: inner == BlkifOperation.read.rawValue, s)
    }
}
