import Blkif
import Synchronization
import Testing
import XenTesting
import XenBus
@testable import BlockFrontend

/// Ring geometries to run the data tests over: ring-page-order, queues, indirect segments.
struct Geometry: Sendable, CustomTestStringConvertible {
    var order: UInt32
    var queues: UInt32
    var indirect: Int
    var testDescription: String { "order \(order), \(queues) queue(s), indirect \(indirect)" }
}

@Suite struct BlockFrontendDataTests {
    static let geometries = [
        Geometry(order: 0, queues: 1, indirect: 0),
        Geometry(order: 2, queues: 1, indirect: 32),
        Geometry(order: 0, queues: 2, indirect: 32),
        Geometry(order: 2, queues: 2, indirect: 0),
    ]

    @Test(arguments: geometries)
    func writesReadBackAtManySizesAndOffsets(_ geometry: Geometry) async throws {
        let rig = try await Rig(sectors: 4096)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: geometry.order, queues: geometry.queues,
                                                                maxIndirectSegments: geometry.indirect, depth: 16))
        let disk = try await bounded("frontend connects") { try await front.connected() }
        #expect(disk.ringPageOrder == geometry.order)
        #expect(disk.queues == Int(geometry.queues))
        #expect(disk.segmentsPerRequest == (geometry.indirect > 11 ? geometry.indirect : 11))
        #expect(disk.sectors512 == 4096)
        #expect(disk.backend.flushCache && disk.backend.discard)
        try await eventually("frontend switches to Connected") { front.state == .connected }

        var model = [UInt8](repeating: 0, count: 4096 * 512)
        var random = SeededGenerator(seed: 0x5EED_0001 ^ UInt64(geometry.order) << 8 ^ UInt64(geometry.queues) << 16)
        // Sizes around the segment limits: 1 sector, one page, 11 pages (direct limit),
        // 12 pages (one past it), 32 pages (indirect limit), 40 pages (split in two).
        var sizes: [UInt64] = [1, 7, 8, 9, 88, 89, 96, 256, 320]
        for _ in 0 ..< 24 { sizes.append(UInt64.random(in: 1 ... 300, using: &random)) }
        for (index, count) in sizes.enumerated() {
            let sector = UInt64.random(in: 0 ... 4096 - count, using: &random)
            let data = pattern(sector: sector, count: count, tag: UInt8(truncatingIfNeeded: index))
            try await front.write(sector: sector, data: data)
            model.replaceSubrange(Int(sector) * 512 ..< Int(sector + count) * 512, with: data)
            let back = try await front.read(sector: sector, count: count)
            #expect(back == data, "sectors \(sector)..<\(sector + count) read back differently")
        }

        // Many at once, on disjoint ranges, so they overlap in flight and fill the ring.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0 ..< 64 {
                let sector = UInt64(i) * 64
                let data = pattern(sector: sector, count: 40, tag: 0xA0 &+ UInt8(i))
                model.replaceSubrange(Int(sector) * 512 ..< Int(sector + 40) * 512, with: data)
                group.addTask { try await front.write(sector: sector, data: data) }
            }
            try await group.waitForAll()
        }
        try await front.flush()
        // Persistent grants: the same pages served every request, none were added.
        let perSlot = geometry.indirect > 11 ? 2 : 1
        #expect(front.grantedPageSets == Int(geometry.queues) + disk.depth * perSlot)
        #expect(try await front.read(sector: 0, count: 4096) == model)
        #expect(try rig.image.contents() == model, "the backing file holds what the frontend wrote")

        // Discarded sectors read back as zeroes; their neighbours keep their data.
        try await front.discard(sector: 1024, count: 512)
        model.replaceSubrange(1024 * 512 ..< 1536 * 512, with: [UInt8](repeating: 0, count: 512 * 512))
        #expect(try await front.read(sector: 1000, count: 600) == Array(model[1000 * 512 ..< 1600 * 512]))

        #expect(await front.close() == 0)
        #expect(front.grantedPageSets == 0, "every granted page set was ended")
        await rig.shutdown()
    }

    @Test func rangesOutsideTheDiskAreRefusedWithTheirSectors() async throws {
        let rig = try await Rig(sectors: 1024)
        let front = try rig.frontend()
        _ = try await bounded("frontend connects") { try await front.connected() }
        await #expect(throws: BlockFrontendError.invalidRange(operation: "read", sector: 1000, count: 25,
                                                              diskSectors: 1024, alignment: 1)) {
            _ = try await front.read(sector: 1000, count: 25)
        }
        await #expect(throws: BlockFrontendError.invalidLength(operation: "write", bytes: 100, expected: 512)) {
            try await front.write(sector: 0, data: [UInt8](repeating: 1, count: 100))
        }
        await #expect(throws: BlockFrontendError.invalidRange(operation: "discard", sector: UInt64.max, count: 2,
                                                              diskSectors: 1024, alignment: 1)) {
            try await front.discard(sector: UInt64.max, count: 2)
        }
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    @Test func aBackendRefusalNamesTheOperationAndRange() async throws {
        var options = TestBackendOptions()
        options.discard = false
        let rig = try await Rig(sectors: 1024, options: options)
        let front = try rig.frontend()
        _ = try await bounded("frontend connects") { try await front.connected() }
        await #expect(throws: BlockFrontendError.notSupported(operation: "discard", sector: 16, count: 32)) {
            try await front.discard(sector: 16, count: 32)
        }
        // The refusal did not break the connection.
        try await front.write(sector: 16, data: pattern(sector: 16, count: 8, tag: 1))
        #expect(try await front.read(sector: 16, count: 8) == pattern(sector: 16, count: 8, tag: 1))
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    /// A backend whose `sectors` would make the disk's byte size overflow 64 bits is not
    /// connected to: the frontend goes to Closing and its error node says why.
    @Test func aDiskPastSixtyFourBitBytesIsRefused() async throws {
        var options = TestBackendOptions()
        options.sectorsOverride = String(UInt64.max / 512 + 1)
        let rig = try await Rig(sectors: 1024, options: options)
        let front = try rig.frontend()
        try await eventually("frontend gives up on the backend") { front.state == .closing }
        let parts = rig.paths.frontend.split(separator: "/")
        let errorNode = "/local/domain/\(parts[2])/error/" + parts.dropFirst(3).joined(separator: "/") + "/error"
        let message = try await rig.toolstack.readString(errorNode)
        #expect(message.contains("sectors = 36028797018963968 512-byte sectors is past 64-bit byte sizes"), "\(message)")
        _ = await front.close()
        await rig.shutdown()
    }

    @Test func callsAfterCloseFail() async throws {
        let rig = try await Rig(sectors: 1024)
        let front = try rig.frontend()
        _ = try await bounded("frontend connects") { try await front.connected() }
        #expect(await front.close() == 0)
        await #expect(throws: BlockFrontendError.closed) { _ = try await front.read(sector: 0, count: 1) }
        await rig.shutdown()
    }

    /// A backend offering only BLKIF_OP_WRITE_BARRIER gets barriers for flushes; one
    /// offering neither makes flush a typed refusal naming the feature.
    @Test func flushUsesABarrierWhenThatIsAllTheBackendOffers() async throws {
        var options = TestBackendOptions()
        options.flushCache = false
        let rig = try await Rig(sectors: 1024, options: options)
        let front = try rig.frontend()
        let disk = try await bounded("frontend connects") { try await front.connected() }
        #expect(!disk.backend.flushCache && disk.backend.barrier)
        try await front.write(sector: 64, data: pattern(sector: 64, count: 16, tag: 9))
        try await front.flush()
        #expect(Array(try rig.image.contents()[64 * 512 ..< 80 * 512]) == pattern(sector: 64, count: 16, tag: 9))
        #expect(await front.close() == 0)
        await rig.shutdown()

        options.barrier = false
        let bare = try await Rig(sectors: 1024, options: options)
        let second = try bare.frontend()
        _ = try await bounded("frontend connects") { try await second.connected() }
        await #expect(throws: BlockFrontendError.featureNotOffered(operation: "flush", feature: "feature-flush-cache")) {
            try await second.flush()
        }
        #expect(await second.close() == 0)
        await bare.shutdown()
    }
}
