import Foundation
import FuzzTargets
import Testing
import XenTesting

/// The fuzz targets in the normal test build, without libFuzzer: every input of the
/// repository's corpora (Fuzz/corpus/TARGET, seeded from Protocols/ and minimised by
/// `scripts/fuzz.sh --seed`) and every crash the fuzzer found (Fuzz/regressions/TARGET,
/// each fixed since) goes through its target again, whose invariants trap if broken.
@Suite struct FuzzCorpusReplayTests {
    /// Fuzz/`kind`/`target`'s files, sorted; the directory three levels above this file.
    static func inputs(_ kind: String, _ target: FuzzTarget, filePath: String = #filePath) -> [URL] {
        let directory = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/\(kind)/\(target.rawValue)")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0) }
    }

    /// Runs on a thread of its own: the targets run one input at a time (a lock), and a
    /// test task blocked on that lock or busy for seconds would hold a thread of the
    /// cooperative pool that other suites' drivers need meanwhile.
    static func replay(_ files: [URL], through target: FuzzTarget) async throws {
        try await offThePool {
            for file in files {
                let bytes = try [UInt8](Data(contentsOf: file))
                bytes.withUnsafeBytes { target.run($0) }
            }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func corpusKeepsTheInvariants(_ target: FuzzTarget) async throws {
        let files = Self.inputs("corpus", target)
        #expect(!files.isEmpty, "Fuzz/corpus/\(target.rawValue) is empty: run scripts/fuzz.sh --seed")
        try await Self.replay(files, through: target)
    }

    @Test(arguments: FuzzTarget.allCases)
    func fixedCrashesStayFixed(_ target: FuzzTarget) async throws {
        try await Self.replay(Self.inputs("regressions", target), through: target)
    }

    /// Seeded random inputs through the targets that have no replay test of their own
    /// elsewhere, so their scripts' random paths run on every test run too.
    @Test(arguments: [(FuzzTarget.blkif, 3000), (.diskspec, 3000), (.vifspec, 3000), (.nbd, 300), (.hypervisor, 100),
                      (.netback, 300), (.blkfront, 300), (.netfront, 100)])
    func seededInputsKeepTheInvariants(_ target: FuzzTarget, count: Int) async throws {
        try await offThePool {
            var rng = SeededGenerator(seed: 0xF022 &+ UInt64(target.rawValue.utf8.count))
            for _ in 0..<count {
                let length = Int(rng.next() % 512)
                let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                bytes.withUnsafeBytes { target.run($0) }
            }
        }
    }
}

/// The scripted device targets' corpora reach their data paths, not only refusals: a
/// target stuck at its first check would still "pass" every replay.
@Suite struct FuzzCorpusReachTests {
    @Test func netbackDeliversBothWays() async throws {
        try await FuzzCorpusReplayTests.replay(FuzzCorpusReplayTests.inputs("corpus", .netback), through: .netback)
        let reached = try await offThePool { FuzzTarget.whileIdle { NetbackFuzz.reached } }
        #expect(reached.txPackets > 0 && reached.rxPackets > 0, "\(reached)")
    }

    @Test func blkfrontCompletesAndCatchesLies() async throws {
        try await FuzzCorpusReplayTests.replay(FuzzCorpusReplayTests.inputs("corpus", .blkfront), through: .blkfront)
        let reached = try await offThePool { FuzzTarget.whileIdle { BlkfrontFuzz.reached } }
        #expect(reached.successes > 0 && reached.failures > 0 && reached.brokenRings > 0, "\(reached)")
    }

    @Test func netfrontDeliversAndCatchesLies() async throws {
        try await FuzzCorpusReplayTests.replay(FuzzCorpusReplayTests.inputs("corpus", .netfront), through: .netfront)
        let (reached, violations) = try await offThePool { FuzzTarget.whileIdle { (NetfrontFuzz.reached, NetfrontFuzz.violations) } }
        #expect(reached.txPackets > 0 && reached.rxPackets > 0 && violations > 0, "\(reached), \(violations) violations")
    }
}
