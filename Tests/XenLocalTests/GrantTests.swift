import Glibc
import Foundation
import SharedMemory
import Testing
import XenLocal
import XenPlatform

/// Every grant misuse gets the status Xen gives for it, through the library.
@Suite struct GrantTests {
    func status(_ body: () throws -> Void) -> GrantStatus? {
        do {
            try body()
            return .okay
        } catch let error as PlatformError {
            if case let .grant(status, _, _, _) = error { return status }
            return nil
        } catch { return nil }
    }

    @Test func mapReadWriteSharesMemoryBothWays() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let pages = try guest.grantTable.share(pages: 3, with: 0, writable: true)
        pages.view.store(UInt64(0x1122_3344_5566_7788), at: pageSize * 2 + 8)
        let m = try dom0.grantMapper.map(pages.refs, from: id, writable: true)
        #expect(m.view.count == 3 * pageSize)
        #expect(m.view.load(UInt64.self, at: pageSize * 2 + 8) == 0x1122_3344_5566_7788)
        m.view.store(UInt32(0xABCD), at: 4)
        #expect(pages.view.load(UInt32.self, at: 4) == 0xABCD)
        try dom0.grantMapper.unmap(m)
        try guest.grantTable.endAccess(pages)
    }

    @Test func misusesGetXensStatuses() async throws {
        let fx = try HypervisorFixture(grantEntries: 1024)
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let (otherID, other) = try await fx.createDomain("other")
        let dom0 = try fx.dom0()

        // Granted to another domain, not to dom0.
        let elsewhere = try guest.grantTable.share(pages: 1, with: otherID, writable: true)
        #expect(status { _ = try dom0.grantMapper.map(elsewhere.refs, from: id, writable: false) } == .generalError)

        // A read-only grant mapped for writing; read-only mapping is fine.
        let readOnly = try guest.grantTable.share(pages: 1, with: 0, writable: false)
        #expect(status { _ = try dom0.grantMapper.map(readOnly.refs, from: id, writable: true) } == .generalError)
        let ro = try dom0.grantMapper.map(readOnly.refs, from: id, writable: false)
        try dom0.grantMapper.unmap(ro)

        // An entry never granted, and one past the table.
        #expect(status { _ = try dom0.grantMapper.map([900], from: id, writable: false) } == .generalError)
        #expect(status { _ = try dom0.grantMapper.map([1024], from: id, writable: false) } == .badGrantRef)
        #expect(status { _ = try dom0.grantMapper.map([UInt32.max], from: id, writable: false) } == .badGrantRef)
        // A domain that does not exist.
        #expect(status { _ = try dom0.grantMapper.map([8], from: 999, writable: false) } == .badDomain)
        // Only dom0 maps on the local hypervisor.
        let toOther = try guest.grantTable.share(pages: 1, with: otherID, writable: true)
        #expect(status { _ = try other.grantMapper.map(toOther.refs, from: id, writable: true) } == .permissionDenied)

        // End access while mapped; after unmap it works. A second unmap is a bad handle.
        let rw = try guest.grantTable.share(pages: 2, with: 0, writable: true)
        let m = try dom0.grantMapper.map([rw.refs[1]], from: id, writable: true)
        #expect(throws: PlatformError.grantBusy(ref: rw.refs[1])) { try guest.grantTable.endAccess(rw) }
        try dom0.grantMapper.unmap(m)
        #expect(status { try dom0.grantMapper.unmap(m) } == .badHandle)
        try guest.grantTable.endAccess(rw)
        // Ended: the refs grant nothing any more.
        #expect(status { _ = try dom0.grantMapper.map(rw.refs, from: id, writable: false) } == .generalError)

        // A batch with one bad ref maps nothing and leaves the good ones unpinned.
        let batch = try guest.grantTable.share(pages: 2, with: 0, writable: true)
        #expect(status { _ = try dom0.grantMapper.map([batch.refs[0], 900, batch.refs[1]], from: id, writable: true) } == .generalError)
        try guest.grantTable.endAccess(batch)
    }

    @Test func twoMappingsOfOneRefKeepItBusyUntilBothGo() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let pages = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        let a = try dom0.grantMapper.map(pages.refs, from: id, writable: true)
        let b = try dom0.grantMapper.map(pages.refs, from: id, writable: false)
        try dom0.grantMapper.unmap(a)
        #expect(throws: PlatformError.grantBusy(ref: pages.refs[0])) { try guest.grantTable.endAccess(pages) }
        try dom0.grantMapper.unmap(b)
        try guest.grantTable.endAccess(pages)
    }

    /// A copy buffer is faulted in when it is registered (MAP_POPULATE): a backend's
    /// memory is what it will be from the connect on, not a creep as requests first touch
    /// each page (the 10-minute soak saw that creep as RSS growth).
    @Test func copyBufferPagesAreResidentFromRegistration() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try fx.dom0()
        let pages = 64
        let buffer = try dom0.grantMapper.registerCopyBuffer(pages: pages)
        defer { try? dom0.grantMapper.unregisterCopyBuffer(buffer) }
        // The Rss of the mapping holding it in /proc/self/smaps: pages mapped into this
        // process (mincore would not do: it reports the pool's page cache, which the
        // hypervisor filled). The kernel may have merged it with a neighbouring mapping of
        // the pool, so at least the buffer's size.
        let base = UInt(bitPattern: buffer.view.baseAddress)
        // Read to the end (a /proc file reports size 0, so a one-read reader stops short).
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        let smaps = String(decoding: handle.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        try? handle.close()
        let at = try #require(smaps.firstIndex { line in
            let range = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt($0, radix: 16) } ?? []
            return range.count == 2 && range[0] <= base && base < range[1]
        }, "no mapping holds 0x\(String(base, radix: 16))")
        let rss = try #require(smaps[(at + 1)...].first { $0.hasPrefix("Rss:") })
        let kib = Int(rss.split(separator: " ").dropFirst().first ?? "") ?? 0
        #expect(kib >= pages * pageSize / 1024, "\(smaps[at]): \(rss)")
    }

    @Test func grantCopyChecksEachSegment() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let rw = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        let ro = try guest.grantTable.share(pages: 1, with: 0, writable: false)
        rw.view.fill(0x5A, at: 0, length: 512)
        let buffer = try dom0.grantMapper.registerCopyBuffer(pages: 2)
        buffer.view.fill(0xC3, at: pageSize, length: 100)
        var segments = [
            // guest page -> our buffer
            GrantCopySegment(source: .grant(domain: id, ref: rw.refs[0], offset: 0),
                             destination: .local(buffer: buffer.id, offset: 10), length: 512),
            // our buffer -> guest page at an offset
            GrantCopySegment(source: .local(buffer: buffer.id, offset: pageSize),
                             destination: .grant(domain: id, ref: rw.refs[0], offset: 1000), length: 100),
            // into a read-only grant
            GrantCopySegment(source: .local(buffer: buffer.id, offset: 0),
                             destination: .grant(domain: id, ref: ro.refs[0], offset: 0), length: 8),
            // across the end of the granted page
            GrantCopySegment(source: .grant(domain: id, ref: rw.refs[0], offset: 4000),
                             destination: .local(buffer: buffer.id, offset: 0), length: 200),
            // past the end of our buffer
            GrantCopySegment(source: .grant(domain: id, ref: rw.refs[0], offset: 0),
                             destination: .local(buffer: buffer.id, offset: 2 * pageSize - 4), length: 8),
            // an unknown buffer, a ref never granted, a missing domain
            GrantCopySegment(source: .local(buffer: 77, offset: 0),
                             destination: .grant(domain: id, ref: rw.refs[0], offset: 0), length: 8),
            GrantCopySegment(source: .grant(domain: id, ref: 900, offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 8),
            GrantCopySegment(source: .grant(domain: 999, ref: 8, offset: 0),
                             destination: .local(buffer: buffer.id, offset: 0), length: 8),
        ]
        try segments.withUnsafeMutableBufferPointer { try dom0.grantMapper.copy($0) }
        #expect(segments.map(\.status) == [.okay, .okay, .generalError, .badCopyArgument, .badCopyArgument,
                                           .badVirtualAddress, .generalError, .badDomain])
        #expect(buffer.view.bytes(at: 10, length: 512) == [UInt8](repeating: 0x5A, count: 512))
        #expect(rw.view.bytes(at: 1000, length: 100) == [UInt8](repeating: 0xC3, count: 100))
        #expect(ro.view.load(UInt64.self, at: 0) == 0)
        // Copies leave no busy bits behind.
        try guest.grantTable.endAccess(rw)
        try guest.grantTable.endAccess(ro)
        // An unregistered buffer no longer resolves, and cannot be unregistered twice.
        try dom0.grantMapper.unregisterCopyBuffer(buffer)
        var late = [GrantCopySegment(source: .local(buffer: buffer.id, offset: 0),
                                     destination: .local(buffer: buffer.id, offset: 64), length: 8)]
        try late.withUnsafeMutableBufferPointer { try dom0.grantMapper.copy($0) }
        #expect(late[0].status == .badVirtualAddress)
        #expect(throws: PlatformError.self) { try dom0.grantMapper.unregisterCopyBuffer(buffer) }
    }
}
