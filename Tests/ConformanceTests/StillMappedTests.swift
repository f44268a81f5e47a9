import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting
@testable import Conformance

/// A platform that is another one, except that its grant table cannot report a page the
/// grantee still maps, as Linux's gntalloc cannot.
final class GntallocLikePlatform: Platform, @unchecked Sendable {
    // SAFETY (@unchecked): both fields are immutable references to Sendable platforms.
    final class Table: GrantTable, @unchecked Sendable {
        let inner: any GrantTable
        init(_ inner: any GrantTable) { self.inner = inner }
        func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages {
            try inner.share(pages: count, with: grantee, writable: writable)
        }
        func endAccess(_ pages: SharedPages) throws(PlatformError) { try inner.endAccess(pages) }
        var reportsStillMapped: Bool { false }
    }

    let inner: any Platform
    let table: Table
    init(_ inner: any Platform) {
        self.inner = inner
        table = Table(inner.grantTable)
    }

    var domainID: DomainID { inner.domainID }
    var grantTable: any GrantTable { table }
    var grantMapper: any GrantMapper { inner.grantMapper }
    func openEventChannel() throws(PlatformError) -> any EventChannel { try inner.openEventChannel() }
    func connectXenStore() throws(PlatformError) -> XenStoreClient { try inner.connectXenStore() }
}

/// BLKIF-BE-025 and XENBUS-009 read "still mapped" off a refused end of access: on a
/// platform that cannot report it (real Xen's gntalloc) they are not applicable, and on
/// one that can they run and pass against our blkback.
@Suite("clauses that need a grant table reporting pages still mapped", .serialized)
struct StillMappedTests {
    static let clauses = "BLKIF-BE-025,XENBUS-009"

    static func run(_ state: String, wrap: Bool) async throws -> ConformanceReport {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let runner = try ConformanceRunner(catalog: catalog, checks: BlkifBackendSuite.checks)
        let local = try LocalPlatform(stateDirectory: state, domain: "guest")
        let guest: any Platform = wrap ? GntallocLikePlatform(local) : local
        let peer = try await BlkfrontPeer(platform: guest, frontendPath: "/local/domain/\(guest.domainID)/device/vbd/51712")
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: clauses), peer: peer,
                                      target: "guest/xvda", expectations: nil, expect: nil)
        await peer.close()
        return report
    }

    @Test("not applicable where the grant table cannot tell; passed where it can")
    func notApplicableWithoutStillMappedReports() async throws {
        try await BlkbackConformanceTests.withBlkback { state in
            let gntalloc = try await Self.run(state, wrap: true)
            #expect(gntalloc.results.map(\.clause.id) == ["BLKIF-BE-025", "XENBUS-009"])
            #expect(gntalloc.results.allSatisfy { $0.outcome == .notApplicable && $0.evidence.contains("gntalloc") },
                    "\(gntalloc.results.map { "\($0.clause.id) \($0.outcome): \($0.evidence)" })")
            let local = try await Self.run(state, wrap: false)
            #expect(local.results.allSatisfy { $0.outcome == .pass }, "\(local.results.map { "\($0.clause.id) \($0.outcome): \($0.evidence)" })")
        }
    }
}
