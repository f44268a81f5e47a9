import XenTesting

extension FuzzTarget {
    /// Runs `inputs` seeded random inputs of up to `maxLength` bytes through the target, so
    /// its invariants are checked in the normal test build, without libFuzzer. Blocks its
    /// thread (the targets share one lock): call it off the cooperative pool.
    public func replaySeeded(seed: UInt64, inputs: Int, maxLength: Int) {
        var rng = SeededGenerator(seed: seed)
        for _ in 0..<inputs {
            let length = Int(rng.next() % UInt64(maxLength))
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            bytes.withUnsafeBytes { run($0) }
        }
    }
}
