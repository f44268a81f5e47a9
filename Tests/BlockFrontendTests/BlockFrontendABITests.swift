import Blkif
import Testing
import XenTesting
import XenPlatform
import XenRing
@testable import BlockFrontend

/// The frontend speaks each blkif ABI it can be asked for: it names it in `protocol` and
/// lays requests out that way, and our backend serves it with the data intact.
@Suite struct BlockFrontendABITests {
    static let abis: [BlkifABI] = [.native, .x86_32, .x86_64]

    /// Reads, writes (direct and indirect), flush and discard in the ABI, checked against
    /// the frontend's reads and the backing file.
    @Test(arguments: abis)
    func dataSurvivesTheRoundTripInEachABI(_ abi: BlkifABI) async throws {
        let rig = try await Rig(sectors: 16384)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 1, queues: 2, maxIndirectSegments: 32,
                                                                depth: 16, abi: abi))
        _ = try await bounded("frontend connects") { try await front.connected() }
        #expect(try await rig.toolstack.readString(rig.paths.frontend + "/protocol") == abi.protocolName)

        var model = [UInt8](repeating: 0, count: 16384 * 512)
        var random = SeededGenerator(seed: 0xAB1_0000 ^ UInt64(abi.protocolName.utf8.count))
        // 1 sector, a page, the direct limit (11 pages) and one past it (indirect), the
        // indirect limit (32 pages) and past it (split in two).
        var sizes: [UInt64] = [1, 8, 88, 89, 256, 320, 500]
        for _ in 0 ..< 9 { sizes.append(UInt64.random(in: 1 ... 504, using: &random)) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, count) in sizes.enumerated() {
                // Disjoint ranges, written concurrently so both queues carry requests.
                let sector = UInt64(index) * 512 + UInt64.random(in: 0 ... 7, using: &random)
                let data = pattern(sector: sector, count: count, tag: UInt8(index))
                model.replaceSubrange(Int(sector) * 512 ..< Int(sector + count) * 512, with: data)
                group.addTask { try await front.write(sector: sector, data: data) }
            }
            try await group.waitForAll()
        }
        try await front.flush()
        try await front.discard(sector: 512, count: 64)
        model.replaceSubrange(512 * 512 ..< 576 * 512, with: [UInt8](repeating: 0, count: 64 * 512))
        #expect(try await front.read(sector: 0, count: 16384) == model, "\(abi.protocolName): what the frontend reads")
        #expect(try rig.image.contents() == model, "\(abi.protocolName): what the file holds")
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    /// The request in the shared ring has the layout `io/blkif.h` gives the ABI: on
    /// x86_32 the 64-bit id follows the handle at offset 4 and the sector is at 12; on
    /// x86_64 both are 8-byte aligned, at 8 and 16.
    @Test(arguments: [(BlkifABI.x86_32, 4, 12), (BlkifABI.x86_64, 8, 16)])
    func theRingHoldsTheABIsLayout(_ abi: BlkifABI, idOffset: Int, sectorOffset: Int) async throws {
        let rig = try await Rig(sectors: 1 << 24)
        await rig.stopBackend()
        rig.startBackend(serving: false)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 0, queues: 1, depth: 4, abi: abi))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let sector: UInt64 = 0xF1_2345
        let write = Task { try await front.write(sector: sector, data: pattern(sector: sector, count: 3, tag: 1)) }
        try await eventually("the write is in the ring") { front.inFlightRequests == 1 }

        let ref = try #require(GrantRef(try await rig.toolstack.readString(rig.paths.frontend + "/ring-ref")))
        let mapping = try rig.dom0.map([ref], from: rig.guest, writable: false)
        let ring = BackRing(try SharedRing(memory: mapping.view, pages: 1, entrySize: abi.slotSize))
        let slot = ring.requestSlot(0)
        #expect(slot.load(UInt8.self, at: 0) == 1, "BLKIF_OP_WRITE")
        #expect(slot.load(UInt8.self, at: 1) == 1, "one segment")
        let id = slot.load(UInt64.self, at: idOffset)
        #expect(id < 4, "the id is a slot number of a depth-4 frontend, at offset \(idOffset)")
        #expect(slot.load(UInt64.self, at: sectorOffset) == sector)
        // The segment follows the sector: a grant, first sector 0, last sector 2.
        #expect(slot.load(UInt8.self, at: sectorOffset + 8 + 4) == 0)
        #expect(slot.load(UInt8.self, at: sectorOffset + 8 + 5) == 2)
        try rig.dom0.unmap(mapping)

        await rig.stopBackend()
        try await eventually("frontend closed after its backend") { front.state == .closed }
        rig.startBackend()
        try await bounded("the write finishes on a serving backend") { try await write.value }
        #expect(try await front.read(sector: sector, count: 3) == pattern(sector: sector, count: 3, tag: 1))
        #expect(await front.close() == 0)
        await rig.shutdown()
    }
}
