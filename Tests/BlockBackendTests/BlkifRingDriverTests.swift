import Blkif
import Testing
import URing
import XenPlatform
import XenTesting
@testable import BlockBackend

/// XenTesting's minimal blkif frontend against our backend, used the way the blkback
/// benchmark uses it: many slots in flight on several rings at once, reaped as they come.
@Suite struct BlkifRingDriverTests {
    /// Two rings, eight slots: even slots move 128 KiB by BLKIF_OP_INDIRECT, odd ones 20
    /// sectors (the last page partly) by direct requests.
    static let configuration = BlkifRingDriver.Configuration(queues: 2, depth: 8, indirectSegments: 32, persistent: true)

    static func sectors(slot: Int) -> Int { slot % 2 == 0 ? 256 : 20 }

    /// Sends `operation` from every slot at once, slot n at sector n x 512, and reaps
    /// every answer; returns the statuses by slot.
    static func everySlot(_ operation: BlkifDirectOperation, _ rings: BlkifRingDriver.Rings) throws -> [BlkifStatus?] {
        for slot in 0 ..< rings.depth {
            try rings.submit(operation, slot: slot, sector: UInt64(slot * 512), sectors: sectors(slot: slot))
        }
        try rings.pushRequests()
        var statuses = [BlkifStatus?](repeating: nil, count: rings.depth)
        var answered = 0
        while answered < rings.depth {
            answered += try rings.consumeResponses { slot, status in statuses[slot] = status }
            if answered < rings.depth, try !rings.finalCheckForResponses() { try rings.waitForEvent() }
        }
        return statuses
    }

    @Test("indirect and direct requests from every slot on two rings at once: answered OKAY, data intact, grants kept mapped, every page back on close")
    func manySlotsInFlight() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 8192)
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 1024, threads: 2),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        var limits = BlkbackDeviceLimits()
        limits.persistentGrants = true
        let daemon = try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 2, limits: limits),
                                       factory: factory, logger: vbdLogger)
        let running = RunningDaemon(daemon)
        let front = try VbdAttached.start(guest, domain: id, device: BlkbackDeviceTests.xvda, configuration: Self.configuration)
        let rings = try await front.blkif.connected()
        #expect(BlkbackPersistentDeviceTests.queuesPersistent(daemon, front.backendPath) == [true, true])

        let written = (0 ..< rings.depth).map { pattern(Self.sectors(slot: $0) * 512, seed: UInt64(0xB1 + $0)) }
        for slot in 0 ..< rings.depth { written[slot].withUnsafeBytes { rings.data(slot: slot).copyBytes(from: $0, to: 0) } }
        #expect(try await offThePool { try Self.everySlot(.write, rings) } == Array(repeating: .okay, count: rings.depth))
        for slot in 0 ..< rings.depth { rings.data(slot: slot).fill(0, at: 0, length: written[slot].count) }
        #expect(try await offThePool { try Self.everySlot(.read, rings) } == Array(repeating: .okay, count: rings.depth))
        for slot in 0 ..< rings.depth {
            #expect(rings.data(slot: slot).bytes(at: 0, length: written[slot].count) == written[slot], "slot \(slot)")
        }
        #expect(!front.blkif.endDataAccess(), "the backend keeps the data pages mapped")
        try await front.close()
        try await running.stop()
    }
}
