import Foundation
import Testing

/// `xensplit-bench ring` as a process: the Swift side and the C io/ring.h side must do the
/// same work in every run (same requests answered, every segment of every request read,
/// the same bytes left in the ring), whichever side runs first. Timings are not looked at.
@Suite("xensplit-bench ring", .serialized)
struct XensplitBenchRingTests {
    /// One `check NAME run=N side=S answered=A refused=R digest=0x.. ring=0x..` line.
    struct Check: Equatable {
        var name: String
        var run: Int
        var side: String
        var answered: UInt64
        var refused: UInt64
        var digest: UInt64
        var ring: UInt64

        init?(_ line: Substring) {
            let fields = line.split(separator: " ")
            guard fields.count == 8, fields[0] == "check" else { return nil }
            var values: [Substring: Substring] = [:]
            for field in fields.dropFirst(2) {
                let pair = field.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { return nil }
                values[pair[0]] = pair[1]
            }
            func hex(_ key: Substring) -> UInt64? {
                guard let text = values[key], text.hasPrefix("0x") else { return nil }
                return UInt64(text.dropFirst(2), radix: 16)
            }
            guard let run = values["run"].flatMap({ Int($0) }), let side = values["side"],
                  let answered = values["answered"].flatMap({ UInt64($0) }),
                  let refused = values["refused"].flatMap({ UInt64($0) }),
                  let digest = hex("digest"), let ring = hex("ring") else { return nil }
            name = String(fields[1])
            self.run = run
            self.side = String(side)
            self.answered = answered
            self.refused = refused
            self.digest = digest
            self.ring = ring
        }
    }

    /// The tally a backend must reach for `count` benchmark requests (CRingReference.h:
    /// request i has sector i and 11 segments, gref 1000 + k, sectors 0...7).
    static func expectedDigest(count: UInt64) -> UInt64 {
        let perRequest = (0..<UInt64(11)).reduce(UInt64(0)) { $0 + 1000 + $1 + 0 + 7 }
        return count * (count - 1) / 2 + count * perRequest
    }

    /// Few requests: the check is of equal work, and the sides busy-poll both cores while
    /// they run (a long run starves every other test of this process).
    static let requests: UInt64 = 3000

    @Test("ring: both sides answer the same whole requests and leave the same ring, in both orders")
    func sidesDoTheSameWork() async throws {
        let log = try makeTemporaryDirectory("xensplit-bench-ring-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try Child(XensplitBenchBlockTests.benchBinary, ["ring", "--requests", String(Self.requests), "--runs", "2", "--verbose"],
                              outputPath: log + "/out.log")
        defer { child.signal(SIGKILL) }
        let status = await child.wait()
        let output = child.output
        #expect(status == 0, "\(output)")

        let lines = output.split(separator: "\n")
        let bench = lines.filter { $0.hasPrefix("bench ") }.compactMap(XensplitBenchBlockTests.BenchLine.init)
        let counts: [String: UInt64] = ["ring-poll-qd1": Self.requests, "ring-poll-qd32": Self.requests,
                                        "ring-eventfd-qd1": Self.requests, "ring-eventfd-qd32": Self.requests]
        #expect(bench.map(\.name) == ["ring-poll-qd1", "ring-poll-qd32", "ring-eventfd-qd1", "ring-eventfd-qd32"],
                "\(output)")
        for line in bench {
            #expect(line.unit == "req/s" && line.ours > 0 && (line.reference ?? 0) > 0, "\(line.name)")
        }

        let checks = lines.filter { $0.hasPrefix("check ") }.compactMap(Check.init)
        #expect(checks.count == counts.count * 2 * 2, "two runs of each side per comparison: \(output)")
        for (name, count) in counts {
            for run in 1...2 {
                let ours = checks.first { $0.name == name && $0.run == run && $0.side == "ours" }
                let reference = checks.first { $0.name == name && $0.run == run && $0.side == "reference" }
                guard let ours, let reference else {
                    Issue.record("\(name) run \(run): a side's check line is missing")
                    continue
                }
                for side in [ours, reference] {
                    #expect(side.answered == count && side.refused == 0, "\(name) run \(run) \(side.side)")
                    #expect(side.digest == Self.expectedDigest(count: count),
                            "\(name) run \(run) \(side.side): every field of every request read")
                }
                #expect(ours.ring == reference.ring, "\(name) run \(run): the same bytes written into the ring")
            }
        }
    }
}
