import Foundation
import Testing
@testable import Conformance

/// Protocols/conformance/README.md's table of counts is what the files say.
@Suite struct CountsTableTests {
    static let targets = ["ours-blkback", "ours-blkfront", "c-peer", "linux-xen-blkback", "linux-xen-netback", "linux-xen-blkfront"]

    /// The table's rows as the files make them.
    static func rows(_ catalog: ClauseCatalog, _ expectations: Expectations) -> [String] {
        catalog.areas.map { area in
            let clauses = catalog.clauses.filter { $0.area == area }
            let negative = clauses.filter { $0.kind == .negative }.count
            let cells = targets.map { target -> String in
                let outcomes = clauses.compactMap { expectations.entry(clause: $0.id, target: target)?.outcome }
                guard !outcomes.isEmpty else { return "-" }
                return ClauseOutcome.allCases.map { outcome in String(outcomes.filter { $0 == outcome }.count) }.joined(separator: " / ")
            }
            return "| \(area) | \(clauses.count) | \(negative) | " + cells.joined(separator: " | ") + " |"
        }
    }

    @Test func theReadmeTableMatchesTheFiles() throws {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        let readme = try String(contentsOfFile: directory + "/README.md", encoding: .utf8)
        let header = "| area | clauses | negative | " + Self.targets.joined(separator: " | ") + " |"
        let lines = readme.split(separator: "\n").map(String.init)
        let start = try #require(lines.firstIndex(of: header), "README.md has no counts table")
        let table = lines[(start + 2)...].prefix { $0.hasPrefix("| ") }
        #expect(Array(table) == Self.rows(catalog, expectations), "expected:\n\(Self.rows(catalog, expectations).joined(separator: "\n"))")
    }
}
