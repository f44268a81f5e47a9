import BlockBackend
import FuzzTargets
import Testing
import XenTesting

/// Replays seeded random scripts through the blkback fuzz target in the normal test build,
/// so a hostile frontend's random requests are thrown at a queue on every test run even
/// without libFuzzer (`scripts/fuzz.sh blkback`).
@Suite struct BlkbackFuzzReplayTests {
    @Test func seededScriptsKeepTheInvariants() async throws {
        // Off the pool: the targets take one lock, which other suites' fuzz replays hold too.
        let reached = try await offThePool {
            var rng = SeededGenerator(seed: 0xB1CB)
            for _ in 0..<1500 {
                let length = Int(rng.next() % 768)
                let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                bytes.withUnsafeBytes { FuzzTarget.blkback.run($0) }
            }
            return FuzzTarget.whileIdle { BlkbackFuzz.reached }
        }
        // The scripts got past the checks to real I/O of every kind, not only refusals.
        #expect(reached.reads > 0 && reached.writes > 0 && reached.indirect > 0 && reached.barriers > 0
                && reached.flushes > 0 && reached.discards > 0, "\(reached)")
        #expect(reached.sectorsRead > 0 && reached.sectorsWritten > 0 && reached.errors > 0 && reached.unsupported > 0,
                "\(reached)")
    }
}
