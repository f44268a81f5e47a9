import Foundation

/// Every clause of Protocols/conformance, loaded from its per-area files.
public struct ClauseCatalog: Sendable {
    /// The columns of a clause file, in order.
    public static let columns = ["id", "role", "kind", "source", "field", "feature", "requirement", "pass"]
    /// The file of expectations, which is not a clause file.
    public static let expectationsFile = "expected.tsv"

    /// Every clause, in file order, files in name order.
    public let clauses: [Clause]

    public init(clauses: [Clause]) { self.clauses = clauses }

    /// The clause with `id`, if any.
    public func clause(_ id: String) -> Clause? { clauses.first { $0.id == id } }

    /// The areas, in order of first appearance.
    public var areas: [String] {
        var seen: [String] = []
        for clause in clauses where !seen.contains(clause.area) { seen.append(clause.area) }
        return seen
    }

    /// Loads every `*.tsv` of `directory` but the expectations.
    public init(directory: String) throws(ConformanceError) {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw .unreadable(path: directory, errno: Int32((error as NSError).code))
        }
        var all: [Clause] = []
        var seen = Set<String>()
        for name in names.sorted() where name.hasSuffix(".tsv") && name != Self.expectationsFile {
            let file = try TabSeparatedFile(path: directory + "/" + name, columns: Self.columns)
            for clause in try Self.parse(file) {
                guard seen.insert(clause.id).inserted else {
                    let line = file.rows.first { $0.fields[0] == clause.id }?.line ?? 0
                    throw .duplicateID(clause.id, file: name, line: line)
                }
                all.append(clause)
            }
        }
        clauses = all
    }

    /// Parses one area's text (`name` is the file name, `area.tsv`).
    public init(name: String, text: String) throws(ConformanceError) {
        let file = try TabSeparatedFile(name: name, text: text, columns: Self.columns)
        let clauses = try Self.parse(file)
        var seen = Set<String>()
        for clause in clauses where !seen.insert(clause.id).inserted {
            throw .duplicateID(clause.id, file: name, line: file.rows.first { $0.fields[0] == clause.id }?.line ?? 0)
        }
        self.clauses = clauses
    }

    static func parse(_ file: TabSeparatedFile) throws(ConformanceError) -> [Clause] {
        let area = String(file.name.dropLast(".tsv".count))
        var clauses: [Clause] = []
        for row in file.rows {
            let f = row.fields
            func bad(_ reason: String) -> ConformanceError { .malformed(file: file.name, line: row.line, reason: reason) }
            guard Clause.isValidID(f[0]) else { throw bad("clause ID \(f[0]) is not AREA-NNN") }
            guard let role = ClauseRole(rawValue: f[1]) else { throw bad("role \(f[1]) is not frontend, backend or both") }
            guard let kind = ClauseKind(rawValue: f[2]) else { throw bad("kind \(f[2]) is not positive or negative") }
            let feature: FeatureCondition?
            do { feature = try FeatureCondition.parse(f[5]) } catch { throw bad("feature \(f[5]): \(error)") }
            clauses.append(Clause(id: f[0], area: area, role: role, kind: kind, source: f[3], field: f[4], feature: feature,
                                  requirement: f[6], pass: f[7]))
        }
        return clauses
    }

    /// Protocols/conformance of the package this binary was built from: found upwards of
    /// the running executable, else next to this source file.
    public static func defaultDirectory(filePath: String = #filePath) throws(ConformanceError) -> String {
        var searched: [String] = []
        func holds(_ dir: URL) -> String? {
            let candidate = dir.appendingPathComponent("Protocols/conformance").path
            searched.append(candidate)
            return FileManager.default.fileExists(atPath: candidate + "/" + expectationsFile) ? candidate : nil
        }
        if let running = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            var dir = URL(fileURLWithPath: running).resolvingSymlinksInPath().deletingLastPathComponent()
            while dir.path != "/" {
                if let found = holds(dir) { return found }
                dir = dir.deletingLastPathComponent()
            }
        }
        // #filePath is <repo>/Sources/Conformance/<this file>.
        let root = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        if let found = holds(root) { return found }
        throw .clauseDirectoryNotFound(searched: searched)
    }
}
