import Blkif
import Foundation
import Glibc
import SharedMemory
import Testing
import URing
import XenDevice
import XenPlatform
import XenTesting
@testable import BlockBackend

/// A backend worker with one or more test frontends on a file, checked against a model.
final class Rig {
    let hypervisor: InProcessHypervisor
    let mapper: CountingMapper
    let image: TestImage
    let store: FileBackingStore
    let worker: BackendWorker
    var frontends: [TestFrontend] = []
    var queues: [BlkbackQueue] = []

    /// A worker whose engine `factory` makes (default: `engine`'s, of `capacity`), over a
    /// fresh image opened read-only or with O_DIRECT as asked.
    init(engine: BlockIOEngineKind = .threads, sectors: UInt64 = 8192, readOnly: Bool = false, direct: Bool = false,
         capacity: Int = 1024, factory: BlockIOEngineFactory? = nil) throws {
        hypervisor = try hypervisorForTests()
        mapper = CountingMapper(try hypervisor.platform(for: .dom0))
        image = try TestImage(sectors: sectors)
        store = try FileBackingStore(path: image.path, readOnly: readOnly, direct: direct)
        worker = try BackendWorker(factory: factory ?? makeFactory(engine, capacity: capacity), threadName: "blkback-worker")
    }

    @discardableResult
    func attach(name: String, abi: BlkifABI = .native, ringPages: Int = 1,
                configuration: BlkbackQueueConfiguration = BlkbackQueueConfiguration(slots: 8),
                sharedChannel: (any EventChannel)? = nil, store: (any BlockBackingStore)? = nil,
                onDisconnect: @escaping @Sendable (BlockBackendError) -> Void = { _ in }) throws -> TestFrontend {
        let frontend = try TestFrontend(hypervisor: hypervisor, name: name, abi: abi, ringPages: ringPages,
                                        sharedChannel: sharedChannel)
        var configuration = configuration
        configuration.abi = abi
        let queue = try frontend.makeQueue(store: store ?? self.store, mapper: mapper, configuration: configuration)
        // Called on the worker's thread, where the queue's state may be read.
        try worker.addQueue(queue) { [weak queue] in
            if let reason = queue?.disconnectReason { onDisconnect(reason) }
        }
        frontends.append(frontend)
        queues.append(queue)
        return frontend
    }

    /// Removes every queue, stops the worker, closes every frontend and the store, and
    /// checks nothing is left: no mapping, pinned grant, open port or copy buffer.
    var removed = false

    /// Removes the queues, once (their counters may be read from then on).
    func removeQueues() throws {
        guard !removed else { return }
        removed = true
        for queue in queues { try worker.removeQueue(queue) }
    }

    func tearDown() throws {
        try removeQueues()
        worker.stop()
        for frontend in frontends { try frontend.close() }
        store.close()
        #expect(hypervisor.liveMappings == 0)
        for frontend in frontends { #expect(hypervisor.pinnedRefs(of: frontend.domain).isEmpty) }
        #expect(hypervisor.openPorts(of: .dom0).isEmpty)
        #expect(mapper.liveBuffers.withLock { $0 } == 0)
    }
}

/// Random writes and reads through one frontend, checked against `model`.
func exercise(_ f: TestFrontend, model: inout [UInt8], rounds: Int, maxIndirect: Int,
              using generator: inout SeededGenerator) throws {
    let regions = 4
    let regionSectors = model.count / 512 / regions
    for _ in 0..<rounds {
        // Writes to disjoint regions, in flight together; then reads of them and elsewhere.
        var page = 0
        var writes: [(UInt64, [PlannedSegment])] = []
        var ids: [UInt64] = []
        for region in 0..<regions {
            let indirect = maxIndirect > 0 && Bool.random(using: &generator)
            let count = indirect ? Int.random(in: 1...min(maxIndirect, 20), using: &generator)
                                 : Int.random(in: 1...BlkifSegments.capacity, using: &generator)
            let segments = randomSegments(count: count, firstPage: page, using: &generator)
            page += count
            let sectors = segments.reduce(0) { $0 + $1.bytes / 512 }
            let sector = UInt64(region * regionSectors + Int.random(in: 0...(regionSectors - sectors), using: &generator))
            var bytes = [UInt8](repeating: 0, count: sectors * 512)
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
            f.fill(segments, with: bytes[...])
            model.replaceSubrange(Int(sector) * 512..<(Int(sector) * 512 + bytes.count), with: bytes)
            ids.append(try f.produce(f.request(.write, sector: sector, segments, indirectPage: indirect ? region : nil)))
            writes.append((sector, segments))
        }
        try f.push()
        for (_, response) in try f.await(ids) {
            #expect(response.status == .okay)
            // Indirect or not, a write is answered as BLKIF_OP_WRITE: Linux blkfront
            // disables a disk whose indirect responses say BLKIF_OP_INDIRECT.
            #expect(response.operation == BlkifOperation.write.rawValue)
        }

        page = 0
        var reads: [(UInt64, UInt64, [PlannedSegment])] = []
        for (region, (sector, written)) in writes.enumerated() {
            // Read back what was written, with a different segment split, and one random range.
            let total = written.reduce(0) { $0 + $1.bytes / 512 }
            var segments: [PlannedSegment] = []
            var left = total
            while left > 0 {
                let first = UInt8.random(in: 0...7, using: &generator)
                let take = min(left, 8 - Int(first))
                segments.append(PlannedSegment(page: page, first: first, last: first + UInt8(take - 1)))
                page += 1
                left -= take
            }
            let indirect = segments.count > BlkifSegments.capacity
            if indirect, maxIndirect < segments.count { continue }
            let id = try f.produce(f.request(.read, sector: sector, segments, indirectPage: indirect ? region : nil))
            reads.append((id, sector, segments))
        }
        let extra = randomSegments(count: Int.random(in: 1...BlkifSegments.capacity, using: &generator),
                                   firstPage: page, using: &generator)
        let extraSector = UInt64.random(in: 0...UInt64(model.count / 512 - 88), using: &generator)
        reads.append((try f.produce(f.request(.read, sector: extraSector, extra)), extraSector, extra))
        try f.push()
        let responses = try f.await(reads.map(\.0))
        for (id, sector, segments) in reads {
            #expect(responses[id]?.status == .okay)
            #expect(responses[id]?.operation == BlkifOperation.read.rawValue)
            let start = Int(sector) * 512
            let length = segments.reduce(0) { $0 + $1.bytes }
            let matches = f.gather(segments) == Array(model[start..<(start + length)])
            #expect(matches, "read id \(id) at sector \(sector) returned other data")
        }
    }
}

@Suite("BlkbackQueue data path")
struct BlkbackDataTests {
    static let abis: [BlkifABI] = [.native, .x86_32, .x86_64]

    @Test("the worker thread carries its name, so ps -L and top -H show it")
    func workerThreadIsNamed() throws {
        let rig = try Rig()
        defer { rig.worker.stop() }
        let names = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").map { task in
            (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
        }
        #expect(names.contains("blkback-worker\n"))
    }

    @Test("writes then reads back through every ABI, ring size and engine",
          arguments: availableEngines, [1, 4])
    func writeReadBack(engine: BlockIOEngineKind, ringPages: Int) throws {
        let rig = try Rig(engine: engine)
        var generator = SeededGenerator(seed: 0xB1C0 &+ UInt64(ringPages))
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for abi in Self.abis {
            // The default limits: 32 slots of 32 segments each.
            let f = try rig.attach(name: "guest-\(abi)", abi: abi, ringPages: ringPages,
                                   configuration: BlkbackQueueConfiguration())
            try exercise(f, model: &model, rounds: 6, maxIndirect: 32, using: &generator)
        }
        let flush = try rig.frontends[0].produce(.direct(BlkifDirectRequest(
            operation: .flushDiskCache, handle: 0, id: 7, sectorNumber: 0, segments: BlkifSegments())))
        try rig.frontends[0].push()
        #expect(try rig.frontends[0].await([flush])[flush]?.status == .okay)
        let diskMatches = try rig.image.contents() == model
        #expect(diskMatches, "the image differs from the model")
        try rig.tearDown()
    }

    @Test("several frontends at once on one worker, with own or one shared event-channel handle",
          arguments: availableEngines, [false, true])
    func severalFrontends(engine: BlockIOEngineKind, shareChannel: Bool) throws {
        let rig = try Rig(engine: engine, sectors: 4 * 2048)
        // One handle for all four ports, as a worker would hold on Xen, or one each.
        let shared = shareChannel ? try rig.hypervisor.platform(for: .dom0).openEventChannel() : nil
        let frontends = try (0..<4).map {
            try rig.attach(name: "guest\($0)", abi: Self.abis[$0 % 3], sharedChannel: shared)
        }
        // Each frontend owns a quarter of the disk; requests of all four are in flight at once.
        var generator = SeededGenerator(seed: 0xF00D)
        var models = Array(repeating: [UInt8](repeating: 0, count: 2048 * 512), count: 4)
        var pending: [[UInt64]] = Array(repeating: [], count: 4)
        var expected: [[UInt64: (Int, [PlannedSegment])]] = Array(repeating: [:], count: 4)
        for round in 0..<8 {
            for (n, f) in frontends.enumerated() {
                let segments = randomSegments(count: BlkifSegments.capacity, firstPage: 0, using: &generator)
                let sectors = segments.reduce(0) { $0 + $1.bytes / 512 }
                let local = Int.random(in: 0...(2048 - sectors), using: &generator)
                if round % 2 == 0 {
                    var bytes = [UInt8](repeating: 0, count: sectors * 512)
                    for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &generator) }
                    f.fill(segments, with: bytes[...])
                    models[n].replaceSubrange(local * 512..<(local * 512 + bytes.count), with: bytes)
                    pending[n] = [try f.produce(f.request(.write, sector: UInt64(n * 2048 + local), segments))]
                } else {
                    let id = try f.produce(f.request(.read, sector: UInt64(n * 2048 + local), segments))
                    pending[n] = [id]
                    expected[n][id] = (local, segments)
                }
                try f.push()
            }
            for (n, f) in frontends.enumerated() {
                for (id, response) in try f.await(pending[n]) {
                    #expect(response.status == .okay)
                    if let (local, segments) = expected[n][id] {
                        let length = segments.reduce(0) { $0 + $1.bytes }
                        let matches = f.gather(segments) == Array(models[n][(local * 512)..<(local * 512 + length)])
                        #expect(matches, "frontend \(n) read id \(id) returned other data")
                    }
                }
            }
        }
        try rig.tearDown()
        shared?.close()
    }

    @Test("flush, barrier with data, discard then zeroes, online resize", arguments: availableEngines)
    func flushBarrierDiscard(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let f = try rig.attach(name: "guest")
        var generator = SeededGenerator(seed: 0xD15C)
        let segments = randomSegments(count: 8, firstPage: 0, using: &generator).map {
            PlannedSegment(page: $0.page, first: 0, last: 7)
        }
        let payload = (0..<(8 * 4096)).map { _ in UInt8.random(in: 1...255, using: &generator) }
        // Writes, then a barrier carrying data, then a write after it: all in one push.
        f.fill(segments, with: payload[...])
        let before = try f.produce(f.request(.write, sector: 0, segments))
        let barrier = try f.produce(f.request(.writeBarrier, sector: 64, segments))
        let after = try f.produce(f.request(.write, sector: 128, segments))
        let flush = try f.produce(.direct(BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: f.takeID(),
                                                             sectorNumber: 0, segments: BlkifSegments())))
        try f.push()
        let responses = try f.await([before, barrier, after, flush])
        #expect(responses.values.allSatisfy { $0.status == .okay })
        // The barrier's response comes after the earlier write's.
        let order = f.order
        if let b = order.firstIndex(of: barrier), let w = order.firstIndex(of: before) { #expect(w < b) }
        var disk = try rig.image.contents()
        #expect(Array(disk[0..<payload.count]) == payload, "write before the barrier")
        #expect(Array(disk[(64 * 512)..<(64 * 512 + payload.count)]) == payload)
        #expect(Array(disk[(128 * 512)..<(128 * 512 + payload.count)]) == payload)

        // Discard the middle of the barrier's data, then read it back as zeroes.
        let discard = try f.produce(.discard(BlkifDiscardRequest(handle: 0, id: f.takeID(), sectorNumber: 72,
                                                                  sectorCount: 16, secure: false)))
        try f.push()
        #expect(try f.await([discard])[discard]?.status == .okay)
        let readBack = try f.produce(f.request(.read, sector: 64, segments))
        try f.push()
        #expect(try f.await([readBack])[readBack]?.status == .okay)
        var expected = payload
        expected.replaceSubrange((8 * 512)..<(24 * 512), with: [UInt8](repeating: 0, count: 16 * 512))
        #expect(f.gather(segments) == expected)
        disk = try rig.image.contents()
        #expect(Array(disk[(64 * 512)..<(64 * 512 + payload.count)]) == expected)

        // Online resize: grow the file, tell the worker, and the new sectors are reachable.
        let grown = rig.image.sectors + 1024
        #expect(truncate(rig.image.path, off_t(grown * 512)) == 0)
        let sectors = try rig.store.currentSectors()
        try rig.worker.perform(on: rig.queues[0]) { $0.diskSectors = sectors }
        let tail = try f.produce(f.request(.write, sector: grown - 64, segments))
        try f.push()
        #expect(try f.await([tail])[tail]?.status == .okay)
        try rig.tearDown()
    }
}
