import FuzzTargets
import Testing
import XenTesting

/// Replays seeded random inputs through the netif fuzz target in the normal test build,
/// so its invariants are checked on every run even without libFuzzer (scripts/fuzz.sh).
@Suite struct NetifFuzzReplayTests {
    @Test func seededInputsKeepTheInvariants() async throws {
        // Off the pool: the targets take one lock, which other suites' fuzz replays hold too.
        try await offThePool { Self.replay() }
    }

    static func replay() {
        var rng = SeededGenerator(seed: 0x7E7F)
        for _ in 0..<2000 {
            let length = Int(rng.next() % 4096)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            // Some inputs carry plausible chains: small sizes and more_data flags.
            if rng.next() % 2 == 0 {
                for slot in stride(from: 0, to: min(bytes.count, 256 * 12), by: 12) where slot + 12 <= bytes.count {
                    bytes[slot + 4] = UInt8(rng.next() % 64)      // offset: low
                    bytes[slot + 5] = 0
                    bytes[slot + 6] = UInt8(rng.next() % 2 == 0 ? 4 : 0)  // flags: more_data or none
                    bytes[slot + 7] = 0
                    bytes[slot + 10] = UInt8(rng.next() % 200)    // size: low
                    bytes[slot + 11] = UInt8(rng.next() % 4)
                }
            }
            bytes.withUnsafeBytes { FuzzTarget.netif.run($0) }
        }
    }
}

/// The control-ring fuzz target (scripts/fuzz.sh netifctrl) on seeded random inputs.
@Suite struct NetifCtrlFuzzReplayTests {
    @Test func seededInputsKeepTheInvariants() async throws {
        try await offThePool {
            FuzzTarget.netifctrl.replaySeeded(seed: 0xC7F1, inputs: 3000, maxLength: 1024)
        }
    }
}
