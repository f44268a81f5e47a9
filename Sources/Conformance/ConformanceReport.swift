/// The results of one run against one target.
public struct ConformanceReport: Sendable {
    /// The target as named on the command line (`guest/51712`).
    public let target: String
    public let role: ClauseRole
    public let device: ConformanceDevice
    /// The expectations target compared with (`--expect`), if any.
    public let expect: String?
    public let results: [ClauseResult]

    /// The results with a problem: deviations when comparing, else fails and clauses not
    /// executed. The run fails when there is any.
    public var problems: [ClauseResult] { results.filter { $0.problem != nil } }

    public var failed: Bool { !problems.isEmpty }

    /// Results per outcome.
    public func count(_ outcome: ClauseOutcome) -> Int { results.filter { $0.outcome == outcome }.count }

    /// The report formats of `--format`.
    public enum Format: String, Sendable, CaseIterable {
        case text, json, junit
    }

    public func rendered(_ format: Format) -> String {
        switch format {
        case .text: return text
        case .json: return json
        case .junit: return junit
        }
    }
}

extension ConformanceReport {
    /// One line per clause, then the counts and the verdict.
    public var text: String {
        var lines = ["conformance \(device.rawValue) \(role.rawValue) target=\(target)" + (expect.map { " expect=\($0)" } ?? "")]
        for r in results {
            var line = "\(r.outcome.rawValue.uppercased()) \(r.clause.id): \(r.evidence)"
            if let expected = r.expected, expected.outcome != .pass { line += " [expected \(expected.outcome.rawValue): \(expected.reason) \(expected.issue)]" }
            if let problem = r.problem { line += " <-- \(problem)" }
            lines.append(line)
        }
        let counts = ClauseOutcome.allCases.map { "\($0.rawValue)=\(count($0))" }.joined(separator: " ")
        lines.append("clauses=\(results.count) \(counts) problems=\(problems.count)")
        lines.append(failed ? "conformance: FAILED" : "conformance: ok")
        return lines.joined(separator: "\n") + "\n"
    }
}
