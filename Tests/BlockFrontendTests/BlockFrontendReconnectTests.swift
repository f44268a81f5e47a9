import Blkif
import Synchronization
import Testing
import XenTesting
import XenBus
import XenPlatform
import XenRing
@testable import BlockFrontend

@Suite struct BlockFrontendReconnectTests {
    /// A write stream runs while the backend driver stops and a new one starts: every
    /// write completes without error, and every one reads back, from the frontend and
    /// from the file.
    @Test(arguments: [0, 32])
    func aBackendRestartMidStreamLosesNoAcknowledgedWrite(indirect: Int) async throws {
        let rig = try await Rig(sectors: 8192)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 1, queues: 2,
                                                                maxIndirectSegments: indirect, depth: 16))
        _ = try await bounded("frontend connects") { try await front.connected() }

        let writes = 128
        let acknowledged = Counter()
        var random = SeededGenerator(seed: 0x5EED_0002 ^ UInt64(indirect))
        // Disjoint ranges of 1...64 sectors, so the final content does not depend on order.
        var planned: [(sector: UInt64, count: UInt64)] = []
        for i in 0 ..< writes {
            planned.append((UInt64(i) * 64, UInt64.random(in: 1 ... 64, using: &random)))
        }
        let plan = planned
        let stream = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (i, item) in plan.enumerated() {
                    if i >= 8 { try await group.next() }
                    group.addTask {
                        try await front.write(sector: item.sector, data: pattern(sector: item.sector, count: item.count, tag: 0x55))
                        acknowledged.value.add(1, ordering: .relaxed)
                    }
                }
                try await group.waitForAll()
            }
        }
        try await eventually("a quarter of the writes acknowledged") { acknowledged.value.load(ordering: .relaxed) >= writes / 4 }
        await rig.stopBackend()
        // The new backend starts once the frontend followed the old one down, as a
        // restarted backend process would find it.
        try await eventually("frontend closed after its backend") { front.state == .closed }
        rig.startBackend()
        try await bounded("the write stream finishes") { try await stream.value }
        #expect(acknowledged.value.load(ordering: .relaxed) == writes)
        #expect(front.connections == 2)

        let file = try rig.image.contents()
        for item in plan {
            let expected = pattern(sector: item.sector, count: item.count, tag: 0x55)
            #expect(try await front.read(sector: item.sector, count: item.count) == expected,
                    "sectors \(item.sector)..<\(item.sector + item.count) after the restart")
            #expect(Array(file[Int(item.sector) * 512 ..< Int(item.sector + item.count) * 512]) == expected)
        }
        #expect(await front.close() == 0)
        #expect(front.grantedPageSets == 0, "no grant leaked across the restart")
        await rig.shutdown()
    }

    /// The first backend connects but never answers, so every request is still in the
    /// ring when it goes; after a working backend connects, all of them complete, with
    /// the data the callers gave.
    @Test func requestsABackendNeverAnsweredAreSentAgainToTheNextOne() async throws {
        let rig = try await Rig(sectors: 2048)
        await rig.stopBackend()
        rig.startBackend(serving: false)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 0, queues: 1, maxIndirectSegments: 32, depth: 8))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let stream = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0 ..< 12 {
                    // 80 sectors: over 32 segments with indirect, so each write is 3 requests.
                    let sector = UInt64(i) * 128
                    group.addTask { try await front.write(sector: sector, data: pattern(sector: sector, count: 80, tag: 0x33)) }
                }
                try await group.waitForAll()
            }
        }
        try await eventually("every slot is in flight") { front.inFlightRequests == 8 }
        await rig.stopBackend()
        try await eventually("frontend closed after its backend") { front.state == .closed }
        #expect(front.reissuedRequests == 8)
        rig.startBackend()
        try await bounded("the writes finish on the second backend") { try await stream.value }
        #expect(front.connections == 2)
        for i in 0 ..< 12 {
            let sector = UInt64(i) * 128
            #expect(try await front.read(sector: sector, count: 80) == pattern(sector: sector, count: 80, tag: 0x33))
        }
        #expect(await front.close() == 0)
        #expect(front.grantedPageSets == 0)
        await rig.shutdown()
    }

    /// A backend that answers a request never sent: the frontend stops reading that
    /// ring without failing the caller or crashing, and the request completes after the
    /// backend restarts.
    @Test func aResponseToNoRequestStopsTheRingUntilTheBackendRestarts() async throws {
        let rig = try await Rig(sectors: 1024)
        await rig.stopBackend()
        rig.startBackend(serving: false)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 0, queues: 1, depth: 4))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let data = pattern(sector: 8, count: 8, tag: 7)
        let write = Task { try await front.write(sector: 8, data: data) }
        try await eventually("the write is in flight") { front.inFlightRequests == 1 }

        let ref = try #require(GrantRef(try await rig.toolstack.readString(rig.paths.frontend + "/ring-ref")))
        let remotePort = try #require(EventPort(try await rig.toolstack.readString(rig.paths.frontend + "/event-channel")))
        let mapping = try rig.dom0.map([ref], from: rig.guest, writable: true)
        var ring = BackRing(try SharedRing(memory: mapping.view, pages: 1, entrySize: BlkifABI.native.slotSize))
        BlkifResponse(id: 99, operation: .write, status: .okay).encode(into: ring.responseSlot(0), at: 0, abi: .native)
        ring.responseProducerPrivate = 1
        _ = ring.pushResponsesAndCheckNotify()
        let channel = try rig.dom0.openEventChannel()
        let port = try channel.bindInterdomain(remote: rig.guest, remotePort: remotePort)
        try channel.notify(port)
        try await eventually("the frontend stops the ring") { front.brokenRings == 1 }
        #expect(front.inFlightRequests == 1, "the caller's write is neither failed nor answered")
        channel.close()
        try rig.dom0.unmap(mapping)

        await rig.stopBackend()
        try await eventually("frontend closed after its backend") { front.state == .closed }
        rig.startBackend()
        try await bounded("the write finishes on the second backend") { try await write.value }
        #expect(try await front.read(sector: 8, count: 8) == data)
        #expect(await front.close() == 0)
        #expect(front.grantedPageSets == 0)
        await rig.shutdown()
    }
}

/// A count shared with tasks.
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

