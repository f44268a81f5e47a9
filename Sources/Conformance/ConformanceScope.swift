import Glibc

/// The device types the suite knows and the clause areas each brings.
public enum ConformanceDevice: String, Sendable, CaseIterable, Codable {
    case vbd, vif

    /// The areas whose clauses apply to this device, in either role.
    public var areas: [String] {
        switch self {
        case .vbd: return ["ring", "xenbus", "blkif-backend", "blkif-frontend"]
        case .vif: return ["ring", "xenbus", "netif-backend", "netif-frontend"]
        }
    }
}

/// Which clauses a run covers: the target's role, its device's areas, the IDs matching
/// any of the globs (`BLKIF-BE-04*,RING-*`) and, if given, one kind (so a run can put the
/// negative clauses, which may upset a target, after everything else).
public struct ConformanceScope: Sendable {
    /// The role the target plays (the suite plays the other).
    public let role: ClauseRole
    public let device: ConformanceDevice
    /// fnmatch(3) patterns on clause IDs; empty is every clause.
    public let globs: [String]
    /// Only clauses of this kind; nil is both.
    public let kind: ClauseKind?

    public init(role: ClauseRole, device: ConformanceDevice, clauses: String? = nil, kind: ClauseKind? = nil) {
        self.role = role
        self.device = device
        globs = clauses.map { $0.split(separator: ",").map(String.init) } ?? []
        self.kind = kind
    }

    public func contains(_ clause: Clause) -> Bool {
        clause.role.binds(role) && device.areas.contains(clause.area) && (kind == nil || clause.kind == kind)
            && (globs.isEmpty || globs.contains { fnmatch($0, clause.id, 0) == 0 })
    }

    /// The clauses of `catalog` in scope, in catalog order.
    public func clauses(of catalog: ClauseCatalog) -> [Clause] { catalog.clauses.filter(contains) }
}
