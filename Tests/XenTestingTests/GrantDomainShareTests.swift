import SharedMemory
import Testing
import XenPlatform

/// GrantDomain, the one grant rule of the local hypervisor and the in-process double:
/// a guest may write v1 entries in its own table, and `share` must not hand those out.
@Suite struct GrantDomainShareTests {
    @Test func shareSkipsEntriesTheDomainWroteItselfAndLeavesThemAlone() throws {
        let domain = try GrantDomain(id: 5, poolPages: 16, grantEntries: 32, label: "share-test")
        let first = GrantRef(GrantEntryTable.reservedEntries)
        // The guest's own entries: the first free ref, and the third.
        domain.grants.grant(first, to: .dom0, frame: 9, readOnly: true)
        domain.grants.grant(first + 2, to: .dom0, frame: 10, readOnly: false)
        let (_, refs) = try domain.share(count: 3, with: .dom0, writable: true)
        #expect(refs == [first + 1, first + 3, first + 4], "free entries only, in order")
        #expect(domain.grants.flags(first) == [.permitAccess, .readOnly], "the guest's entry is untouched")
        #expect(domain.grants.flags(first + 2) == [.permitAccess])
        // Once the share ends its entries are clear and can be handed out again.
        let (firstFrame, _) = (try domain.share(count: 1, with: .dom0, writable: false))
        #expect(domain.grants.flags(first + 5) == [.permitAccess, .readOnly])
        try domain.endAccess(first: firstFrame)
        #expect(domain.grants.flags(first + 5).isEmpty)
        let (_, again) = try domain.share(count: 1, with: .dom0, writable: true)
        #expect(again == [first + 5])
    }

    @Test func aTableFullOfTheGuestsOwnEntriesIsENOSPC() throws {
        let domain = try GrantDomain(id: 6, poolPages: 16, grantEntries: 10, label: "share-test")
        let first = GrantRef(GrantEntryTable.reservedEntries)
        domain.grants.grant(first, to: .dom0, frame: 1, readOnly: true)
        domain.grants.grant(first + 1, to: .dom0, frame: 2, readOnly: true)
        #expect(throws: PlatformError.self) { _ = try domain.share(count: 1, with: .dom0, writable: true) }
    }
}
