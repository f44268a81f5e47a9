import Glibc
import Testing
import XenPlatform
import XenTesting
@testable import BlockFrontend

/// The I/O thread on an event channel that fails: it stops waiting on the channel at the
/// first failure, reports why, and keeps the disk working, without spinning on it.
@Suite struct BlockFrontendEventChannelTests {
    static let injected = PlatformError.eventChannel("pending ports (injected fault)", errno: EBADF)

    @Test func aChannelWhosePendingPortsCannotBeReadIsGivenUpOnceAndReported() async throws {
        let rig = try await Rig(sectors: 2048)
        let platform = FailingEventChannelPlatform(try rig.hypervisor.platform(for: rig.guest))
        let front = try BlockFrontend(platform: platform, devid: Rig.devid,
                                      configuration: BlockFrontendConfiguration(maxRingPageOrder: 0, queues: 1),
                                      logger: testLogger)
        _ = try await bounded("frontend connects") { try await front.connected() }
        let first = pattern(sector: 0, count: 8, tag: 0x51)
        try await bounded("a write on a working channel") { try await front.write(sector: 0, data: first) }
        #expect(front.eventChannelFailure == nil)
        #expect(front.eventChannelWaitFailures == 0)

        let channel = try #require(platform.channels.last)
        channel.failPendingReads(with: Self.injected)
        // Each request waits for the backend's answer, whose notification makes the
        // channel readable: the thread reads its ports, fails, and must then neither
        // retry at once (a spin: thousands of failed reads) nor lose the answers.
        for round in 0 ..< 20 {
            let sector = UInt64(8 + round * 8)
            let data = pattern(sector: sector, count: 8, tag: UInt8(round))
            try await bounded("write \(round) after the failure") { try await front.write(sector: sector, data: data) }
            let back = try await bounded("read \(round) after the failure") { try await front.read(sector: sector, count: 8) }
            #expect(back == data)
        }
        #expect(front.eventChannelFailure == .eventChannelFailed(Self.injected))
        #expect(channel.failedPendingReads == 1, "the thread read the failing channel once, then stopped waiting on it")
        #expect(front.eventChannelWaitFailures == 1)
        #expect(try await front.read(sector: 0, count: 8) == first)

        // The next connection has a channel of its own, waited on again.
        await rig.stopBackend()
        try await eventually("frontend closed after its backend") { front.state == .closed }
        rig.startBackend()
        try await eventually("frontend connected again") { front.connections == 2 && front.state == .connected }
        let again = pattern(sector: 512, count: 8, tag: 0x77)
        try await bounded("a write on the new connection") { try await front.write(sector: 512, data: again) }
        #expect(try await front.read(sector: 512, count: 8) == again)
        #expect(front.eventChannelFailure == nil)
        #expect(front.eventChannelWaitFailures == 0)
        #expect(platform.channels.count == 2)
        #expect(platform.channels.last?.failedPendingReads == 0)

        #expect(await front.close() == 0)
        await rig.shutdown()
    }
}
