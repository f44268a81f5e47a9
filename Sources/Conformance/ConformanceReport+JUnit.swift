extension ConformanceReport {
    /// JUnit XML: one testsuite per area, one testcase per clause (classname
    /// `conformance.<area>`, name the clause ID). A result with a problem is a `failure`;
    /// a clause not applicable, or an expected gap that is not a problem, is `skipped`
    /// with why; the evidence is the testcase's `system-out`.
    public var junit: String {
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        let total = results.map(\.seconds).reduce(0, +)
        xml += "<testsuites name=\"\(escape("xensplit conformance \(device.rawValue) \(role.rawValue) \(target)"))\" tests=\"\(results.count)\" failures=\"\(problems.count)\" time=\"\(seconds(total))\">\n"
        var areas: [String] = []
        for r in results where !areas.contains(r.clause.area) { areas.append(r.clause.area) }
        for area in areas {
            let inArea = results.filter { $0.clause.area == area }
            let failures = inArea.filter { $0.problem != nil }.count
            let skipped = inArea.filter { $0.problem == nil && $0.outcome != .pass }.count
            xml += "  <testsuite name=\"\(escape(area))\" tests=\"\(inArea.count)\" failures=\"\(failures)\" errors=\"0\" skipped=\"\(skipped)\" time=\"\(seconds(inArea.map(\.seconds).reduce(0, +)))\">\n"
            for r in inArea {
                xml += "    <testcase classname=\"conformance.\(escape(area))\" name=\"\(escape(r.clause.id))\" time=\"\(seconds(r.seconds))\">\n"
                if let problem = r.problem {
                    xml += "      <failure message=\"\(escape(problem))\" type=\"\(r.outcome.rawValue)\">\(escape(r.evidence))</failure>\n"
                } else if r.outcome != .pass {
                    let why = r.expected.map { "\($0.reason) \($0.issue)" } ?? r.evidence
                    xml += "      <skipped message=\"\(escape("\(r.outcome.rawValue): \(why)"))\"/>\n"
                }
                xml += "      <system-out>\(escape("\(r.clause.kind.rawValue) \(r.clause.source) \(r.clause.field): \(r.clause.requirement)\noutcome \(r.outcome.rawValue): \(r.evidence)"))</system-out>\n"
                xml += "    </testcase>\n"
            }
            xml += "  </testsuite>\n"
        }
        xml += "</testsuites>\n"
        return xml
    }

    private func seconds(_ value: Double) -> String {
        let millis = Int((value * 1000).rounded())
        let fraction = String(millis % 1000)
        return "\(millis / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }

    /// XML text and attribute escaping; control characters other than tab and newline
    /// (never valid in XML 1.0) become U+FFFD.
    private func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            case "\t", "\n": out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || (0xFFFE...0xFFFF).contains(scalar.value): out += "\u{FFFD}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
