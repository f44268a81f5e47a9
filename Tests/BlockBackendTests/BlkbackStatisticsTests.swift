import Blkif
import Testing
import URing
import XenPlatform
import XenTesting
@testable import BlockBackend

/// A queue counts what it answered, by kind, as Linux blkback's sysfs statistics do.
@Suite("BlkbackQueue statistics")
struct BlkbackStatisticsTests {
    @Test("every kind of request is counted once, indirect ones also as the read or write they were",
          arguments: availableEngines)
    func countsByKind(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        let f = try rig.attach(name: "q", configuration: BlkbackQueueConfiguration(maxIndirectSegments: 32, slots: 8))
        let page = [PlannedSegment(page: 0, first: 0, last: 7)]
        let twenty = (0..<20).map { PlannedSegment(page: $0, first: 0, last: 7) }
        var ids: [UInt64] = []
        ids.append(try f.produce(f.request(.write, sector: 0, page)))                       // write, 8 sectors
        ids.append(try f.produce(f.request(.read, sector: 0, page)))                        // read, 8 sectors
        ids.append(try f.produce(f.request(.write, sector: 64, twenty, indirectPage: 0)))   // indirect write, 160
        ids.append(try f.produce(f.request(.read, sector: 64, twenty, indirectPage: 1)))    // indirect read, 160
        ids.append(try f.produce(.direct(BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: f.takeID(),
                                                            sectorNumber: 0, segments: BlkifSegments()))))
        ids.append(try f.produce(.discard(BlkifDiscardRequest(handle: 0, id: f.takeID(), sectorNumber: 512,
                                                              sectorCount: 16, secure: false))))
        ids.append(try f.produce(f.request(.read, sector: 8192, page)))                     // past the end: error
        ids.append(try f.produce(f.request(.read, sector: 0, page)) { slot, _ in slot.store(UInt8(9), at: 0) })
        try f.push()
        let responses = try f.await(ids)
        #expect(responses.values.filter { $0.status == .okay }.count == 6)
        ids = [try f.produce(f.request(.writeBarrier, sector: 128, page))]
        try f.push()
        _ = try f.await(ids)
        let queue = rig.queues[0]
        try rig.tearDown()

        var expected = BlkbackStatistics()
        expected.reads = 3          // direct, indirect, and the refused one past the end
        expected.writes = 2         // direct and indirect
        expected.indirect = 2
        expected.flushes = 1
        expected.barriers = 1
        expected.discards = 1
        expected.errors = 1
        expected.unsupported = 1    // operation 9
        expected.sectorsRead = 8 + 160
        expected.sectorsWritten = 8 + 160 + 8
        #expect(queue.statistics == expected)
    }
}
