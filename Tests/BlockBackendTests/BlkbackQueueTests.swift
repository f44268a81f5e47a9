import Blkif
import Glibc
import SharedMemory
import Testing
import URing
import XenPlatform
import XenTesting
@testable import BlockBackend

/// An engine that runs each operation synchronously at enqueue and hands completions back
/// newest first, so a queue driven by it sees its requests complete in reverse order.
final class ReversingEngine: BlockIOEngine {
    var kind: BlockIOEngineKind { .threads }
    let capacity = 256
    var inFlight: Int { finished.count }
    var finished: [Completion] = []

    func registerFiles(_ descriptors: [Int32]) throws(URingError) {}
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {}
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {}
    func submit() throws(URingError) {}
    func wait(minimum: Int, timeout: Duration?) throws(URingError) {}
    func close() {}

    func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        finished.append(Completion(userData: request.userData, result: Self.perform(request.operation)))
        return .accepted
    }

    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        var count = 0
        while count < buffer.count, let last = finished.popLast() {
            buffer[count] = last
            count += 1
        }
        return count
    }

    static func fd(_ file: FileReference) -> Int32 {
        if case let .descriptor(fd) = file { return fd }
        return -1
    }

    static func perform(_ operation: BlockIOOperation) -> Int32 {
        let result: Int
        switch operation {
        case let .read(file, offset, buffer): result = pread(fd(file), buffer.baseAddress, buffer.count, off_t(offset))
        case let .write(file, offset, buffer): result = pwrite(fd(file), buffer.baseAddress, buffer.count, off_t(offset))
        case let .flush(file): result = Int(fdatasync(fd(file)))
        default: return -EINVAL
        }
        return result < 0 ? -errno : Int32(result)
    }
}

/// A queue a test drives itself, with no worker: an in-process hypervisor, a frontend and
/// its one-page ring, a 2048-sector image and a ``ReversingEngine``.
final class DirectQueue {
    let hypervisor: InProcessHypervisor
    let mapper: CountingMapper
    let image: TestImage
    let store: FileBackingStore
    let frontend: TestFrontend
    let queue: BlkbackQueue
    let engine = ReversingEngine()

    init(abi: BlkifABI, slots: Int) throws {
        hypervisor = try hypervisorForTests()
        mapper = CountingMapper(try hypervisor.platform(for: .dom0))
        image = try TestImage(sectors: 2048)
        store = try FileBackingStore(path: image.path, readOnly: false)
        frontend = try TestFrontend(hypervisor: hypervisor, name: "guest", abi: abi, ringPages: 1)
        queue = try frontend.makeQueue(store: store, mapper: mapper, configuration: BlkbackQueueConfiguration(slots: slots))
    }

    /// Runs every completion the engine holds through the queue, then pushes.
    func drain() {
        let buffer = UnsafeMutableBufferPointer<Completion>.allocate(capacity: 64)
        defer { buffer.deallocate() }
        while true {
            let count = engine.reap(into: buffer)
            if count == 0 { break }
            for c in buffer[0..<count] {
                queue.complete(slot: Int(c.userData & 0xFFFF_FFFF), result: c.result, engine: engine)
            }
            queue.service(engine: engine)
        }
        queue.pushResponses()
    }

    /// Closes the queue, the frontend and the store, and checks nothing is left: no copy
    /// buffer, no mapping.
    func close() throws {
        try queue.close()
        #expect(mapper.liveBuffers.withLock { $0 } == 0)
        try frontend.close()
        store.close()
        #expect(hypervisor.liveMappings == 0)
    }
}

@Suite("BlkbackQueue driven directly")
struct BlkbackQueueTests {

    @Test("responses follow completion order, and notifications follow rsp_event")
    func outOfOrderAndSuppression() throws {
        let rig = try DirectQueue(abi: .native, slots: 8)
        let (f, queue, engine) = (rig.frontend, rig.queue, rig.engine)
        let notifications = { rig.hypervisor.notificationCount(domain: .dom0, port: f.backPort) }

        var ids: [UInt64] = []
        for k in 0..<4 {
            ids.append(try f.produce(f.request(.read, sector: UInt64(k * 8), [PlannedSegment(page: k, first: 0, last: 7)])))
        }
        try f.push()
        queue.service(engine: engine)
        rig.drain()
        try f.collect()
        #expect(f.order == ids.reversed())
        #expect(notifications() == 1)

        // The frontend has not re-armed rsp_event, so the next batch is pushed silently.
        f.order = []
        let quiet = try f.produce(f.request(.read, sector: 0, [PlannedSegment(page: 0, first: 0, last: 7)]))
        try f.push()
        queue.service(engine: engine)
        rig.drain()
        #expect(notifications() == 1)
        try f.collect()
        #expect(f.order == [quiet])

        // Once it asks (RING_FINAL_CHECK_FOR_RESPONSES), the next response notifies.
        #expect(try f.front.finalCheckForResponses() == false)
        _ = try f.produce(f.request(.read, sector: 0, [PlannedSegment(page: 0, first: 0, last: 7)]))
        #expect(try f.front.pushRequestsAndNotify(), "the idle queue asked for a notification")
        queue.service(engine: engine)
        rig.drain()
        #expect(notifications() == 2)

        try rig.close()
    }

    @Test("a barrier waits for earlier requests and holds later ones in the ring")
    func barrierOrdering() throws {
        let rig = try DirectQueue(abi: .x86_32, slots: 8)
        let (f, queue, engine, image) = (rig.frontend, rig.queue, rig.engine, rig.image)
        let page = [PlannedSegment(page: 0, first: 0, last: 7)]
        f.fill(page, with: [UInt8](repeating: 0xA5, count: 4096)[...])
        let before = try f.produce(f.request(.write, sector: 0, page))
        let barrier = try f.produce(f.request(.writeBarrier, sector: 8, page))
        let after = try f.produce(f.request(.write, sector: 16, page))
        try f.push()
        queue.service(engine: engine)
        // Only the earlier write is issued; the barrier waits in its slot, the later write in the ring.
        #expect(engine.finished.count == 1)
        #expect(queue.ring.requestConsumer == 2)
        #expect(queue.inFlight == 2)
        rig.drain()
        try f.collect()
        #expect(f.order == [before, barrier, after])
        #expect(f.received.values.allSatisfy { $0.status == .okay })
        let disk = try image.contents()
        #expect(disk[0..<(24 * 512)].allSatisfy { $0 == 0xA5 })
        try rig.close()
    }

    @Test("with every slot busy the queue leaves the rest in the ring")
    func boundedSlots() throws {
        let rig = try DirectQueue(abi: .x86_64, slots: 2)
        let (f, queue, engine) = (rig.frontend, rig.queue, rig.engine)
        var ids: [UInt64] = []
        for k in 0..<6 {
            ids.append(try f.produce(f.request(.read, sector: UInt64(k), [PlannedSegment(page: k, first: 0, last: 0)])))
        }
        try f.push()
        queue.service(engine: engine)
        #expect(queue.inFlight == 2)
        #expect(engine.finished.count == 2)
        #expect(queue.ring.requestConsumer == 2, "the other four stay in the ring")
        rig.drain()
        try f.collect()
        #expect(Set(f.order) == Set(ids))
        #expect(queue.inFlight == 0)
        try rig.close()
    }

    @Test("FileBackingStore reports size, sector sizes and discard support; errors name the path")
    func backingStore() throws {
        let image = try TestImage(sectors: 1000)
        let store = try FileBackingStore(path: image.path, readOnly: true)
        #expect(try store.currentSectors() == 1000)
        #expect(store.logicalSectorSize == 512)
        #expect(store.supportsDiscard)
        #expect(!store.supportsSecureDiscard)
        #expect(store.diskProperties(sectors512: 1000).info.contains(.readOnly))
        let features = store.backendFeatures()
        #expect(!features.discard && !features.discardSecure && features.flushCache)
        // Opened O_RDONLY: the kernel itself refuses a write.
        var byte: UInt8 = 1
        #expect(pwrite(store.fileDescriptor, &byte, 1, 0) == -1)
        store.close()
        #expect(throws: BlockBackendError.backingStore(path: "/nonexistent/disk.img", call: "open", .ENOENT)) {
            try FileBackingStore(path: "/nonexistent/disk.img", readOnly: false)
        }
        #expect(throws: BlockBackendError.unsupportedBackingStore(path: "/dev/null", mode: 0o20666)) {
            try FileBackingStore(path: "/dev/null", readOnly: true)
        }
    }
}
