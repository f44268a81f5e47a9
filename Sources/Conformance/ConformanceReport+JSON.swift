import Foundation

extension ConformanceReport {
    struct JSONReport: Codable {
        struct Result: Codable {
            let id: String
            let area: String
            let role: ClauseRole
            let kind: ClauseKind
            let outcome: ClauseOutcome
            let evidence: String
            let seconds: Double
            let expected: ClauseOutcome?
            let problem: String?
        }

        let target: String
        let role: ClauseRole
        let device: ConformanceDevice
        let expect: String?
        let counts: [String: Int]
        let failed: Bool
        let results: [Result]
    }

    /// The whole report as one JSON object (target, counts, one entry per clause).
    public var json: String {
        let report = JSONReport(
            target: target, role: role, device: device, expect: expect,
            counts: Dictionary(uniqueKeysWithValues: ClauseOutcome.allCases.map { ($0.rawValue, count($0)) }),
            failed: failed,
            results: results.map {
                JSONReport.Result(id: $0.clause.id, area: $0.clause.area, role: $0.clause.role, kind: $0.clause.kind,
                                  outcome: $0.outcome, evidence: $0.evidence, seconds: $0.seconds,
                                  expected: $0.expected?.outcome, problem: $0.problem)
            })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Encoding plain strings, numbers and enums cannot fail.
        return String(decoding: (try? encoder.encode(report)) ?? Data(), as: UTF8.self) + "\n"
    }
}
