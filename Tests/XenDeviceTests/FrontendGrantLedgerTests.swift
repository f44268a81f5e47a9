import Testing
import XenDevice
import XenPlatform
import XenTesting

/// Pages the backend still mapped when the frontend gave them back are ended once it
/// lets go, by the ledger's own retrying, with no further call from the frontend.
@Suite struct FrontendGrantLedgerTests {
    @Test func pagesTheBackendStillMappedAreEndedOnceItUnmaps() async throws {
        let hypervisor = try InProcessHypervisor()
        let guest = try hypervisor.createDomain(name: "guest")
        let frontend = try hypervisor.platform(for: guest)
        let backend = try hypervisor.platform(for: .dom0)
        let ledger = FrontendGrantLedger(grantTable: frontend.grantTable)
        let pages = try frontend.grantTable.share(pages: 2, with: .dom0, writable: true)
        ledger.granted(1)
        let mapping = try backend.grantMapper.map(pages.refs, from: guest, writable: true)
        ledger.giveBack([pages])
        // Still mapped: the grant cannot end, and nothing is lost count of.
        #expect(ledger.outstanding == 1)
        try backend.grantMapper.unmap(mapping)
        try await eventually("the ledger ended the grant after the unmap") { ledger.outstanding == 0 }
        #expect(throws: (any Error).self) { try backend.grantMapper.map(pages.refs, from: guest, writable: false) }
    }
}
