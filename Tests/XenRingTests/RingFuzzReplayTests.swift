import FuzzTargets
import XenTesting
import Testing

/// Replays seeded random scripts through the ring fuzz target in the normal test build, so
/// its invariants are checked on every run even without libFuzzer (scripts/fuzz.sh).
@Suite struct RingFuzzReplayTests {
    @Test func seededScriptsKeepTheInvariants() async throws {
        // Off the pool: the targets take one lock, which other suites' fuzz replays hold too.
        try await offThePool {
            FuzzTarget.ring.replaySeeded(seed: 0xF022, inputs: 3000, maxLength: 512)
        }
    }
}
