import FuzzTargets
import XenTesting
import Testing

/// Replays seeded random scripts through the ring fuzz target in the normal test build, so
/// its invariants are checked on every run even without libFuzzer (scripts/fuzz.sh).
@Suite struct RingFuzzReplayTests {
    @Test func seededScriptsKeepTheInvariants() async throws {
        // Off the pool: the targets take one lock, which other suites' fuzz replays hold too.
        try await offThePool {
            var rng = SeededGenerator(seed: 0xF022)
            for _ in 0..<3000 {
                let length = Int(rng.next() % 512)
                let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                bytes.withUnsafeBytes { FuzzTarget.ring.run($0) }
            }
        }
    }
}
