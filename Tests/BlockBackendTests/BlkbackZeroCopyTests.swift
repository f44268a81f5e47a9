import Blkif
import Glibc
import SharedMemory
import Synchronization
import Testing
import URing
import XenPlatform
import XenTesting
@testable import BlockBackend

/// The data transfers an engine was given: whether each moved data in place (on the
/// frontend's mapped pages) or through one of the queues' copy buffers, told apart by
/// address, since an in-place transfer of one range is a plain read or write too.
final class OperationCounts: Sendable {
    struct Transfer {
        var isRead: Bool
        /// (address, length) of each range: one for read/write, each iovec for readv/writev.
        var ranges: [(UInt, Int)]
    }

    struct Counts {
        var copiedReads = 0
        var copiedWrites = 0
        var inPlaceReads = 0
        var inPlaceWrites = 0
        /// The ranges of the last in-place transfer.
        var lastInPlaceRanges: [(UInt, Int)] = []
    }

    let transfers = Mutex<[Transfer]>([])

    func record(_ operation: BlockIOOperation) {
        let transfer: Transfer
        switch operation {
        case let .read(_, _, buffer), let .readFixed(_, _, buffer, _):
            transfer = Transfer(isRead: true, ranges: [(UInt(bitPattern: buffer.baseAddress), buffer.count)])
        case let .write(_, _, buffer), let .writeFixed(_, _, buffer, _):
            transfer = Transfer(isRead: false, ranges: [(UInt(bitPattern: buffer.baseAddress), buffer.count)])
        case let .readVector(_, _, vectors):
            transfer = Transfer(isRead: true, ranges: vectors.map { (UInt(bitPattern: $0.iov_base), $0.iov_len) })
        case let .writeVector(_, _, vectors):
            transfer = Transfer(isRead: false, ranges: vectors.map { (UInt(bitPattern: $0.iov_base), $0.iov_len) })
        default: return
        }
        transfers.withLock { $0.append(transfer) }
    }

    /// The transfers so far, a transfer counted as copied when its first range lies in a
    /// copy buffer of one of `queues`.
    func snapshot(_ queues: [BlkbackQueue]) -> Counts {
        let buffers = queues.flatMap { queue in
            queue.slotBases.map { (UInt(bitPattern: $0), queue.segmentsPerRequest * 4096) }
        }
        var counts = Counts()
        for transfer in transfers.withLock({ $0 }) {
            let start = transfer.ranges.first?.0 ?? 0
            let copied = buffers.contains { start >= $0.0 && start < $0.0 + UInt($0.1) }
            switch (copied, transfer.isRead) {
            case (true, true): counts.copiedReads += 1
            case (true, false): counts.copiedWrites += 1
            case (false, true): counts.inPlaceReads += 1
            case (false, false): counts.inPlaceWrites += 1
            }
            if !copied { counts.lastInPlaceRanges = transfer.ranges }
        }
        return counts
    }
}

/// An engine that records the data transfers it is given and passes everything on.
final class CountingEngine: BlockIOEngine {
    let inner: any BlockIOEngine
    let counts: OperationCounts

    init(_ inner: any BlockIOEngine, counts: OperationCounts) {
        self.inner = inner
        self.counts = counts
    }

    var kind: BlockIOEngineKind { inner.kind }
    var capacity: Int { inner.capacity }
    var inFlight: Int { inner.inFlight }

    func registerFiles(_ descriptors: [Int32]) throws(URingError) { try inner.registerFiles(descriptors) }
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {
        try inner.updateRegisteredFiles(descriptors, at: offset)
    }
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) { try inner.registerBuffers(buffers) }

    func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        counts.record(request.operation)
        return inner.enqueue(request)
    }

    func submit() throws(URingError) { try inner.submit() }
    func wait(minimum: Int, timeout: Duration?) throws(URingError) { try inner.wait(minimum: minimum, timeout: timeout) }
    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int { inner.reap(into: buffer) }
    func close() { inner.close() }
}

extension Rig {
    /// A rig whose engine of `kind` counts its operations into `counts`.
    convenience init(kind: BlockIOEngineKind, counts: OperationCounts, direct: Bool = false) throws {
        let inner = try makeFactory(kind)
        let factory = BlockIOEngineFactory(kind: kind, configuration: inner.configuration) {
            _ throws(URingError) in CountingEngine(try inner.makeEngine(), counts: counts)
        }
        try self.init(direct: direct, factory: factory)
    }
}

/// Zero-copy transfers: with persistent grants and a buffered store, reads and writes go
/// straight to the mapped pages (read/write for one range, readv/writev for more).
@Suite("blkback zero-copy transfers")
struct BlkbackZeroCopyTests {
    static func persistent(slots: Int = 8, bound: Int = BlkbackQueueConfiguration.defaultPersistentGrantsPerQueue,
                           zeroCopy: Bool = true) -> BlkbackQueueConfiguration {
        BlkbackQueueConfiguration(maxIndirectSegments: 32, slots: slots, persistentGrants: true,
                                  persistentGrantsPerQueue: bound, zeroCopy: zeroCopy)
    }

    @Test("reads, writes and indirect requests on mapped pages, every ABI: data right, every transfer in place",
          arguments: availableEngines)
    func dataEveryABI(engine: BlockIOEngineKind) throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: engine, counts: counts)
        var generator = SeededGenerator(seed: 0x2C0)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for abi in BlkbackDataTests.abis {
            let f = try rig.attach(name: "guest-\(abi)", abi: abi, configuration: Self.persistent(slots: 32))
            try exercise(f, model: &model, rounds: 4, maxIndirect: 32, using: &generator)
        }
        #expect(try rig.image.contents() == model, "the image differs from the model")
        let seen = counts.snapshot(rig.queues)
        #expect(seen.inPlaceReads > 0)
        #expect(seen.inPlaceWrites > 0)
        #expect(seen.copiedReads == 0 && seen.copiedWrites == 0, "no transfer went through a copy buffer")
        // The worker names each queue's store by its slot in the engine's file table.
        for (index, queue) in rig.queues.enumerated() { #expect(queue.file == .registered(UInt32(index))) }
        try rig.removeQueues()
        for queue in rig.queues {
            #expect(queue.file == .descriptor(queue.fileDescriptor), "the slot is given back at removal")
            #expect(queue.usesZeroCopy)
            #expect(queue.zeroCopyTransfers > 0)
            #expect(queue.copiedTransfers == 0)
            #expect(queue.grants.statistics.copies == 0)
        }
        try rig.tearDown()
    }

    @Test("zero-copy off in the configuration: the same requests go through the copy buffer")
    func configuredOff() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        var generator = SeededGenerator(seed: 0x2C1)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        let f = try rig.attach(name: "guest", configuration: Self.persistent(zeroCopy: false))
        try exercise(f, model: &model, rounds: 2, maxIndirect: 32, using: &generator)
        #expect(try rig.image.contents() == model)
        let seen = counts.snapshot(rig.queues)
        #expect(seen.inPlaceReads == 0 && seen.inPlaceWrites == 0)
        #expect(seen.copiedReads > 0 && seen.copiedWrites > 0)
        try rig.removeQueues()
        #expect(!rig.queues[0].usesZeroCopy)
        #expect(rig.queues[0].zeroCopyTransfers == 0)
        try rig.tearDown()
    }

    @Test("a store opened with O_DIRECT keeps the copy buffer although persistent grants are on")
    func directStoreCopies() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts, direct: true)
        #expect(BlkbackQueue.opensDirect(rig.store.fileDescriptor))
        var generator = SeededGenerator(seed: 0x2C2)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        try exercise(f, model: &model, rounds: 2, maxIndirect: 32, using: &generator)
        #expect(try rig.image.contents() == model)
        let seen = counts.snapshot(rig.queues)
        #expect(seen.inPlaceReads == 0 && seen.inPlaceWrites == 0, "no transfer on mapped pages with O_DIRECT")
        #expect(seen.copiedReads > 0 && seen.copiedWrites > 0)
        try rig.removeQueues()
        #expect(rig.queues[0].usesPersistentGrants)
        #expect(!rig.queues[0].usesZeroCopy)
        #expect(rig.queues[0].grants.statistics.hits > 0, "pages were still kept mapped and memcpy'd")
        try rig.tearDown()
    }

    @Test("a request with a segment the cache cannot take goes through the copy buffer whole, reads and writes")
    func mixedRequestFallsBack() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        // Four entries: a six-page request maps four pages and grant-copies two.
        let f = try rig.attach(name: "guest", configuration: Self.persistent(bound: 4))
        let six = BlkbackPersistentTests.wholePages(0..<6)
        let bytes = pattern(6 * 4096, seed: 0x2C3)
        #expect(try BlkbackPersistentTests.write(f, six, sector: 64, bytes: bytes) == .okay)
        #expect(Array(try rig.image.contents()[(64 * 512)..<(64 * 512 + bytes.count)]) == bytes)
        let back = BlkbackPersistentTests.wholePages(10..<16)
        #expect(try BlkbackPersistentTests.read(f, back, sector: 64) == .okay)
        #expect(f.gather(back) == bytes)
        var seen = counts.snapshot(rig.queues)
        #expect(seen.copiedReads == 1 && seen.copiedWrites == 1)
        #expect(seen.inPlaceReads == 0 && seen.inPlaceWrites == 0)
        // Requests that fit the cache go zero-copy on the same queue.
        let two = BlkbackPersistentTests.wholePages(20..<22)
        let small = pattern(2 * 4096, seed: 0x2C4)
        #expect(try BlkbackPersistentTests.write(f, two, sector: 200, bytes: small) == .okay)
        #expect(try BlkbackPersistentTests.read(f, BlkbackPersistentTests.wholePages(22..<24), sector: 200) == .okay)
        #expect(f.gather(BlkbackPersistentTests.wholePages(22..<24)) == small)
        seen = counts.snapshot(rig.queues)
        #expect(seen.inPlaceReads == 1 && seen.inPlaceWrites == 1)
        try rig.removeQueues()
        #expect(rig.queues[0].copiedTransfers == 2)
        #expect(rig.queues[0].zeroCopyTransfers == 2)
        #expect(rig.queues[0].grants.statistics.copies > 0)
        try rig.tearDown()
    }

    @Test("sub-page segments: each iovec covers exactly the segment's sectors")
    func partialSegments() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        var generator = SeededGenerator(seed: 0x2C5)
        for round in 0..<8 {
            let segments = randomSegments(count: 1 + round, firstPage: 0, using: &generator)
            let length = segments.reduce(0) { $0 + $1.bytes }
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let sector = UInt64(round * 128)
            #expect(try BlkbackPersistentTests.write(f, segments, sector: sector, bytes: bytes) == .okay)
            #expect(Array(try rig.image.contents()[(Int(sector) * 512)..<(Int(sector) * 512 + length)]) == bytes)
            // Read into other pages with the same sector ranges; the bytes around stay put.
            let back = segments.map { PlannedSegment(page: $0.page + 40, first: $0.first, last: $0.last) }
            let guardBytes = pattern(4096, seed: UInt64(round))
            for s in back { f.fill([PlannedSegment(page: s.page, first: 0, last: 7)], with: guardBytes[...]) }
            #expect(try BlkbackPersistentTests.read(f, back, sector: sector) == .okay)
            #expect(f.gather(back) == bytes)
            for s in back where s.first > 0 {
                #expect(f.gather([PlannedSegment(page: s.page, first: 0, last: s.first - 1)])
                        == Array(guardBytes[0..<(Int(s.first) * 512)]), "bytes before the segment untouched")
            }
        }
        #expect(counts.snapshot(rig.queues).copiedReads == 0 && counts.snapshot(rig.queues).copiedWrites == 0)
        try rig.tearDown()
    }

    @Test("barrier and flush with data: written from the mapped pages, then fdatasync, answered once durable")
    func barrierAndFlushWithData() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        for (k, operation) in [BlkifDirectOperation.writeBarrier, .flushDiskCache].enumerated() {
            let segments = BlkbackPersistentTests.wholePages((k * 4)..<(k * 4 + 3))
            let bytes = pattern(3 * 4096, seed: 0x2C6 + UInt64(k))
            f.fill(segments, with: bytes[...])
            let id = try f.produce(f.request(operation, sector: UInt64(512 + k * 64), segments))
            try f.push()
            #expect(try f.await([id])[id]?.status == .okay)
            let at = (512 + k * 64) * 512
            #expect(Array(try rig.image.contents()[at..<(at + bytes.count)]) == bytes)
        }
        #expect(counts.snapshot(rig.queues).inPlaceWrites == 2)
        #expect(counts.snapshot(rig.queues).copiedWrites == 0)
        try rig.tearDown()
    }

    @Test("a page granted read-only: a write reads it in place, a read into it never happens")
    func readOnlyGrant() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        let guest = try rig.hypervisor.platform(for: f.domain)
        let page = try guest.share(pages: 1, with: .dom0, writable: false)
        let bytes = pattern(4096, seed: 0x2C7)
        bytes.withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
        let segment = try BlkifSegments([BlkifSegment(gref: page.refs[0], firstSector: 0, lastSector: 7)])
        func send(_ operation: BlkifDirectOperation, sector: UInt64) throws -> BlkifStatus? {
            try f.send(operation, sector: sector, segment)
        }
        #expect(try send(.write, sector: 8) == .okay)
        #expect(Array(try rig.image.contents()[(8 * 512)..<(8 * 512 + 4096)]) == bytes)
        #expect(counts.snapshot(rig.queues).inPlaceWrites == 1, "the read-only mapping served the write in place")
        // Sector 64 holds zeroes: a read would overwrite the page. The mapping is read-only
        // and the grant refuses a writable one, so the request fails without touching it.
        #expect(try send(.read, sector: 64) == .error)
        #expect(page.view.bytes(at: 0, length: 4096) == bytes)
        #expect(counts.snapshot(rig.queues).inPlaceReads == 0, "no read into the read-only mapping")
        #expect(counts.snapshot(rig.queues).copiedReads == 1, "the read went to the copy buffer, whose grant copy-out was refused")
        try rig.removeQueues()
        try guest.endAccess(page)
        try rig.tearDown()
    }

    @Test("pages used by I/O in flight stay mapped: eviction takes only idle pages, even for writes")
    func evictionSparesBusyPages() throws {
        let gate = IOGate()
        let factory = BlockIOEngineFactory(kind: .threads,
                                           configuration: .init(queueDepth: 64, capacity: 1024, threads: 2)) {
            configuration throws(URingError) in try GatedEngine(configuration: configuration, gate: gate)
        }
        let rig = try Rig(factory: factory)
        let f = try rig.attach(name: "guest", configuration: Self.persistent(bound: 4))
        // Pages 30..33 fill the cache, then go idle: they are what eviction may take.
        let idle = BlkbackPersistentTests.wholePages(30..<34)
        #expect(try BlkbackPersistentTests.read(f, idle, sector: 0) == .okay)
        gate.close()
        // A zero-copy write of pages 0 and 1 evicts two idle pages and holds its own until
        // its completion, which the gate keeps back.
        let written = BlkbackPersistentTests.wholePages(0..<2)
        let bytes = pattern(2 * 4096, seed: 0x2C8)
        f.fill(written, with: bytes[...])
        let write = try f.produce(f.request(.write, sector: 300, written))
        // Then a read of four new pages: two evict the last idle pages; the other two find
        // only busy entries and are copied, so this read goes through the copy buffer.
        let others = BlkbackPersistentTests.wholePages(40..<44)
        f.fill(others, with: pattern(4 * 4096, seed: 0x2C9)[...])
        let read = try f.produce(f.request(.read, sector: 1000, others))
        try f.push()
        // Wait (bounded) for both to be held at the gate.
        for _ in 0..<3000 where gate.held < 2 { usleep(10_000) }
        #expect(gate.held == 2, "both requests are in flight")
        let pinned = Set(rig.hypervisor.pinnedRefs(of: f.domain))
        for page in 0..<2 { #expect(pinned.contains(f.data.refs[page]), "page \(page) of the write in flight stays mapped") }
        for page in 30..<34 { #expect(!pinned.contains(f.data.refs[page]), "idle page \(page) was evicted") }
        #expect(rig.hypervisor.liveMappings - 1 <= 4, "the bound holds")
        gate.open()
        let answers = try f.await([write, read])
        #expect(answers[write]?.status == .okay)
        #expect(answers[read]?.status == .okay)
        #expect(Array(try rig.image.contents()[(300 * 512)..<(300 * 512 + bytes.count)]) == bytes)
        #expect(f.gather(others) == [UInt8](repeating: 0, count: 4 * 4096), "mapped and copied pages got the data")
        // Once idle, the write's pages are evictable like any other.
        #expect(try BlkbackPersistentTests.read(f, BlkbackPersistentTests.wholePages(50..<54), sector: 300) == .okay)
        #expect(Array(f.gather(BlkbackPersistentTests.wholePages(50..<52))) == bytes)
        let after = Set(rig.hypervisor.pinnedRefs(of: f.domain))
        for page in 0..<2 { #expect(!after.contains(f.data.refs[page])) }
        try rig.removeQueues()
        let queue = rig.queues[0]
        #expect(queue.zeroCopyTransfers == 3, "the first read, the write and the last read")
        #expect(queue.copiedTransfers == 1, "the read with busy entries")
        #expect(queue.grants.statistics.evictions == 8)
        try rig.tearDown()
    }

    @Test("ranges adjacent in our address space share one iovec; none left unmerged")
    func adjacentRangesMerge() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        // Page 0 in two halves (one mapping, so adjacent), page 1 whole, page 2 in two
        // ranges with a gap of one sector, then the rest of page 2.
        let segments = [PlannedSegment(page: 0, first: 0, last: 3), PlannedSegment(page: 0, first: 4, last: 7),
                        PlannedSegment(page: 1, first: 0, last: 7), PlannedSegment(page: 2, first: 0, last: 2),
                        PlannedSegment(page: 2, first: 4, last: 5), PlannedSegment(page: 2, first: 6, last: 7)]
        let length = segments.reduce(0) { $0 + $1.bytes }
        let bytes = pattern(length, seed: 0x2CA)
        #expect(try BlkbackPersistentTests.write(f, segments, sector: 40, bytes: bytes) == .okay)
        #expect(Array(try rig.image.contents()[(40 * 512)..<(40 * 512 + length)]) == bytes)
        let vectors = counts.snapshot(rig.queues).lastInPlaceRanges
        #expect(vectors.reduce(0) { $0 + $1.1 } == length)
        // At most four: page 0 whole, page 1 (joined to page 0 if mapped right after it),
        // page 2's first range, page 2's last two ranges joined.
        #expect(vectors.count <= 4 && vectors.count >= 3, "\(vectors)")
        for k in 1..<vectors.count {
            #expect(vectors[k - 1].0 + UInt(vectors[k - 1].1) != vectors[k].0, "iovec \(k) continues the previous one")
        }
        try rig.tearDown()
    }

    @Test("1024 segments, none adjacent: one writev and one readv of 1024 iovecs (the kernel's limit)")
    func manyVectors() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: BlkbackQueueConfiguration(
            maxIndirectSegments: 1024, slots: 2, persistentGrants: true))
        // Sector 0 of pages 0 and 1 in turn: no two ranges adjacent.
        let many = (0..<1024).map { PlannedSegment(page: $0 % 2, first: 0, last: 0) }
        let first = pattern(512, seed: 0x2CB)
        let second = pattern(512, seed: 0x2CC)
        f.fill([PlannedSegment(page: 0, first: 0, last: 0)], with: first[...])
        f.fill([PlannedSegment(page: 1, first: 0, last: 0)], with: second[...])
        let id = try f.produce(f.request(.write, sector: 0, many, indirectPage: 0))
        try f.push()
        #expect(try f.await([id])[id]?.status == .okay)
        let expected = Array((0..<512).map { _ in first + second }.joined())
        #expect(Array(try rig.image.contents()[0..<(1024 * 512)]) == expected)
        #expect(counts.snapshot(rig.queues).inPlaceWrites == 1 && counts.snapshot(rig.queues).copiedWrites == 0)
        #expect(counts.snapshot(rig.queues).lastInPlaceRanges.count == 1024)
        // Read back into pages 2 and 3 in turn: the last two segments (sectors 1022 and
        // 1023) are what those pages keep.
        let back = (0..<1024).map { PlannedSegment(page: 2 + $0 % 2, first: 0, last: 0) }
        let read = try f.produce(f.request(.read, sector: 0, back, indirectPage: 2))
        try f.push()
        #expect(try f.await([read])[read]?.status == .okay)
        #expect(counts.snapshot(rig.queues).inPlaceReads == 1 && counts.snapshot(rig.queues).copiedReads == 0)
        #expect(counts.snapshot(rig.queues).lastInPlaceRanges.count == 1024)
        #expect(f.gather([PlannedSegment(page: 2, first: 0, last: 0)]) == first)
        #expect(f.gather([PlannedSegment(page: 3, first: 0, last: 0)]) == second)
        try rig.removeQueues()
        #expect(rig.queues[0].zeroCopyTransfers == 2)
        try rig.tearDown()
    }

    @Test("a short readv (the file shrank under the queue) answers BLKIF_RSP_ERROR; later requests are served")
    func shortRead() throws {
        let counts = OperationCounts()
        let rig = try Rig(kind: .threads, counts: counts)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        let bytes = pattern(2 * 4096, seed: 0x2CD)
        #expect(try BlkbackPersistentTests.write(f, BlkbackPersistentTests.wholePages(0..<2), sector: 4088,
                                                 bytes: bytes) == .okay)
        // The queue still believes in 8192 sectors; the file now ends after 4096.
        #expect(truncate(rig.image.path, 4096 * 512) == 0)
        let back = BlkbackPersistentTests.wholePages(4..<6)
        #expect(try BlkbackPersistentTests.read(f, back, sector: 4088) == .error, "4096 of 8192 bytes")
        #expect(try BlkbackPersistentTests.read(f, back, sector: 6000) == .error, "nothing past the end")
        // The short one is sent again for its rest, which meets the end of the file.
        #expect(counts.snapshot(rig.queues).inPlaceReads == 3)
        #expect(try BlkbackPersistentTests.read(f, Array(back.prefix(1)), sector: 4088) == .okay)
        #expect(f.gather(Array(back.prefix(1))) == Array(bytes.prefix(4096)))
        try rig.tearDown()
    }
}
