import Foundation
import XenTesting

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
