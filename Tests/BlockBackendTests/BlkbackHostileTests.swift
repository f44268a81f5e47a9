import Blkif
import Dispatch
import Glibc
import SharedMemory
import Synchronization
import Testing
import URing
import XenDevice
import XenPlatform
import XenTesting
@testable import BlockBackend

/// Records a queue's disconnect reason and lets a test wait for it.
final class DisconnectProbe: Sendable {
    let reason = Mutex<BlockBackendError?>(nil)
    let signal = DispatchSemaphore(value: 0)

    /// What a blocking worker call made from the callback threw.
    let reentry = Mutex<BackendWorkerError?>(nil)
    /// A queue the callback tries to remove, to prove that is refused on the worker thread.
    let worker: BackendWorker?
    let queue = Mutex<BlkbackQueue?>(nil)

    init(worker: BackendWorker? = nil) { self.worker = worker }

    var callback: @Sendable (BlockBackendError) -> Void {
        { why in
            if let worker = self.worker, let queue = self.queue.withLock({ $0 }) {
                do throws(BackendWorkerError) { try worker.removeQueue(queue) } catch {
                    self.reentry.withLock { $0 = error }
                }
            }
            self.reason.withLock { $0 = why }
            self.signal.signal()
        }
    }

    /// The reason, once reported; nil if none came within 30 s (a safety net, not a timing check).
    func wait() -> BlockBackendError? {
        _ = signal.wait(timeout: .now() + .seconds(30))
        return reason.withLock { $0 }
    }
}

@Suite("BlkbackQueue against hostile frontends")
struct BlkbackHostileTests {
    /// One bad request: how to build it and the status it must get.
    struct Case {
        let name: String
        let status: BlkifStatus
        let make: (TestFrontend) throws -> UInt64
    }

    static func cases(diskSectors: UInt64, hypervisor: InProcessHypervisor) -> [Case] {
        let whole = [PlannedSegment(page: 0, first: 0, last: 7)]
        return [
            Case(name: "read with nr_segments 0", status: .error) { f in
                try f.produce(f.request(.read, sector: 0, whole)) { slot, _ in slot.store(UInt8(0), at: 1) }
            },
            Case(name: "write with nr_segments 0", status: .error) { f in
                try f.produce(f.request(.write, sector: 0, whole)) { slot, _ in slot.store(UInt8(0), at: 1) }
            },
            Case(name: "write with nr_segments 12", status: .error) { f in
                try f.produce(f.request(.write, sector: 0, whole)) { slot, _ in slot.store(UInt8(12), at: 1) }
            },
            Case(name: "indirect read past the advertised maximum", status: .error) { f in
                let segments = (0..<33).map { PlannedSegment(page: $0, first: 0, last: 0) }
                return try f.produce(f.request(.read, sector: 0, segments, indirectPage: 0))
            },
            Case(name: "first_sect > last_sect", status: .error) { f in
                try f.produce(f.request(.write, sector: 0, whole)) { slot, layout in
                    slot.store(UInt8(5), at: layout.segmentsOffset + 4)
                    slot.store(UInt8(2), at: layout.segmentsOffset + 5)
                }
            },
            Case(name: "last_sect > 7", status: .error) { f in
                try f.produce(f.request(.read, sector: 0, whole)) { slot, layout in
                    slot.store(UInt8(8), at: layout.segmentsOffset + 5)
                }
            },
            Case(name: "indirect segment with first_sect > last_sect", status: .error) { f in
                let segments = (0..<20).map { PlannedSegment(page: $0, first: 0, last: 7) }
                let request = try f.request(.read, sector: 0, segments, indirectPage: 1)
                let page = try f.indirect.view.slice(offset: pageSize, length: pageSize)
                BlkifIndirectPage.encodeSegment(BlkifSegment(gref: f.data.refs[3], firstSector: 6, lastSector: 1),
                                                index: 3, into: page)
                return try f.produce(request)
            },
            Case(name: "sectors past the end", status: .error) { f in
                try f.produce(f.request(.read, sector: diskSectors - 4, whole))
            },
            Case(name: "sector number that wraps", status: .error) { f in
                try f.produce(f.request(.write, sector: UInt64.max - 3, whole))
            },
            Case(name: "reserved operation 4", status: .notSupported) { f in
                try f.produce(f.request(.read, sector: 0, whole)) { slot, _ in slot.store(UInt8(4), at: 0) }
            },
            Case(name: "unknown operation 9", status: .notSupported) { f in
                try f.produce(f.request(.read, sector: 0, whole)) { slot, _ in slot.store(UInt8(9), at: 0) }
            },
            Case(name: "discard past the end", status: .error) { f in
                try f.produce(.discard(BlkifDiscardRequest(handle: 0, id: f.takeID(), sectorNumber: diskSectors - 8,
                                                           sectorCount: 16, secure: false)))
            },
            Case(name: "secure discard on a file", status: .notSupported) { f in
                try f.produce(.discard(BlkifDiscardRequest(handle: 0, id: f.takeID(), sectorNumber: 0,
                                                           sectorCount: 8, secure: true)))
            },
            Case(name: "write from an ungranted gref", status: .error) { f in
                try f.produce(f.request(.write, sector: 0, whole)) { slot, layout in
                    slot.store(UInt32(4000), at: layout.segmentsOffset)
                }
            },
            Case(name: "read into a read-only grant", status: .error) { f in
                let page = try hypervisor.platform(for: f.domain).share(pages: 1, with: .dom0, writable: false)
                return try f.produce(f.request(.read, sector: 0, whole)) { slot, layout in
                    slot.store(page.refs[0], at: layout.segmentsOffset)
                }
            },
            Case(name: "write from a revoked grant", status: .error) { f in
                let platform = try hypervisor.platform(for: f.domain)
                let page = try platform.share(pages: 1, with: .dom0, writable: true)
                try platform.endAccess(page)
                return try f.produce(f.request(.write, sector: 0, whole)) { slot, layout in
                    slot.store(page.refs[0], at: layout.segmentsOffset)
                }
            },
            Case(name: "indirect page from an ungranted gref", status: .error) { f in
                let segments = (0..<12).map { PlannedSegment(page: $0, first: 0, last: 7) }
                return try f.produce(f.request(.write, sector: 0, segments, indirectPage: 2)) { slot, layout in
                    slot.store(UInt32(4001), at: layout.indirectGrefsOffset)
                }
            },
        ]
    }

    @Test("each bad request gets its status while an honest frontend keeps its data",
          arguments: availableEngines)
    func badRequests(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let honest = try rig.attach(name: "honest")
        let hostile = try rig.attach(name: "hostile", abi: .x86_32)
        var generator = SeededGenerator(seed: 0xBAD)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for bad in Self.cases(diskSectors: rig.image.sectors, hypervisor: rig.hypervisor) {
            let id = try bad.make(hostile)
            try hostile.push()
            let response = try hostile.await([id])[id]
            #expect(response?.status == bad.status, "\(bad.name)")
            try exercise(honest, model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        }
        // The hostile frontend's well-formed requests are still served.
        try exercise(hostile, model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        try rig.tearDown()
        // Queue state is read once the worker has let go of it.
        #expect(rig.queues[1].disconnectReason == nil)
    }

    @Test("a req_prod overrun disconnects that queue only", arguments: availableEngines)
    func producerOverrun(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let probe = DisconnectProbe(worker: rig.worker)
        let honest = try rig.attach(name: "honest")
        let hostile = try rig.attach(name: "hostile", ringPages: 4, onDisconnect: probe.callback)
        probe.queue.withLock { $0 = rig.queues[1] }
        var generator = SeededGenerator(seed: 0x0E4)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(hostile, model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        let ring = hostile.front.ring
        hostile.front.shared.storeRequestProducer(ring.requestProducerPrivate &+ ring.size &+ 5)
        try hostile.front.eventChannel.notify(hostile.front.port)
        let reason = probe.wait()
        guard case let .ring(.requestProducerOverrun(producer, _, size)) = reason else {
            Issue.record("reason: \(reason.map { "\($0)" } ?? "none"), not a req_prod overrun")
            return
        }
        #expect(producer == ring.requestProducerPrivate &+ ring.size &+ 5)
        #expect(size == ring.size)
        #expect(rig.queues[1].disconnectReason == reason)
        #expect(probe.reentry.withLock { $0 } == .calledFromWorker)
        try exercise(honest, model: &model, rounds: 3, maxIndirect: 32, using: &generator)
        try rig.tearDown()
        #expect(rig.queues[0].disconnectReason == nil)
    }

    @Test("an event channel whose pending ports cannot be read stops its queue once, with a typed reason, without spinning",
          arguments: availableEngines)
    func failedEventChannel(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let failing = FailingEventChannel(try rig.hypervisor.platform(for: .dom0).openEventChannel())
        defer { failing.close() }
        let probe = DisconnectProbe()
        let broken = try rig.attach(name: "broken", sharedChannel: failing, onDisconnect: probe.callback)
        let honest = try rig.attach(name: "honest")
        var generator = SeededGenerator(seed: 0x0E5)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(broken, model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        let fault = PlatformError.eventChannel("injected: pending ports unreadable", errno: EIO)
        failing.failPendingReads(with: fault)
        try broken.front.eventChannel.notify(broken.front.port)
        #expect(probe.wait() == .platform(fault))
        // The failed channel stays readable; a worker that re-armed its poll would keep
        // reading it. Other frontends keep being served meanwhile.
        try exercise(honest, model: &model, rounds: 3, maxIndirect: 32, using: &generator)
        #expect(failing.failedPendingReads == 1, "pending ports read \(failing.failedPendingReads) times after the failure")
        try rig.tearDown()
        #expect(rig.queues[1].disconnectReason == nil)
    }

    @Test("a frontend flooding invalid requests does not starve another", arguments: availableEngines)
    func flood(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let honest = try rig.attach(name: "honest")
        let hostile = try rig.attach(name: "flooder", ringPages: 4)
        let shared = hostile.front.shared
        let size = shared.size
        for index in 0..<size {
            // Every slot holds operation 9, answered at once with BLKIF_RSP_EOPNOTSUPP.
            let slot = shared.slot(index)
            slot.fill(0, at: 0, length: slot.count)
            slot.store(UInt8(9), at: 0)
        }
        let stop = Atomic<Bool>(false)
        let port = hostile.front.port
        let channel = hostile.front.eventChannel
        let flooder = Thread {
            // Keeps the ring full without reading responses: req_prod one ring past rsp_prod.
            while !stop.load(ordering: .relaxed) {
                shared.storeRequestProducer(shared.loadResponseProducer() &+ size)
                try? channel.notify(port)
            }
        }
        var generator = SeededGenerator(seed: 0xF100D)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(honest, model: &model, rounds: 4, maxIndirect: 32, using: &generator)
        stop.store(true, ordering: .relaxed)
        flooder.join()
        #expect(shared.loadResponseProducer() >= size)
        try rig.tearDown()
        #expect(rig.queues[1].disconnectReason == nil, "flooding within the ring is legal")
        // Read after the worker stopped: every flooded request was answered, not dropped.
        #expect(rig.queues[1].refusals >= Int(size))
    }

    @Test("a frontend scribbling random bytes over its ring and req_prod harms no one else",
          arguments: availableEngines)
    func scribbler(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let honest = try rig.attach(name: "honest")
        // The scribbler's queue has a disk of its own, so its lucky writes touch no one's data.
        let otherImage = try TestImage(sectors: 1024)
        let otherStore = try FileBackingStore(path: otherImage.path, readOnly: false)
        let hostile = try rig.attach(name: "scribbler", abi: .x86_32, ringPages: 2, store: otherStore)
        let shared = hostile.front.shared
        let stop = Atomic<Bool>(false)
        let port = hostile.front.port
        let channel = hostile.front.eventChannel
        let grefs = hostile.data.refs
        let scribbler = Thread {
            var random = SeededGenerator(seed: 0x5C81B)
            while !stop.load(ordering: .relaxed) {
                let slot = shared.slot(UInt32.random(in: 0..<shared.size, using: &random))
                for offset in stride(from: 0, to: slot.count - 7, by: 8) {
                    slot.store(UInt64.random(in: 0...UInt64.max, using: &random), at: offset)
                }
                // Often a plausible request: a known operation, small counts, real grefs.
                if Bool.random(using: &random) {
                    slot.store(UInt8.random(in: 0...6, using: &random), at: 0)
                    slot.store(UInt8.random(in: 0...12, using: &random), at: 1)
                    slot.store(UInt64.random(in: 0...1100, using: &random), at: 12)
                    slot.store(grefs[Int.random(in: 0..<grefs.count, using: &random)], at: 20)
                }
                let ahead = UInt32.random(in: 0...shared.size, using: &random)
                shared.storeRequestProducer(shared.loadResponseProducer() &+ ahead)
                try? channel.notify(port)
            }
        }
        var generator = SeededGenerator(seed: 0x5AFE)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(honest, model: &model, rounds: 6, maxIndirect: 32, using: &generator)
        stop.store(true, ordering: .relaxed)
        scribbler.join()
        try rig.tearDown()
        otherStore.close()
        #expect(rig.queues[0].disconnectReason == nil)
        let diskMatches = try rig.image.contents() == model
        #expect(diskMatches, "the honest frontend's disk holds exactly its writes")
    }

    @Test("a read-only device refuses writes, barriers with data and discards",
          arguments: availableEngines, [true, false])
    func readOnlyDevice(engine: BlockIOEngineKind, storeReadOnly: Bool) throws {
        // Read-only either because the store is opened O_RDONLY or because the device is
        // configured so over a writable store (then only the queue's own check stops writes).
        let rig = try Rig(engine: engine, readOnly: storeReadOnly)
        let f = try rig.attach(name: "guest", configuration: BlkbackQueueConfiguration(slots: 8, readOnly: true))
        let whole = [PlannedSegment(page: 0, first: 0, last: 7)]
        f.data.view.fill(0x5A, at: 0, length: 16 * 4096)
        let write = try f.produce(f.request(.write, sector: 0, whole))
        let indirectWrite = try f.produce(f.request(.write, sector: 0, (0..<16).map {
            PlannedSegment(page: $0, first: 0, last: 7)
        }, indirectPage: 0))
        let barrier = try f.produce(f.request(.writeBarrier, sector: 0, whole))
        let discard = try f.produce(.discard(BlkifDiscardRequest(handle: 0, id: f.takeID(), sectorNumber: 0,
                                                                  sectorCount: 8, secure: false)))
        let read = try f.produce(f.request(.read, sector: 0, whole))
        let flush = try f.produce(.direct(BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: f.takeID(),
                                                             sectorNumber: 0, segments: BlkifSegments())))
        try f.push()
        let responses = try f.await([write, indirectWrite, barrier, discard, read, flush])
        #expect(responses[write]?.status == .error)
        #expect(responses[indirectWrite]?.status == .error)
        #expect(responses[barrier]?.status == .error)
        #expect(responses[discard]?.status == .error)
        #expect(responses[read]?.status == .okay)
        #expect(responses[flush]?.status == .okay)
        #expect(rig.store.readOnly == storeReadOnly)
        try rig.tearDown()
        #expect(try rig.image.contents().allSatisfy { $0 == 0 }, "nothing was written")
    }
}
