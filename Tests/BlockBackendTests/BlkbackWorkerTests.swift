import Blkif
import Testing
import URing
import XenDevice
import XenPlatform
import XenTesting
@testable import BlockBackend

@Suite("BackendWorker lifecycle")
struct BlkbackWorkerTests {
    @Test("stop with queues attached releases them; a stopped worker refuses new ones", arguments: availableEngines)
    func stopWithQueues(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        var generator = SeededGenerator(seed: 0x5709)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for n in 0..<3 {
            let f = try rig.attach(name: "guest\(n)")
            try exercise(f, model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        }
        rig.worker.stop()
        #expect(rig.mapper.liveBuffers.withLock { $0 } == 0)
        let late = try TestFrontend(hypervisor: rig.hypervisor, name: "late", abi: .native, ringPages: 1)
        let queue = try late.makeQueue(store: rig.store, mapper: rig.mapper, configuration: BlkbackQueueConfiguration(slots: 4))
        #expect(throws: BackendWorkerError.workerStopped) { try rig.worker.addQueue(queue) }
        try queue.close()
        try late.close()
        rig.queues = []
        try rig.tearDown()
    }

    @Test("a queue the engine cannot hold is refused, and the worker keeps serving", arguments: availableEngines)
    func capacity(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine, capacity: 64)
        let f = try TestFrontend(hypervisor: rig.hypervisor, name: "big", abi: .native, ringPages: 1)
        let queue = try f.makeQueue(store: rig.store, mapper: rig.mapper,
                                    configuration: BlkbackQueueConfiguration(maxIndirectSegments: 0, slots: 64))
        #expect(throws: BackendWorkerError.capacity(resource: "engine entries", needed: 66, available: 62)) {
            try rig.worker.addQueue(queue)
        }
        try queue.close()
        try f.close()
        var generator = SeededGenerator(seed: 0xCA9)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(try rig.attach(name: "small"), model: &model, rounds: 1, maxIndirect: 32, using: &generator)
        try rig.tearDown()
    }

    @Test("indirect requests without feature-max-indirect-segments are not supported", arguments: availableEngines)
    func indirectNotAdvertised(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let f = try rig.attach(name: "guest", configuration: BlkbackQueueConfiguration(maxIndirectSegments: 0, slots: 4))
        let id = try f.produce(f.request(.read, sector: 0, (0..<12).map { PlannedSegment(page: $0, first: 0, last: 7) },
                                         indirectPage: 0))
        try f.push()
        #expect(try f.await([id])[id]?.status == .notSupported)
        var generator = SeededGenerator(seed: 0x1D1)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(f, model: &model, rounds: 2, maxIndirect: 0, using: &generator)
        try rig.tearDown()
    }
}

@Suite("BlkbackDaemon configuration")
struct BlkbackDaemonConfigurationTests {
    @Test("a kernel worker count outside 1...4096 is refused, naming it")
    func kernelWorkersOutOfRange() throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 8),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        for bad in [0, 4097] {
            #expect(throws: BlockBackendError.configuration(name: "kernel workers", value: bad, limit: 1...4096)) {
                _ = try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 1, kernelWorkers: bad),
                                      factory: factory, logger: vbdLogger)
            }
        }
    }
}
