import Glibc
import Testing
import XenPlatform
import XenTesting

/// Injected faults fire once, on the operation they name, and leave no trace behind.
@Suite struct InProcessFaultTests {
    @Test func mapFaultFailsTheNextMapOfThatRefOnly() throws {
        let w = try World()
        let g = w.guest1.domainID
        let pages = try w.guest1.share(pages: 2, with: .dom0, writable: true)
        w.hypervisor.inject(.map(granter: g, ref: pages.refs[1], status: .eagain))
        #expect(w.hypervisor.pendingFaults.count == 1)
        // A map not naming the ref does not consume it.
        let first = try w.dom0.map([pages.refs[0]], from: g, writable: true)
        #expect(w.hypervisor.pendingFaults.count == 1)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: g, writable: true) } == .eagain)
        #expect(w.hypervisor.pendingFaults.isEmpty)
        #expect(w.hypervisor.grantFlags(domain: g, ref: pages.refs[1]) == .permitAccess, "a failed map pins nothing")
        let second = try w.dom0.map(pages.refs, from: g, writable: true)
        try w.dom0.unmap(second)
        try w.dom0.unmap(first)
        try w.guest1.endAccess(pages)
    }

    @Test func copyFaultSetsThatSegmentsStatusAndTheRestRun() throws {
        let w = try World()
        let g = w.guest1.domainID
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        pages.view.store(UInt32(0xABCD_EF01), at: 0)
        let buffer = try w.dom0.registerCopyBuffer(pages: 1)
        w.hypervisor.inject(.copy(granter: g, ref: pages.refs[0], status: .badPage))
        let segment = GrantCopySegment(source: .grant(domain: g, ref: pages.refs[0], offset: 0),
                                       destination: .local(buffer: buffer.id, offset: 0), length: 4)
        var segments = [segment, segment]
        try segments.withUnsafeMutableBufferPointer { try w.dom0.copy($0) }
        #expect(segments.map(\.status) == [.badPage, .okay])
        #expect(buffer.view.load(UInt32.self, at: 0) == 0xABCD_EF01)
        #expect(w.hypervisor.pendingFaults.isEmpty)
    }

    @Test func notifyFaultFailsOnceAndIsNotCounted() throws {
        let w = try World()
        let front = try w.guest1.openInProcessEventChannel()
        let back = try w.dom0.openInProcessEventChannel()
        let port = try front.allocateUnbound(remote: .dom0)
        let backPort = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port)
        _ = try back.pending()
        w.hypervisor.inject(.notify(domain: w.guest1.domainID, port: port, errno: EIO))
        #expect(eventErrno { try front.notify(port) } == EIO)
        #expect(try back.pending() == nil, "a failed notify delivers nothing")
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: port) == 0)
        try front.notify(port)
        #expect(try back.pending() == backPort)
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: port) == 1)
    }

    @Test func bindFaultFailsTheNextBindOfThatDomain() throws {
        let w = try World()
        let front = try w.guest1.openInProcessEventChannel()
        let back = try w.dom0.openInProcessEventChannel()
        let port = try front.allocateUnbound(remote: .dom0)
        w.hypervisor.inject(.bind(domain: .dom0, errno: ENOMEM))
        #expect(eventErrno { _ = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port) } == ENOMEM)
        #expect(w.hypervisor.peer(of: port, domain: w.guest1.domainID) == nil, "the offered port is still unbound")
        _ = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port)
    }

    @Test func shareFaultThrowsTheGivenErrorAndAllocatesNothing() throws {
        let w = try World()
        let injected = PlatformError.system("out of grant entries", errno: ENOSPC)
        w.hypervisor.inject(.share(domain: w.guest1.domainID, error: injected))
        #expect(platformError { _ = try w.guest2.share(pages: 1, with: .dom0, writable: true) } == nil,
                "another domain's share is not affected")
        #expect(platformError { _ = try w.guest1.share(pages: 1, with: .dom0, writable: true) } == injected)
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        #expect(pages.refs == [8], "the failed share took no entry")
    }

    @Test func faultsFireInTheOrderQueued() throws {
        let w = try World()
        let g = w.guest1.domainID
        let pages = try w.guest1.share(pages: 1, with: .dom0, writable: true)
        w.hypervisor.inject(.map(granter: g, ref: pages.refs[0], status: .eagain))
        w.hypervisor.inject(.map(granter: g, ref: pages.refs[0], status: .noDeviceSpace))
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: g, writable: false) } == .eagain)
        #expect(grantStatus { _ = try w.dom0.map(pages.refs, from: g, writable: false) } == .noDeviceSpace)
        let mapping = try w.dom0.map(pages.refs, from: g, writable: false)
        try w.dom0.unmap(mapping)
    }
}
