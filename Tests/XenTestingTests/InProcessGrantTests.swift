import SharedMemory
import Testing
import XenPlatform
import XenTesting

/// Grants between domains of one ``InProcessHypervisor``: the memory is really shared, and
/// every misuse fails with the GNTST status Xen gives (grant_table.h).
@Suite struct InProcessGrantTests {
    @Test func mappingAliasesTheGrantersPagesBothWays() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        #expect(pages.refs.count == 2)
        #expect(pages.refs.allSatisfy { $0 >= 8 }, "refs 0-7 are reserved, as on Xen")
        #expect(pages.view.bytes(at: 0, length: 16) == [UInt8](repeating: 0, count: 16), "shared pages start zeroed")
        pages.view.store(UInt64(0x1122_3344_5566_7788), at: pageSize + 8)

        let mapping = try w.dom0.map(pages.refs, from: w.guest1.domainID, writable: true)
        #expect(mapping.view.count == 2 * pageSize)
        #expect(mapping.view.load(UInt64.self, at: pageSize + 8) == 0x1122_3344_5566_7788)
        mapping.view.store(UInt32(0xCAFE_F00D), at: 100)
        #expect(pages.view.load(UInt32.self, at: 100) == 0xCAFE_F00D)

        for ref in pages.refs {
            #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: ref) == [.permitAccess, .reading, .writing])
        }
        try w.dom0.unmap(mapping)
        for ref in pages.refs {
            #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: ref) == .permitAccess, "unmap clears the busy bits")
        }
        try w.guest1.endAccess(pages)
        for ref in pages.refs {
            #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: ref) == [])
        }
        #expect(w.hypervisor.liveMappings == 0)
    }

    @Test func refsFromSeparateSharesMapContiguouslyInRefOrder() throws {
        let w = try World()
        let a = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let b = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        a.view.store(UInt8(0xAA), at: 0)
        b.view.store(UInt8(0xBB), at: 0)
        let mapping = try w.dom0.map([b.refs[0], a.refs[0]], from: w.guest1.domainID, writable: false)
        #expect(mapping.view.load(UInt8.self, at: 0) == 0xBB)
        #expect(mapping.view.load(UInt8.self, at: pageSize) == 0xAA)
        try w.dom0.unmap(mapping)
    }

    @Test func aGuestBackendMayMapWhatWasGrantedToIt() throws {
        // Driver domains: the grantee is whoever the entry names, not only dom0.
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: w.guest2.domainID, writable: true)
        let mapping = try w.guest2.map(pages.refs, from: w.guest1.domainID, writable: true)
        mapping.view.store(UInt16(7), at: 0)
        #expect(pages.view.load(UInt16.self, at: 0) == 7)
        try w.guest2.unmap(mapping)
        try w.guest1.endAccess(pages)
    }

    @Test func mappingByAnotherDomainThanTheGranteeIsGeneralError() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        #expect(grantStatus { _ = try w.guest2.map(pages.refs, from: w.guest1.domainID, writable: false) } == .generalError)
        #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: pages.refs[0]) == .permitAccess)
    }

    @Test func writableMapOfReadOnlyGrantIsGeneralErrorAndReadOnlyMapWorks() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: false)
        pages.view.store(UInt32(42), at: 0)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: w.guest1.domainID, writable: true) } == .generalError)
        #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: pages.refs[0]) == [.permitAccess, .readOnly])
        let mapping = try w.dom0.map(pages.refs, from: w.guest1.domainID, writable: false)
        #expect(!mapping.writable)
        #expect(mapping.view.load(UInt32.self, at: 0) == 42)
        #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: pages.refs[0]) == [.permitAccess, .readOnly, .reading])
        try w.dom0.unmap(mapping)
    }

    @Test func copyIntoReadOnlyGrantIsGeneralError() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: false)
        let buffer = try w.dom0.registerCopyBuffer(pages: 1)
        var segments = [GrantCopySegment(source: .local(buffer: buffer.id, offset: 0),
                                         destination: .grant(domain: w.guest1.domainID, ref: pages.refs[0], offset: 0),
                                         length: 64)]
        try segments.withUnsafeMutableBufferPointer { try w.dom0.copy($0) }
        #expect(segments[0].status == .generalError)
    }

    @Test func unregisteredCopyBufferNoLongerResolves() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let buffer = try w.dom0.registerCopyBuffer(pages: 1)
        try w.dom0.unregisterCopyBuffer(buffer)
        var segments = [GrantCopySegment(source: .grant(domain: w.guest1.domainID, ref: pages.refs[0], offset: 0),
                                         destination: .local(buffer: buffer.id, offset: 0), length: 64)]
        try segments.withUnsafeMutableBufferPointer { try w.dom0.copy($0) }
        #expect(segments[0].status == .badVirtualAddress)
        #expect(throws: PlatformError.self) { try w.dom0.unregisterCopyBuffer(buffer) }
    }

    @Test func ungrantedReservedAndOutOfRangeRefs() throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.grantEntries = 512
        let w = try World(configuration)
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let g = w.guest1.domainID
        let ungranted = pages.refs[0] + 1
        #expect(grantStatus { _ = try w.dom0.map([ungranted], from: g, writable: false) } == .generalError)
        #expect(grantStatus { _ = try w.dom0.map([0], from: g, writable: false) } == .generalError, "reserved entries are never granted")
        #expect(grantStatus { _ = try w.dom0.map([512], from: g, writable: false) } == .badGrantRef)
        #expect(grantStatus { _ = try w.dom0.map([UInt32.max], from: g, writable: false) } == .badGrantRef)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: 999, writable: false) } == .badDomain)
    }

    @Test func failedBatchMapIsAllOrNothing() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        let bad = pages.refs[1] + 100
        var thrown: PlatformError?
        do { _ = try w.dom0.map([pages.refs[0], pages.refs[1], bad], from: w.guest1.domainID, writable: true) } catch { thrown = error }
        guard case let .grant(status, ref, domain, _) = thrown else {
            Issue.record("expected a grant error, got \(String(describing: thrown))")
            return
        }
        #expect(status == .generalError)
        #expect(ref == bad)
        #expect(domain == w.guest1.domainID)
        for r in pages.refs {
            #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: r) == .permitAccess)
        }
        #expect(w.hypervisor.pinnedRefs(of: w.guest1.domainID).isEmpty)
        #expect(w.hypervisor.liveMappings == 0)
    }

    @Test func endAccessWhileMappedIsGrantBusyAndChangesNothing() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        let mapping = try w.dom0.map([pages.refs[1]], from: w.guest1.domainID, writable: true)
        #expect(platformError { try w.guest1.endAccess(pages) } == .grantBusy(ref: pages.refs[1]))
        #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: pages.refs[0]) == .permitAccess,
                "the unmapped page keeps its grant too: all or nothing")
        // Both views still work.
        pages.view.store(UInt8(9), at: pageSize)
        #expect(mapping.view.load(UInt8.self, at: 0) == 9)
        try w.dom0.unmap(mapping)
        try w.guest1.endAccess(pages)
        #expect(platformError { try w.guest1.endAccess(pages) } != nil, "a second end of access is refused")
    }

    @Test func busyBitsStayUntilTheLastMappingGoes() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let g = w.guest1.domainID
        let reader = try w.dom0.map(pages.refs, from: g, writable: false)
        let writer = try w.dom0.map(pages.refs, from: g, writable: true)
        try w.dom0.unmap(writer)
        #expect(w.hypervisor.grantFlags(domain: g, ref: pages.refs[0]) == [.permitAccess, .reading])
        #expect(platformError { try w.guest1.endAccess(pages) } == .grantBusy(ref: pages.refs[0]))
        try w.dom0.unmap(reader)
        #expect(w.hypervisor.grantFlags(domain: g, ref: pages.refs[0]) == .permitAccess)
        try w.guest1.endAccess(pages)
    }

    @Test func doubleUnmapIsBadHandle() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let mapping = try w.dom0.map(pages.refs, from: w.guest1.domainID, writable: true)
        try w.dom0.unmap(mapping)
        #expect(grantStatus { try w.dom0.unmap(mapping) } == .badHandle)
        try w.guest1.endAccess(pages)
    }

    @Test func unmapByADomainThatDidNotMapIsBadHandle() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let mapping = try w.dom0.map(pages.refs, from: w.guest1.domainID, writable: true)
        let forged = GrantMapping(region: try MemoryRegion.anonymous(pages: 1), domain: w.guest1.domainID,
                                  refs: pages.refs, writable: true, handle: mapping.handle)
        #expect(grantStatus { try w.guest2.unmap(forged) } == .badHandle)
        #expect(w.hypervisor.pinnedRefs(of: w.guest1.domainID) == pages.refs)
        try w.dom0.unmap(mapping)
    }

    @Test func hostileGuestRevokingItsEntryStopsNewMapsButNotOldOnes() throws {
        // A guest owns its grant table and may rewrite an entry at any time; the mapper
        // reads it once per map.
        let w = try World()
        let g = w.guest1.domainID
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let mapping = try w.dom0.map(pages.refs, from: g, writable: true)
        let table = try #require(w.hypervisor.grantEntryTable(of: g))
        table.grant(pages.refs[0], to: w.guest2.domainID, frame: 0, readOnly: false)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: g, writable: false) } == .generalError)
        try w.dom0.unmap(mapping)
    }

    @Test func hostileGuestFrameOutsideItsMemoryIsBadPage() throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.poolPages = 16
        let w = try World(configuration)
        let g = w.guest1.domainID
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let table = try #require(w.hypervisor.grantEntryTable(of: g))
        table.grant(pages.refs[0], to: .dom0, frame: 16, readOnly: false)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: g, writable: true) } == .badPage)
        #expect(w.hypervisor.grantFlags(domain: g, ref: pages.refs[0]) == .permitAccess, "the refused map left no busy bit")
        let buffer = try w.dom0.registerCopyBuffer(pages: 1)
        var segments = [GrantCopySegment(source: .grant(domain: g, ref: pages.refs[0], offset: 0),
                                         destination: .local(buffer: buffer.id, offset: 0), length: 8)]
        try segments.withUnsafeMutableBufferPointer { try w.dom0.copy($0) }
        #expect(segments[0].status == .badPage)
        #expect(w.hypervisor.grantFlags(domain: g, ref: pages.refs[0]) == .permitAccess)
    }

    @Test func destroyingTheMapperReleasesItsPins() throws {
        let w = try World()
        let pages = try w.guest1.share(pages: 1, with: w.guest2.domainID, writable: true)
        _ = try w.guest2.map(pages.refs, from: w.guest1.domainID, writable: true)
        #expect(platformError { try w.guest1.endAccess(pages) } == .grantBusy(ref: pages.refs[0]))
        try w.hypervisor.destroyDomain(w.guest2.domainID)
        #expect(w.hypervisor.pinnedRefs(of: w.guest1.domainID).isEmpty)
        #expect(w.hypervisor.liveMappings == 0)
        try w.guest1.endAccess(pages)
    }

    @Test func grantCopySetsEachSegmentsStatus() throws {
        let w = try World()
        let g = w.guest1.domainID
        let rw = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        let other = try w.guest1.share(pages: 1, with: w.guest2.domainID, writable: true)
        let buffer = try w.dom0.registerCopyBuffer(pages: 2)
        for i in 0 ..< 64 { rw.view.store(UInt8(i), at: 100 + i) }
        for i in 0 ..< 16 { buffer.view.store(UInt8(0xF0 | i), at: pageSize + i) }
        var segments = [
            // 0: page -> buffer, okay.
            GrantCopySegment(source: .grant(domain: g, ref: rw.refs[0], offset: 100),
                             destination: .local(buffer: buffer.id, offset: 10), length: 64),
            // 1: buffer -> page, okay.
            GrantCopySegment(source: .local(buffer: buffer.id, offset: pageSize),
                             destination: .grant(domain: g, ref: rw.refs[0], offset: 4000), length: 16),
            // 2: crosses the end of the granted page.
            GrantCopySegment(source: .grant(domain: g, ref: rw.refs[0], offset: 4090),
                             destination: .local(buffer: buffer.id, offset: 0), length: 16),
            // 3: granted to guest2, not to us.
            GrantCopySegment(source: .grant(domain: g, ref: other.refs[0], offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 8),
            // 4: an unknown buffer.
            GrantCopySegment(source: .grant(domain: g, ref: rw.refs[0], offset: 0),
                             destination: .local(buffer: 12345, offset: 0), length: 8),
            // 5: an unknown domain.
            GrantCopySegment(source: .grant(domain: 4000, ref: rw.refs[0], offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 8),
            // 6: a ref past the table.
            GrantCopySegment(source: .grant(domain: g, ref: 1 << 20, offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 8),
            // 7: zero length.
            GrantCopySegment(source: .grant(domain: g, ref: rw.refs[0], offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 0),
        ]
        try segments.withUnsafeMutableBufferPointer { try w.dom0.copy($0) }
        #expect(segments.map(\.status) == [.okay, .okay, .badCopyArgument, .generalError, .badVirtualAddress,
                                           .badDomain, .badGrantRef, .badCopyArgument])
        #expect(buffer.view.bytes(at: 10, length: 64) == (0 ..< 64).map { UInt8($0) })
        #expect(rw.view.bytes(at: 4000, length: 16) == (0 ..< 16).map { UInt8(0xF0 | $0) })
        #expect(w.hypervisor.grantFlags(domain: g, ref: rw.refs[0]) == .permitAccess, "a copy pins only while it runs")
        try w.guest1.endAccess(rw)
    }

    @Test func shareLimitsAreErrorsNotTraps() throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.poolPages = 4
        configuration.grantEntries = 10
        let w = try World(configuration)
        #expect(platformError { _ = try w.guest1.share(pages: 0, with: .dom0, writable: true) } != nil)
        #expect(platformError { _ = try w.guest1.share(pages: 5, with: .dom0, writable: true) } != nil)
        let two = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        #expect(platformError { _ = try w.guest1.share(pages: 1, with: .dom0, writable: true) } != nil,
                "10 entries less 8 reserved leave two")
        try w.guest1.endAccess(two)
        let again = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        try w.guest1.endAccess(again)
    }
}
