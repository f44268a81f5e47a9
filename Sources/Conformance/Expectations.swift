/// Protocols/conformance/expected.tsv: the outcome the project expects of each clause for
/// each target it runs, with the reason and issue of every outcome other than `pass`.
public struct Expectations: Sendable {
    public static let columns = ["clause", "target", "outcome", "reason", "issue"]

    public struct Entry: Sendable, Hashable {
        public let clause: String
        public let target: String
        public let outcome: ClauseOutcome
        /// Why, for anything but `pass` (`-` for pass).
        public let reason: String
        /// The issue the gap belongs to (`[conformance]`), `-` for pass.
        public let issue: String
    }

    /// Entries by target, then clause.
    public let entries: [String: [String: Entry]]

    /// The targets with at least one row.
    public var targets: [String] { entries.keys.sorted() }

    /// The expected outcome of `clause` for `target`, if recorded.
    public func entry(clause: String, target: String) -> Entry? { entries[target]?[clause] }

    public init(path: String, catalog: ClauseCatalog) throws(ConformanceError) {
        try self.init(file: TabSeparatedFile(path: path, columns: Self.columns), catalog: catalog)
    }

    public init(name: String = "expected.tsv", text: String, catalog: ClauseCatalog) throws(ConformanceError) {
        try self.init(file: TabSeparatedFile(name: name, text: text, columns: Self.columns), catalog: catalog)
    }

    init(file: TabSeparatedFile, catalog: ClauseCatalog) throws(ConformanceError) {
        var entries: [String: [String: Entry]] = [:]
        let known = Set(catalog.clauses.map(\.id))
        for row in file.rows {
            let f = row.fields
            func bad(_ reason: String) -> ConformanceError { .malformed(file: file.name, line: row.line, reason: reason) }
            guard known.contains(f[0]) else { throw bad("clause \(f[0]) is in no clause file") }
            guard let outcome = ClauseOutcome(rawValue: f[2]) else { throw bad("outcome \(f[2]) is not one of \(ClauseOutcome.allCases.map(\.rawValue))") }
            // Anything short of a pass says why and where it will be dealt with.
            guard outcome == .pass || (f[3] != "-" && f[4] != "-") else { throw bad("\(f[0]) expected \(f[2]) needs a reason and an issue") }
            guard entries[f[1], default: [:]][f[0]] == nil else { throw bad("\(f[0]) has two rows for target \(f[1])") }
            entries[f[1], default: [:]][f[0]] = Entry(clause: f[0], target: f[1], outcome: outcome, reason: f[3], issue: f[4])
        }
        self.entries = entries
    }
}
