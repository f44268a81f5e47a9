import Foundation
import SystemCalls
import Testing
import XenTesting
@testable import Conformance

/// The suite as a process against our blkback as a process, both on a local hypervisor
/// that is a third: `xensplit hypervisor`, `domain create`, `blkback`, `conformance`.
@Suite("xensplit conformance against our blkback", .serialized)
struct BlkbackConformanceTests {
    static var binary: String { TestCommand.xensplit }

    /// A local hypervisor and our blkback serving guest `guest`'s xvda (read-write) and
    /// xvdb (read-only), for `body`; everything started is stopped after.
    static func withBlkback(_ body: (_ state: String) async throws -> Void) async throws {
        var template = Array("/tmp/xensplit-conformance-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw JUnitReaderError(description: "mkdtemp: errno \(errno)") }
        let state = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: state) }
        for name in ["rw.img", "ro.img"] {
            #expect(FileManager.default.createFile(atPath: state + "/" + name, contents: nil))
            #expect(truncate(state + "/" + name, 16384 * 512) == 0)
        }
        let hypervisor = try TestCommand.spawn(binary, ["hypervisor", "--state-dir", state])
        defer {
            hypervisor.signal(SIGTERM)
            hypervisor.wait()
        }
        for _ in 0 ..< 2000 where !FileManager.default.fileExists(atPath: state + "/xenstored.socket") {
            try await Task.sleep(for: .milliseconds(10))
        }
        let create = try TestCommand.run(binary, ["domain", "create", "guest", "--state-dir", state,
                                                  "--disk", "vdev=xvda,access=rw,target=\(state)/rw.img",
                                                  "--disk", "vdev=xvdb,access=ro,target=\(state)/ro.img"])
        try #require(create.status == 0, "domain create: \(create.stderr)")
        let blkback = try TestCommand.spawn(binary, ["blkback", "--platform", "local", "--state-dir", state,
                                                     "--workers", "1", "--io-workers", "1"])
        defer {
            blkback.signal(SIGTERM)
            blkback.wait()
        }
        try await body(state)
    }

    static func conformance(_ state: String, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let all = ["conformance", "--role", "backend", "--device", "vbd", "--platform", "local", "--state-dir", state] + arguments
        return try await offThePool { try TestCommand.run(binary, all) }
    }

    @Test("every backend-role vbd clause matches expected.tsv for ours-blkback; the JUnit report, read by junitparser, says so clause by clause")
    func matchesExpectations() async throws {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        let inScope = ConformanceScope(role: .backend, device: .vbd).clauses(of: catalog)
        try await Self.withBlkback { state in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, ["--target", "guest/xvda", "--expect", "ours-blkback",
                                                         "--format", "junit", "--output", junit])
            #expect(run.status == 0, "conformance: \(run.stderr)")
            let document = try JUnitReader.read(junit)
            // Every clause in scope was reported, once, under its area.
            #expect(document.cases.map(\.name).sorted() == inScope.map(\.id).sorted())
            for testcase in document.cases {
                let clause = try #require(catalog.clause(testcase.name))
                #expect(testcase.suite == clause.area && testcase.classname == "conformance.\(clause.area)")
                let expected = try #require(expectations.entry(clause: clause.id, target: "ours-blkback"), "\(clause.id) has no expectation")
                // A pass is a passed testcase; an expected gap is skipped with its reason.
                #expect(testcase.result == (expected.outcome == .pass ? "passed" : "skipped"), "\(clause.id): \(testcase)")
                if expected.outcome != .pass {
                    #expect(testcase.message == "\(expected.outcome.rawValue): \(expected.reason) \(expected.issue)")
                }
            }
            #expect(document.totals.values.map(\.failures).reduce(0, +) == 0)

            // The read-only disk: the clause that needs one applies and passes there.
            let readOnly = try await Self.conformance(state, ["--target", "guest/xvdb", "--expect", "ours-blkback-readonly",
                                                              "--clauses", "BLKIF-BE-026", "--format", "json"])
            #expect(readOnly.status == 0, "read-only run: \(readOnly.stdout) \(readOnly.stderr)")
            let json = try JSONSerialization.jsonObject(with: Data(readOnly.stdout.utf8)) as? [String: Any]
            let results = json?["results"] as? [[String: Any]]
            #expect(results?.count == 1 && results?.first?["outcome"] as? String == "pass", "\(readOnly.stdout)")
        }
    }

    @Test("a deviation from expected.tsv fails the run with exit status 1 and a JUnit failure naming it")
    func deviationFails() async throws {
        // A copy of the clause files whose expectations claim a clause ours passes fails.
        let source = try ClauseCatalog.defaultDirectory()
        let copy = NSTemporaryDirectory() + "xensplit-clauses-\(getpid())"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: source, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let expected = try String(contentsOfFile: copy + "/expected.tsv", encoding: .utf8)
        let lied = expected.replacingOccurrences(of: "BLKIF-BE-045\tours-blkback\tpass\t-\t-",
                                                 with: "BLKIF-BE-045\tours-blkback\tfail\tclaimed for the test\t[conformance]")
        try #require(lied != expected)
        try lied.write(toFile: copy + "/expected.tsv", atomically: true, encoding: .utf8)
        try await Self.withBlkback { state in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, ["--target", "guest/51712", "--expect", "ours-blkback", "--clause-dir", copy,
                                                         "--clauses", "BLKIF-BE-04[45]", "--format", "junit", "--output", junit])
            #expect(run.status == 1)
            let document = try JUnitReader.read(junit)
            #expect(document.cases.map(\.name) == ["BLKIF-BE-044", "BLKIF-BE-045"])
            #expect(document.cases.map(\.result) == ["passed", "failure"])
            #expect(document.cases.last?.message == "expected fail, got pass")
        }
    }
}
