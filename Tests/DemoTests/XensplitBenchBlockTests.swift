import Foundation
import Testing

/// `xensplit-bench blkback` and `blkfront` as processes, in their shortest mode: every
/// comparison prints one well-formed `bench` line and nothing is left behind. Timings are
/// not looked at.
@Suite("xensplit-bench blkback and blkfront", .serialized)
struct XensplitBenchBlockTests {
    /// The built `xensplit-bench`, beside the test bundle.
    static var benchBinary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit-bench").path
    }

    /// One parsed `bench NAME ours=V reference=V unit=U ratio=R spread=PCT%` line.
    struct BenchLine {
        var name: String
        var ours: Double
        var reference: Double?
        var unit: String
        var ratio: Double?
        var spread: Double

        init?(_ line: Substring) {
            let fields = line.split(separator: " ")
            guard fields.count == 7, fields[0] == "bench" else { return nil }
            func value(_ index: Int, _ key: String) -> Substring? {
                fields[index].hasPrefix(key + "=") ? fields[index].dropFirst(key.count + 1) : nil
            }
            guard let ours = value(2, "ours").flatMap({ Double($0) }), ours.isFinite, ours >= 0,
                  let reference = value(3, "reference"), let unit = value(4, "unit"), !unit.isEmpty,
                  let ratio = value(5, "ratio"), let spread = value(6, "spread"), spread.hasSuffix("%"),
                  let spreadValue = Double(spread.dropLast()) else { return nil }
            name = String(fields[1])
            self.ours = ours
            self.unit = String(unit)
            self.spread = spreadValue
            if reference == "none" {
                guard ratio == "none" else { return nil }
                self.reference = nil
                self.ratio = nil
            } else {
                guard let r = Double(reference), r > 0, let q = Double(ratio), q.isFinite else { return nil }
                self.reference = r
                self.ratio = q
            }
        }
    }

    /// Runs the suite with `--quick --runs 1`; returns its `bench` lines, parsed.
    func run(_ suite: String) async throws -> [BenchLine] {
        let log = try makeTemporaryDirectory("xensplit-bench-\(suite)-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try Child(Self.benchBinary, [suite, "--quick", "--runs", "1"], outputPath: log + "/out.log")
        defer { child.signal(SIGKILL) }
        let status = await child.wait()
        let output = child.output
        #expect(status == 0, "\(output)")
        let benchLines = output.split(separator: "\n").filter { $0.hasPrefix("bench ") }
        var parsed: [BenchLine] = []
        for line in benchLines {
            guard let value = BenchLine(line) else {
                Issue.record("not a well-formed bench line: \(line)")
                continue
            }
            parsed.append(value)
        }
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
            .filter { $0.hasSuffix("-\(child.pid).img") }
        #expect(leftovers.isEmpty, "backing files left in /dev/shm: \(leftovers)")
        #expect(DemoCommandTests.processes(mentioning: "xensplit-bench-\(suite)-\(child.pid)").isEmpty,
                "no nbdkit or fio of the bench is left")
        return parsed
    }

    @Test("blkback --quick prints every comparison, CPU per I/O and idle CPU",
          .enabled(if: toolExists("fio"), "fio is not installed"))
    func blkback() async throws {
        let lines = try await run("blkback")
        let names = Set(lines.map(\.name))
        for workload in ["randread-4k-qd32", "randwrite-4k-qd32", "seqread-128k-qd8", "seqwrite-128k-qd8"] {
            for layout in ["f1-q1", "f1-q4", "f16-q1", "f16-q4", "f1-q1-copy", "f1-q4-copy"] {
                #expect(names.contains("blkback-\(workload)-\(layout)"))
                #expect(names.contains("blkback-cpu-per-io-\(workload)-\(layout)"))
                #expect(names.contains("blkback-process-cpu-per-io-\(workload)-\(layout)"))
            }
        }
        #expect(names.contains("blkback-idle-cpu-64-frontends"))
        #expect(names.contains("blkback-idle-cpu-64-frontends-whole-process"))
        #expect(lines.count == 74, "\(lines.map(\.name))")
        for line in lines where line.name.hasPrefix("blkback-cpu-per-io-") || line.name.hasPrefix("blkback-idle-") {
            #expect(line.reference == nil, "\(line.name) has no honest reference")
        }
        for line in lines where line.name.hasPrefix("blkback-process-cpu-per-io-") {
            // Both sides did I/O, so both spent CPU on it; lower is better, so ratio is fio's over ours.
            #expect(line.unit == "us" && line.ours > 0 && (line.reference ?? 0) > 0, "\(line.name)")
            if let reference = line.reference, let ratio = line.ratio, line.ours > 0 {
                // Printed with 3 decimals (and figures of 100 or more as integers): allow for that.
                #expect(abs(ratio - reference / line.ours) <= 0.02 * reference / line.ours + 0.001,
                        "\(line.name): ratio is fio's over ours")
            }
        }
        for line in lines where !line.name.contains("cpu-per-io-") && !line.name.hasPrefix("blkback-idle-") {
            #expect(line.reference != nil && line.ours > 0, "\(line.name): I/O was done on both sides")
            #expect(line.unit == (line.name.contains("4k") ? "IOPS" : "MiB/s"))
        }
    }

    /// One side's run as `--verbose` logs it: `NAME: SIDE N I/Os of B bytes at depth D x J in S s`.
    struct SideRun {
        var side: String
        var operations: Double
        var blockSize: Int
        var depth: Int
        var jobs: Int
        var seconds: Double

        init?(_ line: Substring, name: String) {
            guard line.hasPrefix(name + ": ") else { return nil }
            let words = line.dropFirst(name.count + 2).split(separator: " ")
            guard words.count >= 14, ["ours", "reference"].contains(words[0]), words[2] == "I/Os", words[5] == "bytes",
                  words[7] == "depth", words[9] == "x", words[11] == "in", let operations = Double(words[1]),
                  let blockSize = Int(words[4]), let depth = Int(words[8]), let jobs = Int(words[10]),
                  let seconds = Double(words[12]) else { return nil }
            side = String(words[0])
            self.operations = operations
            self.blockSize = blockSize
            self.depth = depth
            self.jobs = jobs
            self.seconds = seconds
        }
    }

    @Test("blkback: ours and fio do the same I/O per run and are both timed from before the first request",
          .enabled(if: toolExists("fio"), "fio is not installed"))
    func blkbackSidesDoTheSameWork() async throws {
        let name = "blkback-randread-4k-qd32-f1-q1"
        let log = try makeTemporaryDirectory("xensplit-bench-blkback-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try Child(Self.benchBinary, ["blkback", "--quick", "--runs", "2", "--only", name + "$", "--verbose"],
                              outputPath: log + "/out.log")
        defer { child.signal(SIGKILL) }
        let status = await child.wait()
        let output = child.output
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n")
        let runs = lines.compactMap { SideRun($0, name: name) }
        let ours = runs.filter { $0.side == "ours" }
        let reference = runs.filter { $0.side == "reference" }
        #expect(ours.count == 2 && reference.count == 2, "\(output)")
        for run in runs {
            #expect(run.blockSize == 4096 && run.depth == 32 && run.jobs == 1, "same I/O on both sides: \(run)")
            // Both ran for the run's length (0.3 s with --quick) and were timed, not assumed.
            #expect(run.operations > 0 && run.seconds >= 0.3, "\(run)")
        }
        // The figure is each side's own I/Os over its own measured time, medians compared.
        let line = try #require(lines.filter { $0.hasPrefix("bench \(name) ") }.compactMap(BenchLine.init).first, "\(output)")
        func median(_ xs: [Double]) -> Double { xs.count == 2 ? (xs[0] + xs[1]) / 2 : .nan }
        let oursFigure = median(ours.map { $0.operations / $0.seconds })
        let referenceFigure = median(reference.map { $0.operations / $0.seconds })
        #expect(abs(line.ours - oursFigure) <= 0.01 * oursFigure, "ours: \(line.ours) vs \(oursFigure)")
        #expect(abs((line.reference ?? 0) - referenceFigure) <= 0.01 * referenceFigure,
                "reference: \(String(describing: line.reference)) vs \(referenceFigure)")
    }

    @Test("blkfront --quick prints the NBD and library comparisons",
          .enabled(if: toolExists("fio") && toolExists("nbdkit"), "fio or nbdkit is not installed"))
    func blkfront() async throws {
        let lines = try await run("blkfront")
        let expected = ["blkfront-nbd-randread-4k-qd32", "blkfront-nbd-randwrite-4k-qd32", "blkfront-nbd-seqread-1m-qd8",
                        "blkfront-nbd-seqwrite-1m-qd8", "blkfront-lib-randread-4k-qd32", "blkfront-lib-randwrite-4k-qd32",
                        "blkfront-lib-executor-randread-4k-qd32", "blkfront-lib-executor-randwrite-4k-qd32",
                        "blkfront-lib-submit-randread-4k-qd32", "blkfront-lib-submit-randwrite-4k-qd32"]
        #expect(lines.map(\.name) == expected)
        for line in lines {
            #expect(line.reference != nil && line.ours > 0, "\(line.name): I/O was done on both sides")
        }
    }
}
