/// Runs every clause in scope against a peer, one after the other, and compares the
/// outcomes with the expectations of a target.
public struct ConformanceRunner<Peer: ConformancePeer>: Sendable {
    public let catalog: ClauseCatalog
    /// Checks by clause ID.
    public let checks: [String: ClauseCheck<Peer>]

    /// Fails if a check names a clause no file defines (or two checks name one clause).
    public init(catalog: ClauseCatalog, checks: [ClauseCheck<Peer>]) throws(ConformanceError) {
        var byID: [String: ClauseCheck<Peer>] = [:]
        for check in checks {
            guard catalog.clause(check.id) != nil else { throw .unknownClause(check.id) }
            guard byID.updateValue(check, forKey: check.id) == nil else { throw .duplicateCheck(check.id) }
        }
        self.catalog = catalog
        self.checks = byID
    }

    /// Runs the clauses of `scope` against `peer`. A clause without a check is reported
    /// not executed; one whose feature the target does not offer, not applicable, without
    /// running its check. `progress` sees each result as it comes.
    public func run(scope: ConformanceScope, peer: Peer, target: String, expectations: Expectations?, expect: String?,
                    progress: @Sendable (ClauseResult) -> Void = { _ in }) async -> ConformanceReport {
        var results: [ClauseResult] = []
        for clause in scope.clauses(of: catalog) {
            let clock = ContinuousClock()
            let start = clock.now
            let verdict = await verdict(clause, peer: peer)
            let entry = expect.flatMap { expectations?.entry(clause: clause.id, target: $0) }
            let elapsed = clock.now - start
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let result = ClauseResult(clause: clause, outcome: verdict.outcome, evidence: verdict.evidence, seconds: seconds,
                                      expected: entry, compared: expect != nil)
            progress(result)
            results.append(result)
        }
        return ConformanceReport(target: target, role: scope.role, device: scope.device, expect: expect, results: results)
    }

    func verdict(_ clause: Clause, peer: Peer) async -> ClauseVerdict {
        guard let check = checks[clause.id] else { return ClauseVerdict(.notExecuted, "no check is registered for \(clause.id)") }
        peer.willRun(clause.id)
        if let feature = clause.feature {
            do {
                let nodes = try await peer.targetNodes()
                guard feature.isOffered(by: nodes) else {
                    return .notApplicable("the target does not offer \(feature) (\(feature.key) reads \(nodes[feature.key] ?? "absent"))")
                }
            } catch {
                return .fail("reading the target's nodes for \(feature): \(error)")
            }
        }
        do { return try await check.run(peer) } catch let error as CheckCannotRun {
            return ClauseVerdict(.notExecuted, error.reason)
        } catch {
            return .fail("\(error)")
        }
    }
}

/// One clause's result, with what was expected of it.
public struct ClauseResult: Sendable {
    public let clause: Clause
    public let outcome: ClauseOutcome
    public let evidence: String
    public let seconds: Double
    /// The expectation recorded for the target, if any.
    public let expected: Expectations.Entry?
    /// Whether the run compares with expectations (`--expect`).
    public let compared: Bool

    /// What is wrong with this result, if anything: a deviation from the expectation when
    /// comparing, else a fail or a clause not executed.
    public var problem: String? {
        if compared {
            guard let expected else { return "no expectation recorded for \(clause.id) (outcome \(outcome.rawValue))" }
            return expected.outcome == outcome ? nil : "expected \(expected.outcome.rawValue), got \(outcome.rawValue)"
        }
        switch outcome {
        case .pass, .notApplicable: return nil
        case .fail: return "failed"
        case .notExecuted: return "not executed"
        }
    }
}
