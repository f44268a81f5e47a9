import Foundation
import Glibc
import Synchronization
import Testing
import XenTesting
@testable import BlockFrontend

/// `BlockFrontend.submit(_:completion:)`, the non-waiting entry point the NBD export uses.
@Suite struct BlockFrontendSubmitTests {
    /// Results collected from completions, wherever they run.
    final class Results: Sendable {
        let byIndex = Mutex<[Int: Result<[UInt8], BlockFrontendError>]>([:])
        let calls = Atomic<Int>(0)
        func record(_ index: Int, _ result: Result<[UInt8], BlockFrontendError>) {
            calls.add(1, ordering: .relaxed)
            byIndex.withLock { $0[index] = result }
        }
    }

    /// Sixty-four reads and writes started from one plain thread without waiting: each
    /// completion runs once, every write lands and every read sees its data.
    @Test func manyRequestsFromOneThreadCompleteOnceEach() async throws {
        let rig = try await Rig(sectors: 8192)
        let front = try rig.frontend(BlockFrontendConfiguration(maxRingPageOrder: 1, queues: 2, depth: 16))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let writes = Results()
        let submitter = Thread {
            for i in 0 ..< 64 {
                let sector = UInt64(i) * 128
                front.submit(.write(sector: sector, data: pattern(sector: sector, count: 100, tag: 0x3C))) {
                    writes.record(i, $0)
                }
            }
        }
        submitter.start()
        try await eventually("64 writes complete") { writes.calls.load(ordering: .relaxed) == 64 }
        let reads = Results()
        for i in 0 ..< 64 {
            front.submit(.read(sector: UInt64(i) * 128, count: 100)) { reads.record(i, $0) }
        }
        try await eventually("64 reads complete") { reads.calls.load(ordering: .relaxed) == 64 }
        for i in 0 ..< 64 {
            #expect(try writes.byIndex.withLock({ $0[i] })?.get() == [], "write \(i)")
            #expect(try reads.byIndex.withLock({ $0[i] })?.get() == pattern(sector: UInt64(i) * 128, count: 100, tag: 0x3C),
                    "read \(i)")
        }
        #expect(writes.calls.load(ordering: .relaxed) == 64 && reads.calls.load(ordering: .relaxed) == 64,
                "no completion ran twice")
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    /// `submitRead(sector:into:completion:)` fills the caller's buffer, across several
    /// blkif requests, and hands that same buffer back; a buffer that is not whole
    /// sectors, or a range past the end, is refused at once.
    @Test func readsIntoTheCallersBuffer() async throws {
        let rig = try await Rig(sectors: 8192)
        let front = try rig.frontend(BlockFrontendConfiguration(maxIndirectSegments: 0, depth: 4))
        _ = try await bounded("frontend connects") { try await front.connected() }
        // 300 sectors: more than one 11-segment request (88 sectors) can carry.
        let data = pattern(sector: 40, count: 300, tag: 0x5A)
        try await front.write(sector: 40, data: data)
        let results = Results()
        var buffer = [UInt8](repeating: 0xEE, count: 300 * 512)
        let address = buffer.withUnsafeMutableBytes { UInt(bitPattern: $0.baseAddress) }
        // Consumed, so the frontend holds the only reference and fills it in place.
        front.submitRead(sector: 40, into: consume buffer) { results.record(0, $0) }
        try await eventually("the read completes") { results.calls.load(ordering: .relaxed) == 1 }
        let filled = try #require(try results.byIndex.withLock { $0[0] }?.get())
        #expect(filled == data)
        #expect(filled.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) } == address, "the caller's own storage")

        front.submitRead(sector: 0, into: [UInt8](repeating: 0, count: 700)) { results.record(1, $0) }
        front.submitRead(sector: 8190, into: [UInt8](repeating: 0, count: 1024 * 4)) { results.record(2, $0) }
        #expect(results.byIndex.withLock { $0[1] } == .failure(.invalidLength(operation: "read", bytes: 700, expected: 1024)))
        #expect(results.byIndex.withLock { $0[2] } == .failure(.invalidRange(operation: "read", sector: 8190, count: 8,
                                                                              diskSectors: 8192, alignment: 1)))
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    /// A request the frontend refuses completes before submit returns, on the caller's
    /// thread, with the reason: a bad range, a short write, a frontend never connected.
    @Test func refusalsCompleteAtOnceWithTheirReason() async throws {
        let rig = try await Rig(sectors: 1024)
        let front = try rig.frontend()
        _ = try await bounded("frontend connects") { try await front.connected() }
        let results = Results()
        front.submit(.read(sector: 1020, count: 8)) { results.record(0, $0) }
        front.submit(.write(sector: 0, data: [1, 2, 3])) { results.record(1, $0) }
        front.submit(.discard(sector: 0, count: 0)) { results.record(2, $0) }
        #expect(results.calls.load(ordering: .relaxed) == 3, "each completed inside submit")
        #expect(results.byIndex.withLock { $0[0] } == .failure(.invalidRange(operation: "read", sector: 1020, count: 8,
                                                                              diskSectors: 1024, alignment: 1)))
        #expect(results.byIndex.withLock { $0[1] } == .failure(.invalidLength(operation: "write", bytes: 3, expected: 512)))
        #expect(results.byIndex.withLock { $0[2] } == .failure(.invalidRange(operation: "discard", sector: 0, count: 0,
                                                                              diskSectors: 1024, alignment: 1)))
        #expect(await front.close() == 0)
        front.submit(.flush) { results.record(3, $0) }
        #expect(results.byIndex.withLock { $0[3] } == .failure(.closed))
        await rig.shutdown()

        // No backend ever connects this one.
        let lonely = try await Rig(sectors: 1024)
        await lonely.stopBackend()
        let waiting = try lonely.frontend()
        waiting.submit(.read(sector: 0, count: 1)) { results.record(4, $0) }
        #expect(results.byIndex.withLock { $0[4] } == .failure(.notConnected))
        #expect(await waiting.close() == 0)
        await lonely.shutdown()
    }
}
