import Foundation
import Testing
import XenTesting
import SystemCalls
@testable import Conformance

/// The suite's frontend role as a process (a scripted blkback in dom0) against our
/// blkfront as a process, both on a local hypervisor that is a third: `xensplit
/// hypervisor`, `domain create`, `blkfront`, `conformance --role frontend`. No blkback runs.
@Suite("xensplit conformance against our blkfront", .serialized)
struct BlkfrontConformanceTests {
    static var binary: String { TestCommand.xensplit }

    /// A local hypervisor and our blkfront on guest `guest`'s xvda (its NBD export on a
    /// socket in the state directory), for `body`; everything started is stopped after.
    static func withBlkfront(_ body: (_ state: String, _ blkfront: ChildProcess) async throws -> Void) async throws {
        var template = Array("/tmp/xensplit-conformance-fe-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw JUnitReaderError(description: "mkdtemp: errno \(errno)") }
        let state = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: state) }
        #expect(FileManager.default.createFile(atPath: state + "/rw.img", contents: nil))
        #expect(truncate(state + "/rw.img", 16384 * 512) == 0)
        let hypervisor = try TestCommand.spawn(binary, ["hypervisor", "--state-dir", state])
        defer {
            _ = hypervisor.signal(SIGTERM)
            _ = hypervisor.wait()
        }
        for _ in 0 ..< 2000 where !FileManager.default.fileExists(atPath: state + "/xenstored.socket") {
            try await Task.sleep(for: .milliseconds(10))
        }
        let create = try TestCommand.run(binary, ["domain", "create", "guest", "--state-dir", state,
                                                  "--disk", "vdev=xvda,access=rw,target=\(state)/rw.img"])
        try #require(create.status == 0, "domain create: \(create.stderr)")
        let blkfront = try TestCommand.spawn(binary, ["blkfront", "guest", "xvda", "--nbd", "unix:\(state)/xvda.sock",
                                                      "--platform", "local", "--state-dir", state])
        defer {
            _ = blkfront.signal(SIGTERM)
            _ = blkfront.wait()
        }
        try await body(state, blkfront)
    }

    static func conformance(_ state: String, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let all = ["conformance", "--role", "frontend", "--device", "vbd", "--platform", "local", "--state-dir", state] + arguments
        return try await offThePool { try TestCommand.run(binary, all) }
    }

    @Test("every frontend-role vbd clause matches expected.tsv for ours-blkfront; the blkfront survives the lies and serves a second run")
    func matchesExpectations() async throws {
        try await Self.withBlkfront { state, blkfront in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, ["--target", "guest/xvda", "--expect", "ours-blkfront", "--nbd", "unix:\(state)/xvda.sock",
                                                         "--format", "junit", "--output", junit])
            #expect(run.status == 0, "conformance: \(run.stderr)")
            let executed = try JUnitReader.checkAgainstExpectations(junit, target: "ours-blkfront", scope: ConformanceScope(role: .frontend, device: .vbd))
            // Every check written so far has an outcome, none a gap.
            #expect(executed == BlkifFrontendSuite.checks.count)
            // Lying sizes and states refused, not fatal: the same process connects again.
            #expect(blkfront.isRunning, "blkfront exited: \(blkfront.status.map { "\($0)" } ?? "running")")
            let again = try await Self.conformance(state, ["--target", "guest/51712", "--clauses", "XENBUS-01[67]", "--format", "json"])
            #expect(again.status == 0, "second run: \(again.stdout) \(again.stderr)")
        }
    }

    @Test("without --nbd the clauses that make requests are not executed, with the reason, and need no handshake; the others run")
    func withoutUserSide() async throws {
        try await Self.withBlkfront { state, _ in
            let run = try await Self.conformance(state, ["--target", "guest/xvda", "--clauses", "RING-001,BLKIF-FE-017,RING-012", "--format", "json"])
            // Not executed fails a run without --expect; the report says which and why.
            #expect(run.status == 1)
            let report = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            let results = try #require(report?["results"] as? [[String: Any]], "report: \(run.stdout) \(run.stderr)")
            let outcomes = Dictionary(uniqueKeysWithValues: results.map { ($0["id"] as? String ?? "?", $0["outcome"] as? String ?? "?") })
            #expect(outcomes == ["RING-001": "not-executed", "BLKIF-FE-017": "not-executed", "RING-012": "pass"])
            let evidence = results.first { $0["id"] as? String == "RING-001" }?["evidence"] as? String ?? ""
            #expect(evidence.contains("--nbd"))
        }
    }

    @Test("a frontend-role deviation from expected.tsv fails the run with exit status 1")
    func deviationFails() async throws {
        let source = try ClauseCatalog.defaultDirectory()
        let copy = NSTemporaryDirectory() + "xensplit-clauses-fe-\(getpid())"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: source, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let expected = try String(contentsOfFile: copy + "/expected.tsv", encoding: .utf8)
        let lied = expected.replacingOccurrences(of: "RING-012\tours-blkfront\tpass\t-\t-",
                                                 with: "RING-012\tours-blkfront\tfail\tclaimed for the test\t[conformance]")
        try #require(lied != expected)
        try lied.write(toFile: copy + "/expected.tsv", atomically: true, encoding: .utf8)
        try await Self.withBlkfront { state, _ in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, ["--target", "guest/xvda", "--expect", "ours-blkfront", "--nbd", "unix:\(state)/xvda.sock", "--clause-dir", copy,
                                                         "--clauses", "RING-012", "--format", "junit", "--output", junit])
            #expect(run.status == 1)
            let document = try JUnitReader.read(junit)
            #expect(document.cases.map(\.result) == ["failure"])
            #expect(document.cases.first?.message == "expected fail, got pass")
        }
    }
}
