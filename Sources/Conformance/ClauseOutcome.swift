/// What running a clause against a target gave.
public enum ClauseOutcome: String, Sendable, CaseIterable, Codable {
    /// The pass condition was observed.
    case pass
    /// It was not; the evidence says what was seen instead.
    case fail
    /// The target does not offer the feature the clause needs.
    case notApplicable = "not-applicable"
    /// No check ran: none is registered for the clause yet, or its setup could not be made.
    case notExecuted = "not-executed"
}
