/// The implementation a clause binds (Protocols/conformance/README.md, column `role`).
public enum ClauseRole: String, Sendable, CaseIterable, Codable {
    case frontend, backend, both

    /// Whether a clause of this role is in scope when the target plays `role`.
    public func binds(_ role: ClauseRole) -> Bool { self == .both || self == role }
}

/// Whether the peer behaves (`positive`) or lies (`negative`).
public enum ClauseKind: String, Sendable, CaseIterable, Codable {
    case positive, negative
}

/// One conformance clause: a rule from a Xen public header in our words, who it binds
/// and what a scripted peer observes to call it passed.
public struct Clause: Sendable, Hashable {
    /// Stable ID, `AREA-NNN`.
    public let id: String
    /// The file it comes from, without `.tsv` (`ring`, `blkif-backend`).
    public let area: String
    public let role: ClauseRole
    public let kind: ClauseKind
    /// The header it cites (`io/blkif.h`).
    public let source: String
    /// The key, field, macro or state it is about.
    public let field: String
    /// The feature the target must offer for the clause to apply; nil for every target.
    public let feature: FeatureCondition?
    public let requirement: String
    /// The observable pass condition.
    public let pass: String

    public init(id: String, area: String, role: ClauseRole, kind: ClauseKind, source: String, field: String,
                feature: FeatureCondition?, requirement: String, pass: String) {
        self.id = id
        self.area = area
        self.role = role
        self.kind = kind
        self.source = source
        self.field = field
        self.feature = feature
        self.requirement = requirement
        self.pass = pass
    }

    /// Whether `id` has the form `AREA-NNN` (upper-case words joined by `-`, three digits).
    public static func isValidID(_ id: String) -> Bool {
        let parts = id.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 2, let number = parts.last, number.count == 3, number.allSatisfy(\.isASCIIDigitCharacter) else {
            return false
        }
        return parts.dropLast().allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isUppercase } }
    }
}

extension Character {
    var isASCIIDigitCharacter: Bool { isASCII && isWholeNumber }
}
