import Foundation

/// The rows of one of Protocols/conformance's tab-separated files: `#` lines and blank
/// lines skipped, the first other line the column names, every row exactly as many fields.
struct TabSeparatedFile {
    struct Row {
        /// 1-based line number, for errors.
        let line: Int
        let fields: [String]
    }

    let name: String
    let rows: [Row]

    init(path: String, columns: [String]) throws(ConformanceError) {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw .unreadable(path: path, errno: Int32((error as NSError).code))
        }
        try self.init(name: (path as NSString).lastPathComponent, text: text, columns: columns)
    }

    init(name: String, text: String, columns: [String]) throws(ConformanceError) {
        self.name = name
        var rows: [Row] = []
        var header: [String]?
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard header != nil else {
                guard fields == columns else {
                    throw .malformed(file: name, line: index + 1, reason: "columns are \(fields), expected \(columns)")
                }
                header = fields
                continue
            }
            guard fields.count == columns.count else {
                throw .malformed(file: name, line: index + 1, reason: "\(fields.count) fields, expected \(columns.count)")
            }
            guard fields.allSatisfy({ !$0.isEmpty }) else {
                throw .malformed(file: name, line: index + 1, reason: "an empty field (write - for none)")
            }
            rows.append(Row(line: index + 1, fields: fields))
        }
        guard header != nil else { throw .malformed(file: name, line: 0, reason: "no header line") }
        self.rows = rows
    }
}
