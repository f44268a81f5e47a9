import Foundation
import Testing
import XenLocal
import XenPlatform

/// `domain usage` counts what each domain holds, so a leak check can compare figures.
@Suite struct DomainUsageTests {
    @Test("usage follows share, map, copy buffers and ports, and returns to where it was")
    func usageFollowsResources() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let before = try dom0.domainUsage()
        #expect(before[id]?.grantedPages == 0)
        #expect(before[id]?.pinnedGrants == 0)

        let pages = try guest.grantTable.share(pages: 3, with: 0, writable: true)
        let mapping = try dom0.grantMapper.map(Array(pages.refs.prefix(2)), from: id, writable: false)
        let buffer = try dom0.grantMapper.registerCopyBuffer(pages: 5)
        let guestPorts = try guest.openEventChannel()
        let port = try guestPorts.allocateUnbound(remote: 0)
        let during = try dom0.domainUsage()
        #expect(during[id]?.grantedPages == 3)
        #expect(during[id]?.pinnedGrants == 2)
        #expect(during[id]?.ports == (before[id]?.ports ?? 0) + 1)
        #expect(during[0]?.mappingsHeld == (before[0]?.mappingsHeld ?? 0) + 1)
        #expect(during[0]?.copyBufferPages == (before[0]?.copyBufferPages ?? 0) + 5)

        try guestPorts.unbind(port)
        guestPorts.close()
        try dom0.grantMapper.unregisterCopyBuffer(buffer)
        try dom0.grantMapper.unmap(mapping)
        try guest.grantTable.endAccess(pages)
        let after = try dom0.domainUsage()
        for domain in [DomainID(0), id] {
            #expect(after[domain]?.ports == before[domain]?.ports)
            #expect(after[domain]?.grantedPages == before[domain]?.grantedPages)
            #expect(after[domain]?.pinnedGrants == before[domain]?.pinnedGrants)
            #expect(after[domain]?.mappingsHeld == before[domain]?.mappingsHeld)
            #expect(after[domain]?.copyBufferPages == before[domain]?.copyBufferPages)
        }
    }

    @Test("a domU may not read usage")
    func domUIsRefused() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (_, guest) = try await fx.createDomain("guest")
        #expect(throws: PlatformError.self) { _ = try guest.domainUsage() }
    }
}
