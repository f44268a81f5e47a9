import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore

@Suite struct IsolationAndEventTests {
    @Test func aDomUCannotReachAnotherDomainsNodesOrPorts() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (aID, a) = try await fx.createDomain("a")
        let (bID, b) = try await fx.createDomain("b")
        let storeA = try a.connectXenStore()
        defer { storeA.close() }
        // Its own home is readable, relative paths resolve to it, another's is not.
        #expect(try await storeA.readString("/local/domain/\(aID)/name") == "a")
        #expect(try await storeA.readString("name") == "a")
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await storeA.read("/local/domain/\(bID)/name") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await storeA.write("/local/domain/\(bID)/data/x", "1") }
        try await storeA.write("data/note", "mine")

        // A port b offered to dom0 cannot be bound by a.
        let bEvents = try b.openEventChannel()
        let offered = try bEvents.allocateUnbound(remote: 0)
        let aEvents = try a.openEventChannel()
        #expect(throws: PlatformError.self) { _ = try aEvents.bindInterdomain(remote: bID, remotePort: offered) }
        // Nor can a notify a port it never bound.
        #expect(throws: PlatformError.self) { try aEvents.notify(offered) }
    }

    @Test func notificationsCrossDomainsAndRebindAfterAPeerRestart() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let front = try guest.openEventChannel()
        let port = try front.allocateUnbound(remote: 0)
        var back = try dom0.openEventChannel()
        var local = try back.bindInterdomain(remote: id, remotePort: port)
        // A new binding starts pending, as on Xen.
        #expect(try back.pending() == local)
        #expect(try back.pending() == nil)
        try front.notify(port)
        var p = pollfd(fd: back.fileDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 5000) == 1)
        #expect(try back.pending() == local)
        #expect(try back.pending() == nil, "one notification, one pending")
        try back.notify(local)
        #expect(try front.pending() == port)
        // A second bind of a bound port fails; after the backend goes, it binds again.
        let other = try dom0.openEventChannel()
        #expect(throws: PlatformError.self) { _ = try other.bindInterdomain(remote: id, remotePort: port) }
        back.close()
        back = try dom0.openEventChannel()
        local = try back.bindInterdomain(remote: id, remotePort: port)
        try front.notify(port)
        #expect(poll(&p, 1, 0) >= 0)
        p.fd = back.fileDescriptor
        #expect(poll(&p, 1, 5000) == 1)
        #expect(try back.pending() == local)
        // Allocating for a domain that does not exist.
        #expect(throws: PlatformError.self) { _ = try front.allocateUnbound(remote: 4000) }
    }
}
