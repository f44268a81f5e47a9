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

    @Test func takePendingReportsEachSignalledPortOnceAndStopsAtItsLimit() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let front = try guest.openEventChannel()
        let back = try fx.dom0().openEventChannel()
        // More ports than one look at the epoll set takes (16).
        var pairs: [(front: EventPort, back: EventPort)] = []
        for _ in 0..<20 {
            let offered = try front.allocateUnbound(remote: 0)
            pairs.append((offered, try back.bindInterdomain(remote: id, remotePort: offered)))
        }
        var taken: [EventPort] = []
        // New bindings start pending: all 20 come out, over two looks.
        try back.takePending(atMost: 100) { taken.append($0) }
        #expect(taken.count == 20 && Set(taken) == Set(pairs.map(\.back)))
        taken = []
        try back.takePending(atMost: 100) { taken.append($0) }
        #expect(taken.isEmpty, "each signal is reported once, with no read of the eventfd")
        // Signals before a take coalesce into one pending port.
        try front.notify(pairs[3].front)
        try front.notify(pairs[3].front)
        try front.notify(pairs[7].front)
        var p = pollfd(fd: back.fileDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&p, 1, 5000) == 1)
        try back.takePending(atMost: 100) { taken.append($0) }
        #expect(taken.sorted() == [pairs[3].back, pairs[7].back].sorted())
        // A limit leaves the rest pending for the next take.
        for pair in pairs { try front.notify(pair.front) }
        taken = []
        try back.takePending(atMost: 5) { taken.append($0) }
        #expect(taken.count == 5)
        try back.takePending(atMost: 100) { taken.append($0) }
        #expect(taken.count == 20 && Set(taken) == Set(pairs.map(\.back)))
        // A signal after a take is a new one.
        try front.notify(pairs[0].front)
        #expect(poll(&p, 1, 5000) == 1)
        taken = []
        try back.takePending(atMost: 100) { taken.append($0) }
        #expect(taken == [pairs[0].back])
        #expect(poll(&p, 1, 0) == 0, "nothing left readable")
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
