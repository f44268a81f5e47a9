import Blkif
import Glibc
import SharedMemory
import Testing
import URing
import XenPlatform
import XenRing
import XenTesting
@testable import BlockBackend

/// A BlkbackQueue that keeps its persistent state is abandoned with requests in flight
/// (its process "dies": no close, no more stores), and a new queue built from the recovered
/// state on the same ring answers every request exactly once, re-executing those not
/// known to be done, then goes on serving.
@Suite("BlkbackQueue taken over from its persistent state")
struct BlkbackRestartQueueTests {
    /// Where the first queue stops: with everything in flight, with some requests answered
    /// but not pushed, or with some answers pushed.
    enum Cut: CaseIterable { case allInFlight, answeredNotPushed, somePushed }

    @Test("a new queue answers each request once and the disk holds every write", arguments: Cut.allCases)
    func takeOver(cut: Cut) throws {
        let hypervisor = try hypervisorForTests()
        let mapper = CountingMapper(try hypervisor.platform(for: .dom0))
        let image = try TestImage(sectors: 2048)
        let store = try FileBackingStore(path: image.path, readOnly: false)
        defer { store.close() }
        let f = try TestFrontend(hypervisor: hypervisor, name: "guest", abi: .native, ringPages: 1)
        let identity = BlkbackRestartState.Identity(frontendDomain: f.domain, abi: .native, ringPageOrder: 0,
                                                    eventChannel: f.front.port, ringRefs: f.front.pages.refs)
        let size = BlkbackRestartState.fileSize(ringSize: f.backRing.size, slotSize: BlkifABI.native.slotSize)
        let memory = try MemoryRegion.anonymous(pages: size / pageSize)
        let configuration = BlkbackQueueConfiguration(slots: 32)

        // 20 writes of distinct data to distinct sectors, then a flush.
        var rng = SeededGenerator(seed: 0x5EED)
        var expected = [UInt8](repeating: 0, count: 2048 * 512)
        var ids: [UInt64] = []
        for k in 0..<20 {
            let segment = [PlannedSegment(page: k, first: 0, last: 7)]
            let bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
            f.fill(segment, with: bytes[...])
            expected.replaceSubrange((k * 8 * 512)..<((k + 1) * 8 * 512), with: bytes)
            ids.append(try f.produce(f.request(.write, sector: UInt64(k * 8), segment)))
        }
        ids.append(try f.produce(.direct(BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: f.takeID(),
                                                            sectorNumber: 0, segments: BlkifSegments()))))
        try f.push()

        var published = 0
        do {
            let state = try BlkbackRestartState.create(in: memory, identity: identity, ringSize: f.backRing.size, at: 0)
            let first = try BlkbackQueue(name: "first", ring: f.backRing, frontendDomain: f.domain,
                                         eventChannel: f.backChannel, port: f.backPort, mapper: mapper, store: store,
                                         configuration: configuration, restart: state)
            let engine = ReversingEngine()
            first.service(engine: engine)
            #expect(first.inFlight == 21, "the writes and the flush in flight")
            if cut != .allInFlight {
                // Eight completions reach the queue; the rest die with it.
                let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 8)
                defer { buffer.deallocate() }
                let count = engine.reap(into: buffer)
                for c in buffer[0..<count] { first.complete(slot: Int(c.userData & 0xFFFF_FFFF), result: c.result, engine: engine) }
                if cut == .somePushed {
                    first.pushResponses()
                    published = count
                }
            }
            // The process dies here: the queue is dropped without close().
        }
        try f.collect()
        #expect(f.order.count == published)

        let state = try BlkbackRestartState.open(memory, identity: identity, ringSize: f.backRing.size)
        let recovery = try state.recover(ring: f.backRing.shared)
        #expect(recovery.consumed == 21)
        #expect(recovery.tookOver == 21 - published)
        #expect(recovery.replay.count == (cut == .allInFlight ? 21 : 13))
        var ring = BackRing(attaching: f.backRing.shared, at: recovery.answered)
        ring.requestConsumer = recovery.consumed
        let second = try BlkbackQueue(name: "second", ring: ring, frontendDomain: f.domain, eventChannel: f.backChannel,
                                      port: f.backPort, mapper: mapper, store: store, configuration: configuration,
                                      restart: state, replay: recovery.replay)
        let engine = ReversingEngine()
        func drain() {
            let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 64)
            defer { buffer.deallocate() }
            second.service(engine: engine)
            while true {
                let count = engine.reap(into: buffer)
                if count == 0 { break }
                for c in buffer[0..<count] { second.complete(slot: Int(c.userData & 0xFFFF_FFFF), result: c.result, engine: engine) }
                second.service(engine: engine)
            }
            second.pushResponses()
        }
        drain()
        try f.collect()
        #expect(f.order.count == 21, "every request answered: \(f.order.count)")
        #expect(Set(f.order) == Set(ids), "each id once")
        #expect(f.received.values.allSatisfy { $0.status == .okay })
        #expect(try image.contents() == expected)

        // The queue goes on: new requests after the take-over.
        let more = try f.produce(f.request(.read, sector: 8, [PlannedSegment(page: 40, first: 0, last: 7)]))
        try f.push()
        drain()
        try f.collect()
        #expect(f.received[more]?.status == .okay)
        #expect(f.gather([PlannedSegment(page: 40, first: 0, last: 7)]) == Array(expected[(8 * 512)..<(16 * 512)]))
        #expect(state.consumed == 22 && state.published == 22 && state.freeCount == state.recordCount)
        try second.close()
    }

    @Test("without a restart state the queue serves as before")
    func withoutState() throws {
        let rig = try DirectQueue(abi: .native, slots: 8)
        #expect(rig.queue.restart == nil)
        let id = try rig.frontend.produce(rig.frontend.request(.read, sector: 0, [PlannedSegment(page: 0, first: 0, last: 7)]))
        try rig.frontend.push()
        rig.queue.service(engine: rig.engine)
        rig.drain()
        try rig.frontend.collect()
        #expect(rig.frontend.received[id]?.status == .okay)
        try rig.close()
    }
}
