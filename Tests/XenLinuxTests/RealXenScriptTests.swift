import Foundation
import SystemCalls
import Testing

/// The real-Xen test's judging, on made-up consoles: scripts/realxen/console.sh (which
/// run-test.sh sources) counts a marker only at the start of a line and outside the logs dom0
/// quotes, and run-test.sh under CI refuses the knobs that leave steps out.
@Suite struct RealXenScriptTests {
    static let realxen = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../scripts/realxen").standardized.path

    /// Runs `script` with bash, `input` on its standard input; the exit status and the
    /// combined output.
    static func bash(_ script: String, input: String = "", environment: [String: String] = ["PATH": "/usr/bin:/bin"])
        throws -> (status: Int32, output: String)
    {
        let process = try ChildProcess("/bin/bash", ["-c", "set -euo pipefail; " + script], environment: environment,
                                       standardInput: .pipe, standardOutput: .pipe, standardError: .standardOutput)
        try process.writeStandardInput(Array(input.utf8))
        process.closeStandardInput()
        let data = try process.collectOutput().standardOutput
        return (process.wait().code, String(decoding: data, as: UTF8.self))
    }

    static func console(_ script: String, _ input: String) throws -> String {
        let result = try bash(". '\(realxen)/console.sh'; " + script, input: input)
        #expect(result.status == 0, "\(script): \(result.output)")
        return result.output
    }

    /// A console as dom0 prints it (carriage returns included), with markers where none
    /// may count: inside a line, and inside a quoted log.
    static let log = [
        "(XEN) Xen version 4.17",
        "REALXEN-MARK ready uptime=20.1",
        "REALXEN-RESULT setup PASS modules loaded",
        "REALXEN-RESULT vbd-io PASS hashes match",
        "[   31.2] blkback: REALXEN-RESULT vbd-ext4 PASS a log line quoting a marker",
        "xx REALXEN-MARK tests-done uptime=1",
        "REALXEN-RESULT vbd-readonly FAIL the write was accepted",
        "REALXEN-LOG-BEGIN domu-console",
        "REALXEN-RESULT vbd-discard PASS inside a quoted log",
        "REALXEN-SELFTEST PASS quoted",
        "REALXEN-LOG-END domu-console",
        "REALXEN-SELFTEST PASS grant map",
        "REALXEN-SELFTESTPASS no space after the marker",
    ].map { $0 + "\r\n" }.joined()

    @Test func onlyALineThatStartsWithAPassPassesAStep() throws {
        let missing = try Self.console("steps_without_pass setup vbd-io vbd-ext4 vbd-discard vbd-readonly vbd-4k", Self.log)
        #expect(missing.split(separator: "\n") == ["vbd-ext4", "vbd-discard", "vbd-readonly", "vbd-4k"])
    }

    @Test func failuresAreTheFailLinesThatCount() throws {
        #expect(try Self.console("step_failures", Self.log) == "vbd-readonly: the write was accepted\n")
    }

    @Test func markerLinesAreTheRestOfJudgedLines() throws {
        #expect(try Self.console("marker_lines REALXEN-SELFTEST", Self.log) == "PASS grant map\n")
        #expect(try Self.console("marker_lines REALXEN-MARK", Self.log) == "ready uptime=20.1\n")
    }

    @Test func aMarkerIsSeenOnlyAtTheStartOfALine() throws {
        #expect(try Self.console("saw_marker 'REALXEN-MARK ready' && echo seen", Self.log) == "seen\n")
        #expect(try Self.console("saw_marker 'REALXEN-MARK tests-done' || echo unseen", Self.log) == "unseen\n")
    }

    /// Runs run-test.sh with `environment` and a PATH of only the tools it uses before its
    /// tool check (dirname, grep, sed), so a run that gets that far stops there ("debootstrap
    /// not found") instead of building or booting anything.
    static func runTest(_ environment: [String: String]) throws -> (status: Int32, output: String) {
        let tools = FileManager.default.temporaryDirectory.appendingPathComponent("realxen-tools-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tools, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: tools) }
        for (tool, path) in [("dirname", "/usr/bin/dirname"), ("grep", "/bin/grep"), ("sed", "/bin/sed")] {
            try FileManager.default.createSymbolicLink(atPath: tools.appendingPathComponent(tool).path,
                                                       withDestinationPath: path)
        }
        return try bash("exec /bin/bash '\(realxen)/run-test.sh'",
                        environment: environment.merging(["PATH": tools.path]) { $1 })
    }

    /// Under CI each knob that leaves steps out is refused, by name, before anything runs.
    @Test(arguments: [
        ("REALXEN_DOMU", "0"), ("REALXEN_STEPS", "vbd"), ("REALXEN_BENCH_ROUNDS", "0"),
        ("REALXEN_REQUESTS", "10"), ("REALXEN_BLKBACK_ARGS", "--max-indirect-segments=0"),
        ("REALXEN_CONFORMANCE", "blkfront"),
    ])
    func ciRefusesAKnobThatLeavesStepsOut(name: String, value: String) throws {
        let result = try Self.runTest(["CI": "true", name: value])
        #expect(result.status == 2, "\(result.output)")
        #expect(result.output.contains("\(name)=\(value)"), "\(result.output)")
        #expect(!result.output.contains("not found"), "refused before the tool check: \(result.output)")
    }

    @Test func ciWithTheDefaultsAndOutsideCIAKnobGoOn() throws {
        // No refusal: each run goes on to its tool check, where the PATH stops it.
        for environment in [["CI": "true", "REALXEN_BENCH_ROUNDS": "3"], ["REALXEN_DOMU": "0", "REALXEN_STEPS": "vbd"]] {
            let result = try Self.runTest(environment)
            #expect(result.status == 1, "\(environment): \(result.output)")
            #expect(result.output.contains("debootstrap not found"), "\(environment): \(result.output)")
        }
    }
    /// Each written take-up list keeps in step with the script that prints its lines: every
    /// rule is `same`, `min:N` or a number, and every feature has a line printed for it.
    @Test(arguments: [("realxen-takeup.tsv", "dom0-init.sh", "REALXEN-TAKEUP"),
                      ("realxen-net-takeup.tsv", "dom0-net.sh", "REALXEN-NETTAKEUP")])
    func takeUpListsMatchTheirScripts(list: String, script: String, marker: String) throws {
        let protocols = URL(fileURLWithPath: Self.realxen).appendingPathComponent("../../Protocols").standardized.path
        let rows = try String(contentsOfFile: protocols + "/" + list, encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
        let source = try String(contentsOfFile: Self.realxen + "/" + script, encoding: .utf8)
        #expect(rows.count >= 8)
        for row in rows {
            let fields = row.split(separator: "\t", omittingEmptySubsequences: false)
            #expect(fields.count == 3, "\(list): \(row)")
            guard fields.count == 3 else { continue }
            let (feature, rule) = (String(fields[0]), String(fields[1]))
            let ruleOK = rule == "same" || UInt(rule) != nil || (rule.hasPrefix("min:") && UInt(rule.dropFirst(4)) != nil)
            #expect(ruleOK, "\(list): feature \(feature) has rule '\(rule)'")
            // The feature's line: "MARKER feature offered=" (or a loop over a family).
            let printed = source.contains("\(marker) \(feature) offered=")
                || (feature.hasPrefix("gso-tcpv") && source.contains("\(marker) gso-tcpv$g offered="))
            #expect(printed, "\(script) prints no '\(marker) \(feature)' line")
        }
    }
}
