/// What went wrong loading clauses or expectations, or setting up a run.
public enum ConformanceError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A clause or expectation file could not be read.
    case unreadable(path: String, errno: Int32)
    /// A row of a file is malformed: the file, its 1-based line and what is wrong.
    case malformed(file: String, line: Int, reason: String)
    /// The same clause ID appears twice (in any of the files).
    case duplicateID(String, file: String, line: Int)
    /// No directory holding the clause files was found.
    case clauseDirectoryNotFound(searched: [String])
    /// A check names a clause that is in no file.
    case unknownClause(String)
    /// Two checks are registered for one clause.
    case duplicateCheck(String)

    public var description: String {
        switch self {
        case let .unreadable(path, errno): return "cannot read \(path) (errno \(errno))"
        case let .malformed(file, line, reason): return "\(file):\(line): \(reason)"
        case let .duplicateID(id, file, line): return "\(file):\(line): clause \(id) is defined twice"
        case let .clauseDirectoryNotFound(searched): return "no Protocols/conformance directory (looked in \(searched.joined(separator: ", ")))"
        case let .unknownClause(id): return "a check is registered for \(id), which no clause file defines"
        case let .duplicateCheck(id): return "two checks are registered for \(id)"
        }
    }
}
