import Blkif
import Glibc
import Logging
import SharedMemory
import URing
import XenDevice
import XenPlatform
import XenRing

/// One ring queue's request engine (`io/blkif.h` over `io/ring.h`), with no threads of its
/// own: its worker hands it events and completions, and it hands the worker I/O.
///
/// Per request: the slot is decoded once by Blkif (every field read once, then validated),
/// checked against the disk size and what the device allows, write data is moved from the
/// frontend's pages into this queue's registered copy buffer, and one contiguous read or
/// write is queued on the engine. On completion, read data is moved back into the
/// frontend's segments and the response is written; responses go out in completion
/// order and are pushed with `pushResponsesAndCheckNotify`.
///
/// Zero-copy (``usesZeroCopy``): with persistent grants and a store opened WITHOUT
/// O_DIRECT, a request whose every segment's page is held mapped skips the copy buffer:
/// the engine does one readv/writev straight on the mapped pages (one iovec per
/// segment's sector range, ranges adjacent in our address space merged; the iovec
/// arrays are preallocated per slot). Buffered I/O into a gntdev mapping is safe
/// everywhere, since the kernel moves the bytes to and from the page cache with
/// copy_to_user/copy_from_user. With O_DIRECT the copy stays (the rule: never O_DIRECT
/// on a foreign mapping; see below); the queue asks the descriptor (F_GETFL), so any
/// store opened with O_DIRECT keeps copying. A request with any segment grant-copied
/// (cache full of busy pages, map refused, no-reuse windows) or needing more than
/// 1024 iovecs goes through the copy buffer whole. A zero-copy request holds a use of
/// each of its cache entries until its completion, writes included (on the copy path a
/// write gives them back once copied in): only idle entries can be evicted, so no page
/// the engine reads or writes is unmapped under it. A read takes writable mappings only
/// (a page granted read-only is remapped writable or grant-copied, whose copy the grant
/// then refuses), so no read ever targets a read-only mapping. Responses go out only
/// after the I/O (and, for barriers and flushes with data, the fdatasync) completed.
///
/// Moving data: persistent grants when both ends advertised feature-persistent
/// (``BlkbackQueueConfiguration/persistentGrants``), grant copy otherwise. With persistent
/// grants each page is mapped once, kept in a bounded per-queue LRU cache
/// (``BlkbackPersistentGrants``, Linux blkback's 1056 pages by default) and data is
/// memcpy'd between it and the copy buffer; a page the cache cannot take (all entries
/// busy, the map refused, the frontend not reusing its grants) is grant-copied. Either
/// way, with O_DIRECT the engine does I/O only on our own page-aligned memory, so
/// O_DIRECT stays safe everywhere (on Xen, O_DIRECT on grant-mapped foreign pages needs
/// the kernel's grant-mapping-aware get_user_pages, which not every dom0 configuration
/// has); without O_DIRECT, zero-copy (above) does buffered I/O on the mappings; and a
/// grant that can be neither mapped nor copied (revoked, invalid) fails its request with
/// BLKIF_RSP_ERROR. Mapping per request is never done: one map+unmap costs about
/// 38 µs on the local hypervisor (`xensplit-bench platform`, release build), a 4 KiB
/// grant copy about 0.8 µs in a batch.
///
/// Measured with a throwaway driver around this queue, not kept in the repository
/// (`persist-measure uring 5 local 2` and `... inprocess 2`: release build, io_uring
/// engine, one queue of 32 slots over a 64 MiB file in the page cache, a frontend thread
/// keeping the queue full, 5 alternating 2 s runs of each, medians; persistent grants are
/// "ours", grant copy the reference; `xensplit-bench blkback` reruns the comparison
/// through ``BlkbackQueueConfiguration/persistentGrants``). The machine
/// (2 cores) was shared, so throughput spreads widely; process CPU time per request
/// (frontend, hypervisor and backend together; ratio reference/ours) is steadier:
///
///     bench blkback_read_4k_rand_qd32_local ours=508139 reference=27523 unit=IOPS ratio=18.46 spread=34.9
///     bench blkback_read_128k_seq_qd16_local ours=11902 reference=1626 unit=MiB/s ratio=7.32 spread=46.7
///     bench blkback_read_4k_rand_qd32_local_cpu_us ours=1.31 reference=16.16 unit=us_cpu_per_request ratio=12.34 spread=55.5
///     bench blkback_read_128k_seq_qd16_local_cpu_us ours=8.73 reference=45.90 unit=us_cpu_per_request ratio=5.26 spread=30.9
///     bench blkback_write_128k_seq_qd16_local_cpu_us ours=19.30 reference=56.02 unit=us_cpu_per_request ratio=2.90 spread=58.3
///     bench blkback_read_4k_rand_qd32_inprocess_cpu_us ours=4.44 reference=4.77 unit=us_cpu_per_request ratio=1.07 spread=8.0
///     bench blkback_read_128k_seq_qd16_inprocess_cpu_us ours=14.92 reference=18.66 unit=us_cpu_per_request ratio=1.25 spread=2.3
///     bench blkback_write_128k_seq_qd16_inprocess_cpu_us ours=19.26 reference=20.29 unit=us_cpu_per_request ratio=1.05 spread=14.0
///
/// On the local hypervisor a grant copy is a round trip to the hypervisor thread, which a
/// memcpy into a mapped page avoids; on the in-process double a copy is a lock and a
/// memcpy, closest to Xen's GNTTABOP_copy without the hypercall, and persistent grants
/// still cost 5 to 25% less CPU per request (no grant-entry checks or lock per page).
/// Hence persistent grants are offered by default (`xensplit blkback --persistent-grants
/// on|off`, or ``BlkbackDeviceLimits/persistentGrants``). Their cost: pages a frontend
/// granted stay pinned while the queue runs (unmapped at ``close()``), up to the bound
/// per queue, one mapping each.
///
/// Zero-copy against the copy buffer, measured with `swift build -c release --product
/// xensplit-bench && .build/release/xensplit-bench blkback --only NAME` for NAME
/// seqread-128k-qd8-f1-q1, seqwrite-128k-qd8-f1-q1, seqread-128k-qd8-f16-q1 and
/// randread-4k-qd32-f16-q4 (each: 5 alternating 2 s runs of ours and fio's io_uring
/// engine on the same /dev/shm file, medians), the build without zero-copy ("before")
/// and with it ("after") run back to back, 2 or 3 rounds alternating which goes first.
/// The 2 cores were shared with other builds and a VM (load average 7 to 10), so
/// throughput against fio swings by tens of percent between rounds; the backend's CPU
/// time per I/O (no reference) is steadier and fell in every round:
///
///     before: bench blkback-seqread-128k-qd8-f1-q1 ours=3574 reference=3751 unit=MiB/s ratio=0.953 spread=105.5%
///     after:  bench blkback-seqread-128k-qd8-f1-q1 ours=3827 reference=3243 unit=MiB/s ratio=1.180 spread=102.8%
///     before: bench blkback-cpu-per-io-seqread-128k-qd8-f1-q1 ours=22.250 (other round 22.843) unit=us
///     after:  bench blkback-cpu-per-io-seqread-128k-qd8-f1-q1 ours=20.005 (other round 21.253) unit=us
///     before: bench blkback-seqwrite-128k-qd8-f1-q1 ours=4109 reference=4051 unit=MiB/s ratio=1.014 spread=55.6%
///     after:  bench blkback-seqwrite-128k-qd8-f1-q1 ours=4267 reference=4333 unit=MiB/s ratio=0.985 spread=28.0%
///     before: bench blkback-cpu-per-io-seqwrite-128k-qd8-f1-q1 ours=18.189 (other rounds 20.082, 19.901) unit=us
///     after:  bench blkback-cpu-per-io-seqwrite-128k-qd8-f1-q1 ours=16.389 (other rounds 17.231, 18.023) unit=us
///     before: bench blkback-seqread-128k-qd8-f16-q1 ours=7850 reference=12961 unit=MiB/s ratio=0.606 spread=69.6%
///     after:  bench blkback-seqread-128k-qd8-f16-q1 ours=10197 reference=13719 unit=MiB/s ratio=0.743 spread=59.5%
///     before: bench blkback-cpu-per-io-seqread-128k-qd8-f16-q1 ours=19.582 (other round 23.687) unit=us
///     after:  bench blkback-cpu-per-io-seqread-128k-qd8-f16-q1 ours=13.438 (other round 19.255) unit=us
///     before: bench blkback-randread-4k-qd32-f16-q4 ours=611229 reference=870569 unit=IOPS ratio=0.702 spread=38.0%
///     after:  bench blkback-randread-4k-qd32-f16-q4 ours=577130 reference=855269 unit=IOPS ratio=0.675 spread=27.9%
///     before: bench blkback-cpu-per-io-randread-4k-qd32-f16-q4 ours=2.107 unit=us
///     after:  bench blkback-cpu-per-io-randread-4k-qd32-f16-q4 ours=2.128 unit=us
///
/// So 128 KiB transfers cost 7 to 30% less backend CPU and sequential throughput against
/// fio rose in most rounds (seqread f1-q1 ratio 0.72 and 0.95 before, 1.03 and 1.18
/// after; f16-q1 0.69 and 0.61 before, 0.78 and 0.74 after); seqwrite f1-q1 is within
/// the noise (0.95, 0.73, 1.01 before; 0.84, 1.00, 0.99 after); 4 KiB random reads, where
/// the copy was one page, did not change beyond the noise. The cost: a zero-copy write
/// keeps its pages in use until it completes, so busy entries can reach slots times
/// segments per request (32 x 32 by default, under the 1056 bound).
///
/// Everything is preallocated when the queue is made: request slots, the segment table,
/// the copy list, the copy buffers (one per slot, as large as the largest transfer, plus
/// 8 pages for indirect segment pages) and the persistent-grant cache (entries, gref
/// index, LRU links). With persistent grants a request whose pages are mapped allocates
/// nothing: counting the worker thread's mallocs over 0.5 M requests, every sampled
/// allocation was in the in-process event-channel double, none in the queue or the
/// cache; a miss allocates in the map call. When every slot is busy the queue stops
/// consuming and the ring holds the rest.
///
/// Ordering: reads, writes, flushes and discards run concurrently and complete in any
/// order. BLKIF_OP_WRITE_BARRIER stops consumption; once every earlier request has
/// completed it writes its data (if any), then fdatasyncs, responds, and consumption
/// resumes, so earlier writes are durable before it and later ones start after it.
/// BLKIF_OP_FLUSH_DISKCACHE is an fdatasync; with segments, their write completes first.
///
/// Restart: with a ``BlkbackRestartState`` each request is copied out of the ring into its
/// record before anything else (and decoded from there), each answer is recorded before
/// its response is written, and `published` before the push, so a process killed at any
/// point leaves a state from which the next one answers every request exactly once
/// (Protocols/blkback-restart.md). Cost per request: one copy of the slot (the decoder
/// then reads our copy, not the ring), a few release stores, no system call.
///
/// A frontend that breaks the ring (req_prod overrun) or whose slot cannot be decoded
/// disconnects the queue: ``disconnectReason`` says why, a log line too, and the queue
/// stops touching the ring. Used by one thread at a time (its worker).
public final class BlkbackQueue: @unchecked Sendable {
    // SAFETY (@unchecked): owned by one thread at a time: the creator, then its worker,
    // handed over through the worker's mailbox (a mutex orders the memory).

    /// A name for log lines (for example the device path).
    public let name: String
    /// The frontend's domain, whose grants the queue copies.
    public let frontendDomain: DomainID
    /// The event-channel handle the queue's port is bound through.
    public let eventChannel: any EventChannel
    /// The queue's port (bound to the frontend's).
    public let port: EventPort
    /// The limits in force.
    public let configuration: BlkbackQueueConfiguration
    /// The backing store.
    public let store: any BlockBackingStore
    /// Why the queue stopped serving its frontend, if it did: ``BlockBackendError/ring(_:)``
    /// (the frontend overran the ring), ``BlockBackendError/request(_:)`` (a slot that
    /// cannot be decoded) or ``BlockBackendError/platform(_:)`` (notifying it failed).
    public private(set) var disconnectReason: BlockBackendError?
    /// The disk size in 512-byte sectors that requests are checked against.
    public internal(set) var diskSectors: UInt64
    /// The store's logical sector size: requests must cover whole sectors of it.
    let sectorSize: UInt32

    var ring: BackRing
    let mapper: any GrantMapper
    let logger: Logger
    /// Lines the frontend causes (refusals, a broken ring), rate-limited per device.
    let guestLog: GuestLog
    let abi: BlkifABI
    let readOnly: Bool
    let discardEnabled: Bool
    let fileDescriptor: Int32
    /// How I/O names the backing store: its descriptor, or (set by the worker while it
    /// serves the queue) its slot in the engine's registered file table, which spares
    /// the kernel a file lookup and reference per request.
    var file: FileReference
    /// The store cannot do non-blocking I/O (tmpfs), so every transfer would reach
    /// io_uring's workers after a failed inline try: queue them there at once.
    let transfersAlwaysAsync: Bool
    /// One registered copy buffer per slot (platforms bound the size of one
    /// registration), and one for indirect segment pages.
    let slotBuffers: [CopyBuffer]
    let scratchBuffer: CopyBuffer
    /// The slot buffers' ids and addresses, for the hot path.
    let slotBufferIDs: [UInt32]
    let slotBases: [UnsafeMutableRawPointer]
    let segmentsPerRequest: Int
    var slots: UnsafeMutableBufferPointer<BlkbackSlot>
    var freeSlots: UnsafeMutableBufferPointer<Int32>
    var freeCount: Int
    var segmentTable: UnsafeMutableBufferPointer<BlkifSegment>
    var copies: UnsafeMutableBufferPointer<GrantCopySegment>
    /// Persistently mapped pages (empty with persistent grants off).
    let grants: BlkbackPersistentGrants
    /// Per slot and segment: the cache entry holding the segment's page, or -1 when the
    /// segment is grant-copied (or its entry was already given back).
    var segmentEntries: UnsafeMutableBufferPointer<Int32>
    /// The slot buffers as views, for memcpy to and from mapped pages.
    let slotViews: [SharedView]
    /// Whether transfers go straight to persistently mapped pages when every segment of
    /// a request is mapped: persistent grants on, ``BlkbackQueueConfiguration/zeroCopy``,
    /// and a store opened without O_DIRECT (see the type's comment).
    public let usesZeroCopy: Bool
    /// Per slot, ``vectorStride`` iovecs naming the mapped pages' sector ranges for a
    /// zero-copy transfer (empty without zero-copy).
    var vectors: UnsafeMutableBufferPointer<iovec>
    let vectorStride: Int
    /// Transfers done straight on mapped pages, and transfers with persistent grants that
    /// had to go through the copy buffer (a segment copied, or too many iovecs).
    var zeroCopyTransfers = 0
    var copiedTransfers = 0
    let scratchView: SharedView
    /// The barrier slot waiting for earlier requests to finish, if any.
    var barrierSlot: Int?
    /// Requests refused so far.
    public private(set) var refusals = 0
    /// What the queue has answered, by kind (read on the worker, or after removal).
    public internal(set) var statistics = BlkbackStatistics()
    /// Responses written since the last push.
    var unpushedResponses = 0
    /// Set by the worker: the high bits of every user-data value this queue's I/O carries.
    var userDataBase: UInt64 = 0
    var closed = false
    /// The persistent state a later process takes the queue over from, if kept
    /// (Protocols/blkback-restart.md); nil: nothing outlives the process.
    public let restart: BlkbackRestartState?
    /// Per slot, the record of its request in ``restart``.
    var slotRecords: UnsafeMutableBufferPointer<Int32>
    /// The record the next response answers (-1 without ``restart``).
    var answeringRecord: Int32 = -1
    /// Records of requests a previous process had in flight, re-executed in order before
    /// anything new is consumed; the next one to start.
    var replay: [Int32]
    var replayNext = 0
    /// False once the queue is being handed over to another process: it takes nothing
    /// more from the ring (nor from ``replay``) and only finishes what it started.
    public internal(set) var takesRequests = true

    /// Requests in flight (slots in use).
    public var inFlight: Int { slots.count - freeCount }

    /// Whether the queue keeps grants mapped (``BlkbackQueueConfiguration/persistentGrants``).
    public var usesPersistentGrants: Bool { grants.capacity > 0 }

    /// Pages the queue holds mapped now (persistent grants). Read it from the thread that
    /// owns the queue, or after its worker let go of it.
    public var persistentlyMappedPages: Int { grants.count }

    /// A queue serving `ring` (already mapped and attached) for `frontendDomain`, whose
    /// port `port` is bound through `eventChannel`. Registers a copy buffer through
    /// `mapper`; ``close()`` releases them. The ring, port and store stay the caller's.
    ///
    /// With `restart`, every request taken and answered is recorded there as it goes, so
    /// a later process can take the ring over; `replay` (from
    /// ``BlkbackRestartState/recover(ring:)``, with `ring` attached at its indices) lists
    /// the requests a previous process left in flight, re-executed first.
    public init(name: String, ring: BackRing, frontendDomain: DomainID, eventChannel: any EventChannel,
                port: EventPort, mapper: any GrantMapper, store: any BlockBackingStore,
                configuration: BlkbackQueueConfiguration,
                logger: Logger = Logger(label: "xensplit.blkback"), guestLog: GuestLog? = nil,
                restart: BlkbackRestartState? = nil, replay: [Int32] = []) throws(BlockBackendError) {
        try configuration.validate()
        if let restart, restart.recordCount != Int(ring.size) || restart.abi != configuration.abi {
            throw .restartState(.layout(field: "records", found: UInt32(restart.recordCount), expected: ring.size))
        }
        // The slot stride is the ABI's: a ring laid out for another ABI would misplace slots.
        guard ring.shared.entrySize == configuration.abi.slotSize else {
            throw .configuration(name: "ring entry size", value: ring.shared.entrySize,
                                 limit: configuration.abi.slotSize...configuration.abi.slotSize)
        }
        self.name = name
        self.ring = ring
        self.frontendDomain = frontendDomain
        self.eventChannel = eventChannel
        self.port = port
        self.mapper = mapper
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.guestLog = guestLog ?? GuestLog(logger: logger)
        self.abi = configuration.abi
        self.readOnly = configuration.readOnly || store.readOnly
        self.discardEnabled = configuration.discard && store.supportsDiscard
        self.fileDescriptor = store.fileDescriptor
        self.file = .descriptor(store.fileDescriptor)
        self.transfersAlwaysAsync = !supportsNonblockingIO(store.fileDescriptor)
        self.diskSectors = try store.currentSectors()
        self.sectorSize = store.logicalSectorSize
        segmentsPerRequest = configuration.segmentsPerRequest
        var buffers: [CopyBuffer] = []
        do {
            for _ in 0..<configuration.slots {
                buffers.append(try mapper.registerCopyBuffer(pages: segmentsPerRequest))
            }
            scratchBuffer = try mapper.registerCopyBuffer(pages: BlkifIndirectGrefs.capacity)
        } catch {
            for buffer in buffers { try? mapper.unregisterCopyBuffer(buffer) }
            throw .platform(error)
        }
        slotBuffers = buffers
        slotBufferIDs = buffers.map(\.id)
        slotBases = buffers.map(\.view.baseAddress)
        slotViews = buffers.map(\.view)
        scratchView = scratchBuffer.view
        grants = BlkbackPersistentGrants(capacity: configuration.persistentGrants ? configuration.persistentGrantsPerQueue : 0,
                                         mapper: mapper, domain: frontendDomain, logger: logger)
        usesZeroCopy = configuration.persistentGrants && configuration.zeroCopy
            && !Self.opensDirect(store.fileDescriptor)
        vectorStride = usesZeroCopy ? min(segmentsPerRequest, Self.maxVectors) : 0
        vectors = .allocate(capacity: configuration.slots * vectorStride)
        vectors.initialize(repeating: iovec(iov_base: nil, iov_len: 0))
        segmentEntries = .allocate(capacity: configuration.slots * segmentsPerRequest)
        segmentEntries.initialize(repeating: -1)
        slots = .allocate(capacity: configuration.slots)
        slots.initialize(repeating: BlkbackSlot())
        freeSlots = .allocate(capacity: configuration.slots)
        for index in 0..<configuration.slots { freeSlots[index] = Int32(configuration.slots - 1 - index) }
        freeCount = configuration.slots
        segmentTable = .allocate(capacity: configuration.slots * segmentsPerRequest)
        segmentTable.initialize(repeating: BlkifSegment(gref: 0, firstSector: 0, lastSector: 0))
        self.restart = restart
        self.replay = replay
        slotRecords = .allocate(capacity: configuration.slots)
        slotRecords.initialize(repeating: -1)
        // A segment's bytes may straddle one page boundary of the buffer: two copies each.
        copies = .allocate(capacity: 2 * segmentsPerRequest + BlkifIndirectGrefs.capacity)
        copies.initialize(repeating: GrantCopySegment(source: .local(buffer: 0, offset: 0),
                                                      destination: .local(buffer: 0, offset: 0), length: 0))
    }

    deinit {
        slots.deallocate()
        freeSlots.deallocate()
        segmentTable.deallocate()
        copies.deallocate()
        segmentEntries.deallocate()
        vectors.deallocate()
        slotRecords.deallocate()
    }

    /// The most iovecs one readv/writev takes (Linux UIO_MAXIOV).
    static let maxVectors = 1024

    /// Whether `descriptor` was opened with O_DIRECT; an unreadable status counts as
    /// O_DIRECT, which keeps the copy.
    static func opensDirect(_ descriptor: Int32) -> Bool {
        let flags = fcntl(descriptor, F_GETFL)
        return flags < 0 || flags & FileBackingStore.O_DIRECT != 0
    }

    /// Unmaps every persistently mapped page and releases the copy buffers. Only once
    /// nothing is in flight (the engine may still be writing into a buffer otherwise); the
    /// worker calls this when a queue is removed (disconnect, device removal, shutdown).
    public func close() throws(BlockBackendError) {
        guard !closed else { return }
        guard inFlight == 0 else {
            throw .configuration(name: "requests in flight at close", value: inFlight, limit: 0...0)
        }
        closed = true
        if usesPersistentGrants {
            let statistics = grants.statistics
            logger.info("blkback queue persistent grants", metadata: [
                "queue": "\(name)", "mapped": "\(grants.count)", "hits": "\(statistics.hits)",
                "maps": "\(statistics.maps)", "evictions": "\(statistics.evictions)", "copies": "\(statistics.copies)",
                "failed-maps": "\(statistics.failures)", "failed-unmaps": "\(statistics.failedUnmaps)", "no-reuse-windows": "\(statistics.thrashingWindows)",
                "zero-copy-transfers": "\(zeroCopyTransfers)", "copied-transfers": "\(copiedTransfers)"])
        }
        var failure = grants.unmapAll()
        for buffer in slotBuffers + [scratchBuffer] {
            do { try mapper.unregisterCopyBuffer(buffer) } catch { failure = failure ?? error }
        }
        if let failure { throw .platform(failure) }
    }

    /// Stops serving the frontend for `reason`, with a log line; in-flight I/O still
    /// completes (the buffers are ours) but nothing more is written to the ring.
    func disconnect(_ reason: BlockBackendError) {
        guard disconnectReason == nil else { return }
        disconnectReason = reason
        guestLog.log(.error, "blkback queue disconnected", metadata: [
            "queue": "\(name)", "frontend": "d\(frontendDomain)", "reason": "\(reason)"])
    }

    // MARK: Responses

    /// Writes a response into the next response slot (io/ring.h: RING_GET_RESPONSE at
    /// rsp_prod_pvt); it becomes visible at the next push.
    func respond(id: UInt64, operation: UInt8, status: BlkifStatus) {
        guard disconnectReason == nil else { return }
        statistics.count(operation: operation, status: status)
        // A1..A3 before the response is written (A4).
        if let restart, answeringRecord >= 0 {
            restart.answer(answeringRecord, id: id, operation: operation, status: status, at: ring.responseProducerPrivate)
        }
        BlkifResponse(id: id, operation: operation, status: status)
            .encode(into: ring.responseSlot(ring.responseProducerPrivate), at: 0, abi: abi)
        ring.responseProducerPrivate &+= 1
        unpushedResponses += 1
    }

    /// Publishes written responses and notifies the frontend if it asked
    /// (io/ring.h: RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
    public func pushResponses() {
        guard unpushedResponses > 0, disconnectReason == nil else { return }
        unpushedResponses = 0
        // P1 before the frontend can see them (P2), the records freed after (P3).
        restart?.publish(upTo: ring.responseProducerPrivate)
        let notify = ring.pushResponsesAndCheckNotify()
        restart?.freePublished()
        guard notify else { return }
        do { try eventChannel.notify(port) } catch {
            disconnect(.platform(error))
        }
    }

    /// Logs why a request was refused, through the device's ``GuestLog`` (so a frontend
    /// cannot flood the log); the frontend gets `status`.
    func refuse(id: UInt64, operation: UInt8, status: BlkifStatus, _ why: BlkbackRefusal) {
        refusals += 1
        guestLog.log(.warning, "blkback request refused", metadata: [
            "queue": "\(name)", "frontend": "d\(frontendDomain)", "id": "\(id)", "operation": "\(operation)",
            "status": "\(status)", "reason": "\(why)", "refused": "\(refusals)"])
        respond(id: id, operation: operation, status: status)
    }
}

/// What a busy request slot is doing.
enum BlkbackPhase: UInt8 {
    case idle
    /// A barrier waiting for earlier requests to complete.
    case waitingForDrain
    /// Reading or writing data.
    case transfer
    /// fdatasync after (or instead of) a write.
    case flush
    /// Discarding.
    case discard
}

/// One request in flight: everything its completion needs, copied out of the ring.
struct BlkbackSlot {
    var id: UInt64 = 0
    var operation: UInt8 = 0
    var phase: BlkbackPhase = .idle
    var isRead = false
    var flushAfterWrite = false
    var sectorNumber: UInt64 = 0
    var byteCount = 0
    var segmentCount = 0
    /// iovecs of a zero-copy transfer in the slot's vectors; 0: through the copy buffer.
    var vectorCount = 0
    /// Bytes of the transfer moved by earlier short completions.
    var transferred = 0
}
