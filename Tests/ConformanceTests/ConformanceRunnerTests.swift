import Foundation
import Testing
@testable import Conformance

/// A peer that is only a set of target nodes: the checks below decide their own verdicts.
final class NodesPeer: ConformancePeer {
    let nodes: [String: String]
    init(_ nodes: [String: String]) { self.nodes = nodes }
    func targetNodes() async throws -> [String: String] { nodes }
}

struct CheckFailed: Error, CustomStringConvertible {
    var description: String { "the peer could not write its ring" }
}

/// The runner's rules: scope, not executed, not applicable, expectations, and the three
/// report formats, JUnit read back by a JUnit library.
@Suite struct ConformanceRunnerTests {
    static let clauses = """
    id\trole\tkind\tsource\tfield\tfeature\trequirement\tpass
    RING-001\tboth\tpositive\tio/ring.h\tsring\t-\tA rule & more <here>.\tSeen.
    RING-002\tbackend\tnegative\tio/ring.h\treq_prod\t-\tNo overrun.\tRefused.
    RING-003\tbackend\tpositive\tio/ring.h\treq_event\tfeature-x\tNeeds x.\tSeen.
    RING-004\tbackend\tpositive\tio/ring.h\trsp_event\t-\tNo check yet.\tSeen.
    RING-005\tfrontend\tpositive\tio/ring.h\trsp_event\t-\tOther role.\tSeen.
    RING-006\tbackend\tpositive\tio/ring.h\trsp_prod\t-\tThrows.\tSeen.
    """

    static func runner() throws -> ConformanceRunner<NodesPeer> {
        let catalog = try ClauseCatalog(name: "ring.tsv", text: clauses)
        return try ConformanceRunner(catalog: catalog, checks: [
            ClauseCheck("RING-001") { _ in .pass("answered at byte 64") },
            ClauseCheck("RING-002") { _ in .fail("rsp_prod moved \"3\" slots") },
            ClauseCheck("RING-003") { _ in .pass("x served") },
            ClauseCheck("RING-005") { _ in .pass("never run: frontend role") },
            ClauseCheck("RING-006") { _ in throw CheckFailed() },
        ])
    }

    @Test func outcomesWithoutExpectations() async throws {
        let runner = try Self.runner()
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd), peer: NodesPeer([:]),
                                      target: "g/1", expectations: nil, expect: nil)
        #expect(report.results.map(\.clause.id) == ["RING-001", "RING-002", "RING-003", "RING-004", "RING-006"])
        #expect(report.results.map(\.outcome) == [.pass, .fail, .notApplicable, .notExecuted, .fail])
        #expect(report.results[2].evidence.contains("feature-x reads absent"))
        #expect(report.results[4].evidence == "the peer could not write its ring")
        #expect(report.problems.map(\.clause.id) == ["RING-002", "RING-004", "RING-006"])
        #expect(report.failed)
        #expect(report.text.hasSuffix("conformance: FAILED\n"))

        let offered = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: "RING-00[13]"),
                                       peer: NodesPeer(["feature-x": "1"]), target: "g/1", expectations: nil, expect: nil)
        #expect(offered.results.map(\.outcome) == [.pass, .pass])
        #expect(!offered.failed)
    }

    @Test("a check that throws CheckCannotRun is reported not executed with its reason, not failed")
    func cannotRunIsNotExecuted() async throws {
        let catalog = try ClauseCatalog(name: "ring.tsv", text: Self.clauses)
        let runner = try ConformanceRunner<NodesPeer>(catalog: catalog, checks: [
            ClauseCheck("RING-001") { _ in throw CheckCannotRun("no user side was given") },
            ClauseCheck("RING-006") { _ in throw CheckFailed() },
        ])
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: "RING-00[16]"), peer: NodesPeer([:]),
                                      target: "g/1", expectations: nil, expect: nil)
        #expect(report.results.map(\.outcome) == [.notExecuted, .fail])
        #expect(report.results[0].evidence == "no user side was given")
    }

    @Test("--kind narrows a run to the positive or the negative clauses, with the other filters")
    func kindNarrowsTheScope() async throws {
        let runner = try Self.runner()
        let negative = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, kind: .negative), peer: NodesPeer([:]),
                                        target: "g/1", expectations: nil, expect: nil)
        #expect(negative.results.map(\.clause.id) == ["RING-002"])
        let positive = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: "RING-00[12]", kind: .positive),
                                        peer: NodesPeer([:]), target: "g/1", expectations: nil, expect: nil)
        #expect(positive.results.map(\.clause.id) == ["RING-001"])
    }

    @Test func checksMustNameOneKnownClauseEach() throws {
        let catalog = try ClauseCatalog(name: "ring.tsv", text: Self.clauses)
        #expect(throws: ConformanceError.unknownClause("RING-099")) {
            try ConformanceRunner<NodesPeer>(catalog: catalog, checks: [ClauseCheck("RING-099") { _ in .pass("") }])
        }
        #expect(throws: ConformanceError.duplicateCheck("RING-001")) {
            try ConformanceRunner<NodesPeer>(catalog: catalog, checks: [ClauseCheck("RING-001") { _ in .pass("") },
                                                                        ClauseCheck("RING-001") { _ in .pass("") }])
        }
        // Every check of the block suite names a clause of the project's files.
        _ = try ConformanceRunner(catalog: ClauseCatalog(directory: ClauseCatalog.defaultDirectory()), checks: BlkifBackendSuite.checks)
    }

    @Test func deviationsFromExpectationsFailTheRun() async throws {
        let runner = try Self.runner()
        let header = "clause\ttarget\toutcome\treason\tissue\n"
        let rows = """
        RING-001\tours\tpass\t-\t-
        RING-002\tours\tfail\toverruns are served [sic]\t[blkback]
        RING-003\tours\tnot-applicable\tours offers no x\t[conformance]
        RING-004\tours\tnot-executed\tno check written yet\t[conformance]
        RING-006\tours\tpass\t-\t-
        """
        let expectations = try Expectations(text: header + rows + "\n", catalog: runner.catalog)
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd), peer: NodesPeer([:]),
                                      target: "g/1", expectations: expectations, expect: "ours")
        // Only the thrown check deviates: the known fail and the gap are expected.
        #expect(report.problems.map(\.clause.id) == ["RING-006"])
        #expect(report.problems.first?.problem == "expected pass, got fail")

        let unknown = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: "RING-001"),
                                       peer: NodesPeer([:]), target: "g/1", expectations: expectations, expect: "theirs")
        #expect(unknown.problems.first?.problem?.hasPrefix("no expectation recorded") == true)
    }

    @Test func reportsParseAsJSONAndAsJUnit() async throws {
        let runner = try Self.runner()
        let header = "clause\ttarget\toutcome\treason\tissue\n"
        let expectations = try Expectations(text: header + "RING-004\tours\tnot-executed\tno check\t[conformance]\n"
                                            + "RING-001\tours\tpass\t-\t-\n", catalog: runner.catalog)
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd), peer: NodesPeer([:]),
                                      target: "g/<1>", expectations: expectations, expect: "ours")

        let object = try JSONSerialization.jsonObject(with: Data(report.json.utf8)) as? [String: Any]
        #expect(object?["failed"] as? Bool == true)
        #expect((object?["results"] as? [[String: Any]])?.count == 5)
        #expect((object?["counts"] as? [String: Int])?["not-executed"] == 1)

        let path = NSTemporaryDirectory() + "conformance-junit-\(getpid()).xml"
        try report.junit.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let document = try JUnitReader.read(path)
        #expect(document.cases.map(\.name) == ["RING-001", "RING-002", "RING-003", "RING-004", "RING-006"])
        #expect(document.cases.allSatisfy { $0.classname == "conformance.ring" && $0.suite == "ring" })
        #expect(document.cases.map(\.result) == ["passed", "failure", "failure", "skipped", "failure"])
        #expect(document.cases[1].message == "no expectation recorded for RING-002 (outcome fail)")
        #expect(document.cases[3].message == "not-executed: no check [conformance]")
        #expect(document.totals["ring"] == JUnitReader.Totals(tests: 5, failures: 3, skipped: 1))
    }
}
