import Foundation
import Testing
import XenTesting
@testable import Conformance

/// Reads a JUnit XML file with python3's junitparser (Debian python3-junitparser), a real
/// JUnit library, and returns each testcase as the library sees it.
enum JUnitReader {
    struct Case: Decodable, Equatable {
        let suite: String
        let classname: String
        let name: String
        /// `passed`, `failure`, `skipped` or `error`.
        let result: String
        let message: String?
    }

    struct Totals: Decodable, Equatable {
        let tests: Int
        let failures: Int
        let skipped: Int
    }

    struct Document: Decodable {
        let cases: [Case]
        let totals: [String: Totals]
    }

    static let program = """
    import json, sys
    from junitparser import JUnitXml, Failure, Skipped, Error
    xml = JUnitXml.fromfile(sys.argv[1])
    suites = list(xml) if hasattr(xml, '__iter__') and not hasattr(xml, 'result') else [xml]
    cases, totals = [], {}
    for suite in suites:
        totals[suite.name] = {"tests": suite.tests, "failures": suite.failures, "skipped": suite.skipped}
        for case in suite:
            kind, message = "passed", None
            for r in case.result:
                kind = {Failure: "failure", Skipped: "skipped", Error: "error"}.get(type(r), "other")
                message = r.message
            cases.append({"suite": suite.name, "classname": case.classname, "name": case.name,
                          "result": kind, "message": message})
    json.dump({"cases": cases, "totals": totals}, sys.stdout)
    """

    static func read(_ path: String) throws -> Document {
        let (status, out, err) = try TestCommand.run("/usr/bin/python3", ["-c", program, path])
        guard status == 0 else { throw JUnitReaderError(description: "junitparser on \(path): status \(status): \(err)") }
        return try JSONDecoder().decode(Document.self, from: Data(out.utf8))
    }
}

struct JUnitReaderError: Error, CustomStringConvertible {
    let description: String
}

extension JUnitReader {
    /// Checks the JUnit report of a run with `--expect target` against expected.tsv: one
    /// case per clause of `scope`, passed where a pass is expected and skipped otherwise,
    /// no failure. Returns how many clauses had a check (expected other than not-executed).
    static func checkAgainstExpectations(_ junit: String, target: String, scope: ConformanceScope) throws -> Int {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        let document = try read(junit)
        #expect(document.cases.map(\.name).sorted() == scope.clauses(of: catalog).map(\.id).sorted())
        var executed = 0
        for testcase in document.cases {
            let expected = try #require(expectations.entry(clause: testcase.name, target: target), "\(testcase.name) has no expectation")
            #expect(testcase.result == (expected.outcome == .pass ? "passed" : "skipped"), "\(testcase.name): \(testcase)")
            if expected.outcome != .notExecuted { executed += 1 }
        }
        #expect(document.totals.values.map(\.failures).reduce(0, +) == 0)
        return executed
    }
}
