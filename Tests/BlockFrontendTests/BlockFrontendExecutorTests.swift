import Foundation
import Synchronization
import Testing
import XenTesting
@testable import BlockFrontend

/// Tasks on the frontend's executor run on its I/O thread, and never wait for a thread
/// that is not there.
@Suite struct BlockFrontendExecutorTests {
    /// The calling thread's name (`blkfront-io` for the I/O thread).
    static func threadName() -> String {
        ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .newlines)
    }

    @Test func tasksThatPreferItRunOnTheIOThreadAndTheirDataRoundTrips() async throws {
        let rig = try await Rig(sectors: 4096)
        let front = try rig.frontend(BlockFrontendConfiguration(queues: 2, depth: 16))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let names = try await withTaskExecutorPreference(front.executor) {
            try await withThrowingTaskGroup(of: String.self) { group in
                for lane in 0 ..< 8 {
                    group.addTask {
                        var seen = ""
                        for round in 0 ..< 16 {
                            let sector = UInt64(lane * 256 + round * 8)
                            let data = pattern(sector: sector, count: 8, tag: UInt8(lane))
                            try await front.write(sector: sector, data: data)
                            let back = try await front.read(sector: sector, count: 8)
                            guard back == data else { throw Errno(code: EIO) }
                            seen = Self.threadName()
                        }
                        return seen
                    }
                }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
        }
        #expect(names == ["blkfront-io"], "resumed on the I/O thread, not the global pool")
        #expect(await front.close() == 0)
        await rig.shutdown()
    }

    @Test func closingFromATaskOnTheIOThreadDoesNotWaitForItself() async throws {
        let rig = try await Rig(sectors: 1024)
        let front = try rig.frontend()
        _ = try await bounded("frontend connects") { try await front.connected() }
        let remaining = try await bounded("close from the I/O thread returns") {
            await withTaskExecutorPreference(front.executor) {
                _ = try? await front.read(sector: 0, count: 8)
                #expect(Self.threadName() == "blkfront-io")
                return await front.close()
            }
        }
        #expect(remaining == 0)
        // With no I/O thread left, tasks that prefer the executor run on the global pool
        // and are refused at once.
        let refused = try await bounded("a request after close is refused, not stranded") {
            await withTaskExecutorPreference(front.executor) {
                do {
                    _ = try await front.read(sector: 0, count: 8)
                    return false
                } catch {
                    return true
                }
            }
        }
        #expect(refused)
        await rig.shutdown()
    }

    @Test func tasksKeepRunningAcrossABackendRestart() async throws {
        let rig = try await Rig(sectors: 2048)
        let front = try rig.frontend(BlockFrontendConfiguration(depth: 8))
        _ = try await bounded("frontend connects") { try await front.connected() }
        let done = Counter()
        let stop = Atomic<Bool>(false)
        // Writes until told to stop: across the restart, with no I/O thread for a while.
        let stream = Task {
            try await withTaskExecutorPreference(front.executor) {
                var round = 0
                while !stop.load(ordering: .relaxed) {
                    let sector = UInt64(round % 200) * 8
                    try await front.write(sector: sector, data: pattern(sector: sector, count: 8, tag: UInt8(truncatingIfNeeded: round)))
                    done.value.add(1, ordering: .relaxed)
                    round += 1
                }
                return round
            }
        }
        try await eventually("some writes done") { done.value.load(ordering: .relaxed) >= 20 }
        await rig.stopBackend()
        try await eventually("frontend closed after its backend") { front.state == .closed }
        let before = done.value.load(ordering: .relaxed)
        rig.startBackend()
        try await eventually("writes go on after the restart") { done.value.load(ordering: .relaxed) >= before + 50 }
        stop.store(true, ordering: .relaxed)
        let rounds = try await bounded("the stream finishes on the new connection") { try await stream.value }
        #expect(front.connections == 2)
        let last = rounds - 1
        let sector = UInt64(last % 200) * 8
        #expect(try await front.read(sector: sector, count: 8) == pattern(sector: sector, count: 8, tag: UInt8(truncatingIfNeeded: last)))
        #expect(await front.close() == 0)
        await rig.shutdown()
    }
}
