import Testing
@testable import Conformance

/// The netif clause files: their shape, and that every clause has an expectation for the
/// targets that run it.
@Suite("netif conformance clauses")
struct NetifClauseTests {
    @Test func theNetifFilesLoadWithTheirPrefixesAndRoles() throws {
        let catalog = try ClauseCatalog(directory: ClauseCatalog.defaultDirectory())
        let backend = catalog.clauses.filter { $0.area == "netif-backend" }
        let frontend = catalog.clauses.filter { $0.area == "netif-frontend" }
        #expect(backend.count >= 50 && frontend.count >= 25, "\(backend.count) backend, \(frontend.count) frontend clauses")
        #expect(backend.allSatisfy { $0.id.hasPrefix("NETIF-BE-") && $0.role == .backend && $0.source == "io/netif.h" })
        #expect(frontend.allSatisfy { $0.id.hasPrefix("NETIF-FE-") && $0.role == .frontend && $0.source == "io/netif.h" })
        #expect(backend.filter { $0.kind == .negative }.count >= 25)
        #expect(catalog.clause("NETIF-BE-060")?.feature == FeatureCondition(key: "multi-queue-max-queues", test: .above(1)))
        #expect(catalog.clause("NETIF-BE-070")?.feature == FeatureCondition(key: "feature-ctrl-ring", test: .offered))
    }

    @Test func everyVifClauseHasAnExpectationAndEveryBackendOneACheck() throws {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        for clause in ConformanceScope(role: .backend, device: .vif).clauses(of: catalog) {
            #expect(expectations.entry(clause: clause.id, target: "ours-netback") != nil, "\(clause.id) has no ours-netback row")
        }
        // Frontend role: a row for every clause in scope, not-executed exactly where no check is written.
        let frontendChecks = Set(NetifFrontendSuite.checks.map(\.id))
        for clause in ConformanceScope(role: .frontend, device: .vif).clauses(of: catalog) {
            let outcome = expectations.entry(clause: clause.id, target: "ours-netfront")?.outcome
            #expect(outcome != nil, "\(clause.id) has no ours-netfront row")
            #expect((outcome == .notExecuted) == !frontendChecks.contains(clause.id), "\(clause.id): \(outcome.map { "\($0)" } ?? "no row")")
        }
        // The runner refuses a check for a clause no file defines, so this also checks the IDs.
        let runner = try ConformanceRunner(catalog: catalog, checks: NetifBackendSuite.checks)
        let unchecked = catalog.clauses.filter { $0.area == "netif-backend" && runner.checks[$0.id] == nil }.map(\.id)
        #expect(unchecked.isEmpty, "no check for \(unchecked)")
    }
}
