import Blkif
import Logging
import SharedMemory
import Synchronization
import XenBus
import XenDevice
import XenPlatform
import XenRing

/// One ring of a connection as the I/O thread keeps it: our private indices.
struct BlockFrontendRing {
    var ring: FrontRing
    /// Requests written since the last push.
    var unpushed = false
    /// The backend broke this ring; it is no longer read (until the next connection).
    var broken = false
}

/// A request in flight: the part it carries and where it went.
struct BlockFrontendInFlight {
    var work: BlockFrontendWork
    var ring: Int
    var operation: UInt8
}

/// What the I/O thread changes as it serves a connection. It lives in a local variable
/// of the thread while the thread runs (and in the connection before and after), so
/// every access is checked for exclusivity when compiled, where a class's stored `var`
/// costs a run-time check per access, several per request.
struct BlockFrontendIOState {
    var rings: [BlockFrontendRing] = []
    var slots: [BlockFrontendInFlight?] = []
    var freeSlots: [Int] = []
    var nextSequence: UInt64 = 1
    var nextRing = 0
    /// Parts taken from the core's queue and not yet sent, first `pendingHead` done; the
    /// first may be a read or write partly sent already.
    var pending: [BlockFrontendWork] = []
    var pendingHead = 0
}

/// Everything one handshake set up (rings, ports, persistently granted data pages) and
/// the I/O thread that serves it. Made by the initialise hook, started by connect, stopped
/// and released by disconnect; a backend restart makes a new one.
///
/// Each in-flight slot owns `segmentsPerRequest` data pages and the indirect pages they
/// need, granted once for the connection's life, as Linux blkfront does with persistent
/// grants: data is copied into them before a write and out of them after a read, so the
/// same grants serve every request whether or not the backend keeps them mapped.
final class BlockFrontendConnection: @unchecked Sendable {
    // SAFETY (@unchecked): the creator's until start(), then the I/O thread's until
    // stop() joined it, then the creator's again.
    let grants: any GrantTable
    let eventChannel: any EventChannel
    let abi: BlkifABI
    let handle: UInt16
    let ringPageOrder: UInt32
    let segmentsPerRequest: Int
    let indirectPagesPerRequest: Int
    let depth: Int
    let persistent: Bool
    let flushOperation: BlkifDirectOperation?
    /// Each ring's granted pages and port.
    let ringPages: [SharedPages]
    let ports: [EventPort]
    let slotData: [SharedPages]
    let slotIndirect: [SharedPages]
    /// Each slot's data pages as one view, and their grant references, slot after slot
    /// (`segmentsPerRequest` each): plain values, read without reference counting.
    let slotViews: [SharedView]
    let slotGrefs: [GrantRef]
    /// Each slot's indirect pages as views, one per page.
    let slotIndirectViews: [[SharedView]]
    /// The I/O thread's state; the thread holds it while it runs.
    var io = BlockFrontendIOState()
    /// Serves the rings while Connected; reports how its waits on the event channel fare.
    let thread: FrontendIOThread<BlockFrontendRingService>
    /// Requests sent and not yet answered (read by observers; the thread keeps `slots`).
    let inFlight = Atomic<Int>(0)
    /// Rings stopped because the backend broke the protocol on them.
    let brokenRings = Atomic<Int>(0)
    /// Notifications that failed (the first is logged, the rest only counted).
    let notifyFailures = Atomic<Int>(0)
    let logger: Logger

    /// Grants the rings and data pages to `backendDomain` and allocates the ports. On
    /// failure everything already made is undone.
    init(platform: any Platform, backendDomain: DomainID, features: BlkifBackendFeatures,
         configuration: BlockFrontendConfiguration, handle: UInt16, ioContext: FrontendIOContext,
         logger: Logger) throws(BlockFrontendError) {
        self.logger = logger
        self.handle = handle
        abi = configuration.abi
        grants = platform.grantTable
        persistent = configuration.persistent
        ringPageOrder = min(configuration.maxRingPageOrder ?? 4, features.maxRingPageOrder, 4)
        let queueCount = Int(min(configuration.queues, features.maxQueues ?? 1))
        let indirect = min(configuration.maxIndirectSegments, Int(features.maxIndirectSegments ?? 0),
                           BlkifIndirectPage.maxSegments)
        segmentsPerRequest = indirect > BlkifSegments.capacity ? indirect : BlkifSegments.capacity
        indirectPagesPerRequest = indirect > BlkifSegments.capacity ? BlkifIndirectPage.pageCount(forSegments: indirect) : 0
        flushOperation = features.flushCache ? .flushDiskCache : features.barrier ? .writeBarrier : nil
        let pagesPerRing = 1 << Int(ringPageOrder)

        var made: [SharedPages] = []
        let channel: any EventChannel
        do { channel = try platform.openEventChannel() } catch { throw .platform(error) }
        eventChannel = channel
        thread = FrontendIOThread(name: "blkfront", context: ioContext, eventChannel: channel, logger: logger)
        func undo() {
            for pages in made { try? platform.grantTable.endAccess(pages) }
            channel.close()
        }
        do throws(BlockFrontendError) {
            var rings: [BlockFrontendRing] = []
            var ringPagesMade: [SharedPages] = []
            var portsMade: [EventPort] = []
            for _ in 0..<queueCount {
                let pages: SharedPages
                do { pages = try grants.share(pages: pagesPerRing, with: backendDomain, writable: true) } catch { throw .platform(error) }
                made.append(pages)
                let shared: SharedRing
                do { shared = try SharedRing(memory: pages.view, pages: pagesPerRing, entrySize: abi.slotSize) } catch {
                    throw .protocolViolation("ring of \(pagesPerRing) pages: \(error)")
                }
                let port: EventPort
                do { port = try channel.allocateUnbound(remote: backendDomain) } catch { throw .platform(error) }
                rings.append(BlockFrontendRing(ring: FrontRing(initializing: shared)))
                ringPagesMade.append(pages)
                portsMade.append(port)
            }
            io.rings = rings
            ringPages = ringPagesMade
            ports = portsMade
            let ringSlots = rings.reduce(0) { $0 + Int($1.ring.size) }
            depth = min(configuration.depth, ringSlots)
            var data: [SharedPages] = []
            var indirectPages: [SharedPages] = []
            for _ in 0..<depth {
                do {
                    let pages = try grants.share(pages: segmentsPerRequest, with: backendDomain, writable: true)
                    made.append(pages)
                    data.append(pages)
                    if indirectPagesPerRequest > 0 {
                        // Writable, as Linux blkfront grants them: Linux blkback maps every
                        // page it may keep as a persistent grant writable, indirect pages
                        // included, and a read-only grant fails that map (every indirect
                        // request answered BLKIF_RSP_ERROR on real Xen).
                        let table = try grants.share(pages: indirectPagesPerRequest, with: backendDomain, writable: true)
                        made.append(table)
                        indirectPages.append(table)
                    }
                } catch {
                    throw .platform(error)
                }
            }
            slotData = data
            slotIndirect = indirectPages
            slotViews = data.map(\.view)
            slotGrefs = data.flatMap(\.refs)
            var views: [[SharedView]] = []
            for table in indirectPages {
                var pages: [SharedView] = []
                for page in 0 ..< indirectPagesPerRequest {
                    do { pages.append(try table.view.slice(offset: page * pageSize, length: pageSize)) } catch {
                        throw .protocolViolation("indirect page \(page) of a \(table.region.length)-byte grant: \(error)")
                    }
                }
                views.append(pages)
            }
            slotIndirectViews = views
        } catch {
            undo()
            throw error
        }
        io.slots = Array(repeating: nil, count: depth)
        io.freeSlots = Array((0..<depth).reversed())
    }

    /// Grant pages held: rings, data and indirect pages.
    var grantedPageSets: [SharedPages] { ringPages + slotData + slotIndirect }

    /// The keys the frontend publishes with Initialised (`io/blkif.h`, "Frontend XenBus
    /// Nodes"): one ring at the top level, several under `queue-N/`.
    var keys: XenbusKeys {
        var keys = XenbusKeys()
        let connection = BlkifConnectionKeys(ringPageOrder: ringPageOrder, queues: ringPages.indices.map {
            BlkifConnectionKeys.Queue(ringRefs: ringPages[$0].refs, eventChannel: ports[$0])
        })
        for (key, value) in connection.xenstoreEntries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
        if ringPageOrder > 0 { keys.set(BlkifFrontendFeatures.Key.ringPageOrder, String(ringPageOrder)) }
        if ringPages.count > 1 { keys.set(BlkifFrontendFeatures.Key.queueCount, String(ringPages.count)) }
        keys.set(BlkifFrontendFeatures.Key.protocolName, abi.protocolName)
        keys.set(BlkifFrontendFeatures.Key.persistent, persistent ? "1" : "0")
        return keys
    }

    // MARK: Thread

    /// Starts the I/O thread, which takes work from `core`; the connection's ring state
    /// is the thread's until ``stop()``.
    func start(core: BlockFrontendCore) throws(BlockFrontendError) {
        var state = BlockFrontendIOState()
        swap(&state, &io)
        do {
            try thread.start(BlockFrontendRingService(connection: self, core: core, io: state))
        } catch {
            swap(&state, &io)
            throw .platform(error)
        }
    }

    /// Stops and joins the I/O thread; returns the parts sent and still unanswered, in
    /// the order they were sent, and those it had taken from the queue but not sent, so
    /// all can be sent again on the next connection.
    func stop() -> (unanswered: [BlockFrontendWork], unsent: [BlockFrontendWork]) {
        if let service = thread.stop() { io = service.io }
        var unanswered = io.slots.compactMap { $0?.work }
        unanswered.sort { $0.sequence < $1.sequence }
        let unsent = Array(io.pending[io.pendingHead...])
        io.pending = []
        io.pendingHead = 0
        for index in io.slots.indices { io.slots[index] = nil }
        inFlight.store(0, ordering: .relaxed)
        io.freeSlots = Array((0..<depth).reversed())
        return (unanswered, unsent)
    }

    /// Closes the ports; the page sets go back through the frontend's grant ledger.
    func release() {
        eventChannel.close()
    }

    // MARK: Rings (on the I/O thread, through BlockFrontendRingService)

    /// Publishes the requests written to each ring, notifying where the backend asks.
    func pushAll(_ io: inout BlockFrontendIOState) {
        for index in io.rings.indices where io.rings[index].unpushed {
            io.rings[index].unpushed = false
            if io.rings[index].ring.pushRequestsAndCheckNotify() { notify(index) }
        }
    }

    private func notify(_ index: Int) {
        do { try eventChannel.notify(ports[index]) } catch {
            // A channel that fails, fails every push: one line, then a count.
            guard notifyFailures.wrappingAdd(1, ordering: .relaxed).oldValue == 0 else { return }
            logger.error("blkfront: notifying port \(ports[index]) failed: \(error); later failures are only counted")
        }
    }

    /// Whether any ring has responses; if not, each asks to be notified of the next
    /// (`finalCheckForResponses`).
    func hasResponses(_ io: inout BlockFrontendIOState) -> Bool {
        for index in io.rings.indices where !io.rings[index].broken {
            do {
                if try io.rings[index].ring.finalCheckForResponses() { return true }
            } catch {
                breakRing(&io, index, "\(error)")
            }
        }
        return false
    }

    private func breakRing(_ io: inout BlockFrontendIOState, _ index: Int, _ why: String) {
        guard !io.rings[index].broken else { return }
        io.rings[index].broken = true
        brokenRings.add(1, ordering: .relaxed)
        logger.error("blkfront: ring \(index) stopped: \(BlockFrontendError.protocolViolation(why))")
    }

    // MARK: Responses

    func consumeAll(_ io: inout BlockFrontendIOState) -> Bool {
        var any = false
        for index in io.rings.indices where !io.rings[index].broken {
            if consume(&io, index) { any = true }
        }
        return any
    }

    private func consume(_ io: inout BlockFrontendIOState, _ index: Int) -> Bool {
        var ring = io.rings[index].ring
        defer { io.rings[index].ring = ring }
        let producer: RingIndex
        do { producer = try ring.checkedResponseProducer() } catch {
            breakRing(&io, index, "\(error)")
            return false
        }
        var any = false
        while ring.responseConsumer != producer {
            let slotView = ring.responseSlot(ring.responseConsumer)
            ring.responseConsumer &+= 1
            any = true
            let response: BlkifResponse
            do { response = try BlkifResponse.decode(from: slotView, at: 0, abi: abi) } catch {
                breakRing(&io, index, "response: \(error)")
                return any
            }
            guard response.id < UInt64(depth), let expected = io.slots[Int(response.id)].map({ ($0.ring, $0.operation) }),
                  expected == (index, response.operation), let sent = io.slots[Int(response.id)].take() else {
                breakRing(&io, index, "response id \(response.id) operation \(response.operation) matches no request in flight on this ring")
                return any
            }
            let slot = Int(response.id)
            inFlight.subtract(1, ordering: .relaxed)
            finish(sent.work, slot: slot, status: response.status)
            io.freeSlots.append(slot)
        }
        return any
    }

    private func finish(_ work: BlockFrontendWork, slot: Int, status: BlkifStatus) {
        let op = work.operation
        switch status {
        case .okay:
            if op.kind == .read {
                let start = Int(work.offset) * 512
                let length = Int(work.count) * 512
                op.data.withUnsafeMutableBytes { bytes in
                    slotViews[slot].copyBytes(at: 0, into: UnsafeMutableRawBufferPointer(rebasing: bytes[start ..< start + length]))
                }
            }
            op.complete(units: units(work), failure: nil)
        case .error:
            op.complete(units: units(work), failure: .ioError(operation: op.kind.name, sector: sector(work), count: count(work)))
        case .notSupported:
            op.complete(units: units(work), failure: .notSupported(operation: op.kind.name, sector: sector(work), count: count(work)))
        }
    }

    /// The first sector of `work`, for errors.
    private func sector(_ work: BlockFrontendWork) -> UInt64 {
        work.operation.kind == .flush ? 0 : work.operation.sector + work.offset
    }

    /// The sectors of `work`, for errors.
    private func count(_ work: BlockFrontendWork) -> UInt64 {
        work.operation.kind == .discard ? work.operation.count : work.count
    }

    private func units(_ work: BlockFrontendWork) -> UInt64 {
        switch work.operation.kind {
        case .read, .write: return work.count
        case .flush, .discard: return 1
        }
    }

    // MARK: Requests

    /// Sends waiting work while a slot and ring space are free; says whether it sent any.
    func dispatch(_ io: inout BlockFrontendIOState, core: BlockFrontendCore) -> Bool {
        var sent = false
        let maxSectors = UInt64(segmentsPerRequest * (pageSize / 512))
        while let slot = io.freeSlots.last, let ringIndex = ringWithSpace(&io) {
            if io.pendingHead == io.pending.count {
                io.pending.removeAll(keepingCapacity: true)
                io.pendingHead = 0
                core.takeWaiting(into: &io.pending)
                if io.pending.isEmpty { break }
            }
            var work = io.pending[io.pendingHead]
            let kind = work.operation.kind
            if kind == .read || kind == .write, work.count > maxSectors {
                // The rest stays first in line.
                io.pending[io.pendingHead].offset += maxSectors
                io.pending[io.pendingHead].count -= maxSectors
                work.count = maxSectors
            } else {
                io.pendingHead += 1
            }
            io.freeSlots.removeLast()
            work.sequence = io.nextSequence
            io.nextSequence &+= 1
            let id = UInt64(slot)
            let request: BlkifRequest
            do {
                request = try makeRequest(work, slot: slot, id: id)
            } catch {
                io.freeSlots.append(slot)
                work.operation.complete(units: units(work), failure: .protocolViolation("cannot build request: \(error)"))
                continue
            }
            let producer = io.rings[ringIndex].ring.requestProducerPrivate
            request.encode(into: io.rings[ringIndex].ring.requestSlot(producer), at: 0, abi: abi)
            io.rings[ringIndex].ring.requestProducerPrivate = producer &+ 1
            io.rings[ringIndex].unpushed = true
            io.slots[slot] = BlockFrontendInFlight(work: work, ring: ringIndex, operation: request.responseOperation)
            inFlight.add(1, ordering: .relaxed)
            sent = true
        }
        return sent
    }

    /// The next ring (round robin) with a free request slot.
    private func ringWithSpace(_ io: inout BlockFrontendIOState) -> Int? {
        let count = io.rings.count
        for step in 0..<count {
            var index = io.nextRing + step
            if index >= count { index -= count }
            if !io.rings[index].broken, !io.rings[index].ring.isFull {
                io.nextRing = index + 1 == count ? 0 : index + 1
                return index
            }
        }
        return nil
    }

    private func makeRequest(_ work: BlockFrontendWork, slot: Int, id: UInt64) throws(BlkifError) -> BlkifRequest {
        let op = work.operation
        switch op.kind {
        case .flush:
            // Callers only flush when the backend offers one of the two.
            return .direct(try BlkifDirectRequest(operation: flushOperation ?? .flushDiskCache, handle: handle, id: id,
                                                  sectorNumber: 0, segments: BlkifSegments()))
        case .discard:
            return .discard(BlkifDiscardRequest(handle: handle, id: id, sectorNumber: op.sector,
                                                sectorCount: op.count, secure: false))
        case .read, .write:
            let sectorsPerPage = pageSize / 512
            let pages = (Int(work.count) + sectorsPerPage - 1) / sectorsPerPage
            let view = slotViews[slot]
            if op.kind == .write {
                let start = Int(work.offset) * 512
                let length = Int(work.count) * 512
                op.data.withUnsafeBytes { bytes in
                    view.copyBytes(from: UnsafeRawBufferPointer(rebasing: bytes[start ..< start + length]), to: 0)
                }
            }
            let count = Int(work.count)
            let firstGref = slot * segmentsPerRequest
            let segments = (0..<pages).lazy.map { [slotGrefs] page in
                BlkifSegment(gref: slotGrefs[firstGref + page], firstSector: 0,
                             lastSector: UInt8(min(sectorsPerPage, count - page * sectorsPerPage) - 1))
            }
            let sector = op.sector + work.offset
            if pages <= BlkifSegments.capacity {
                return .direct(try BlkifDirectRequest(operation: op.kind == .read ? .read : .write, handle: handle,
                                                      id: id, sectorNumber: sector, segments: BlkifSegments(segments)))
            }
            let table = slotIndirect[slot]
            for (index, segment) in segments.enumerated() {
                let page = slotIndirectViews[slot][BlkifIndirectPage.location(ofSegment: index).page]
                BlkifIndirectPage.encodeSegment(segment, index: index, into: page)
            }
            let tablePages = BlkifIndirectPage.pageCount(forSegments: pages)
            return .indirect(try BlkifIndirectRequest(
                operation: op.kind == .read ? .read : .write, segmentCount: pages, handle: handle, id: id,
                sectorNumber: sector, indirectGrefs: BlkifIndirectGrefs(table.refs[0 ..< tablePages]),
                maxSegments: segmentsPerRequest))
        }
    }
}
