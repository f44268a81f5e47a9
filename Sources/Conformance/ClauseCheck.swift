/// What a check observed: the outcome and the evidence for it (what was seen).
public struct ClauseVerdict: Sendable, Hashable {
    public let outcome: ClauseOutcome
    public let evidence: String

    public init(_ outcome: ClauseOutcome, _ evidence: String) {
        self.outcome = outcome
        self.evidence = evidence
    }

    public static func pass(_ evidence: String) -> ClauseVerdict { ClauseVerdict(.pass, evidence) }
    public static func fail(_ evidence: String) -> ClauseVerdict { ClauseVerdict(.fail, evidence) }
    public static func notApplicable(_ evidence: String) -> ClauseVerdict { ClauseVerdict(.notApplicable, evidence) }

    /// Pass when `condition` holds, else fail; the evidence either way.
    public static func expect(_ condition: Bool, _ evidence: String) -> ClauseVerdict {
        condition ? .pass(evidence) : .fail(evidence)
    }
}

/// The peer a run plays against the target, as the runner sees it.
public protocol ConformancePeer: AnyObject, Sendable {
    /// The nodes of the target's own device directory now (feature conditions are read
    /// against them).
    func targetNodes() async throws -> [String: String]
    /// Told the clause about to run, for evidence that names an earlier one.
    func willRun(_ clause: String)
}

extension ConformancePeer {
    public func willRun(_ clause: String) {}
}

/// The executable check of one clause, run against a peer of type `Peer`. A check that
/// throws fails its clause with the error as evidence.
public struct ClauseCheck<Peer: ConformancePeer>: Sendable {
    public let id: String
    public let run: @Sendable (Peer) async throws -> ClauseVerdict

    public init(_ id: String, _ run: @escaping @Sendable (Peer) async throws -> ClauseVerdict) {
        self.id = id
        self.run = run
    }
}

/// Thrown by a check whose precondition this run was not given (no user side of the
/// frontend, say): the runner reports the clause not executed, with `reason`, instead of
/// failed. Thrown before the check touches the target.
public struct CheckCannotRun: Error, Sendable, CustomStringConvertible {
    public let reason: String

    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}

/// Why a clause whose pass condition reads "on platforms that report a page still mapped"
/// is not applicable on this one (Linux's gntalloc defers the end of such a grant instead).
let stillMappedUnseen = "this platform's grant table cannot report a page the backend still maps (Linux's gntalloc defers ending it instead of refusing)"
