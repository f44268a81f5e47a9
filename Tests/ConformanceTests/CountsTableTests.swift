import Foundation
import Testing
@testable import Conformance

/// The table of counts in Protocols/conformance/README.md, and its copy in the top-level
/// README.md, is what the files say.
@Suite struct CountsTableTests {
    static let targets = ["ours-blkback", "ours-blkfront", "ours-netback", "ours-netfront", "c-peer", "linux-xen-blkback", "linux-xen-netback", "linux-xen-blkfront", "linux-xen-netfront"]

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

    @Test(arguments: ["README.md", "../../README.md"])
    func theReadmeTableMatchesTheFiles(readme: String) throws {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        let text = try String(contentsOfFile: directory + "/" + readme, encoding: .utf8)
        let header = "| area | clauses | negative | " + Self.targets.joined(separator: " | ") + " |"
        let lines = text.split(separator: "\n").map(String.init)
        let start = try #require(lines.firstIndex(of: header), "\(readme) has no counts table")
        let table = lines[(start + 2)...].prefix { $0.hasPrefix("| ") }
        #expect(Array(table) == Self.rows(catalog, expectations), "expected:\n\(Self.rows(catalog, expectations).joined(separator: "\n"))")
    }
}
