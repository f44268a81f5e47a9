import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore

/// Domains outlive their processes; destroying one releases everything it had.
@Suite struct DomainLifecycleTests {
    @Test func destroyReleasesEverythingAndFiresReleaseDomain() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let watch = try await store.watch("@releaseDomain")
        var events = watch.makeAsyncIterator()
        _ = await events.next()   // the event every new watch fires once
        #expect(try await store.readString("/local/domain/\(id)/name") == "guest")

        let pages = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        let events0 = try dom0.openEventChannel()
        let guestEvents = try guest.openEventChannel()
        let port = try guestEvents.allocateUnbound(remote: 0)
        let local = try events0.bindInterdomain(remote: id, remotePort: port)

        try await LocalToolstack(platform: dom0).destroy(name: "guest")
        let fired = await events.next()
        #expect(fired?.path == "@releaseDomain")
        await #expect(throws: XenStoreError.self) { _ = try await store.read("/local/domain/\(id)") }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
        // The domain's processes are cut off.
        #expect(throws: PlatformError.self) { _ = try guest.grantTable.share(pages: 1, with: 0, writable: true) }
        // Its grants are gone with it.
        #expect(throws: PlatformError.self) { _ = try dom0.grantMapper.map(pages.refs, from: id, writable: false) }
        // Our end of the channel is left unbound; closing it is still clean.
        try events0.unbind(local)
        // The name can be used again.
        let (again, _) = try await fx.createDomain("guest")
        #expect(again == id)
        #expect(!FileManager.default.fileExists(atPath: fx.directory + "/domains/guest/nothing"))
    }

    @Test func processDeathClosesPortsButKeepsTheDomainsGrants() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        var guest: LocalPlatform? = try LocalPlatform(stateDirectory: fx.directory, domain: "guest")
        let pages = try guest!.grantTable.share(pages: 1, with: 0, writable: true)
        var guestEvents: (any EventChannel)? = try guest!.openEventChannel()
        let port = try guestEvents!.allocateUnbound(remote: 0)
        // The "process" goes: its connection closes.
        guestEvents = nil
        guest = nil
        let dom0 = try fx.dom0()
        let events0 = try dom0.openEventChannel()
        try eventually("the port closes with its connection") {
            do {
                _ = try events0.bindInterdomain(remote: id, remotePort: port)
                throw PlatformError.invalidArgument("still bindable")
            } catch let e as PlatformError {
                if case .eventChannel = e { return }
                throw e
            }
        }
        // The grant outlives the process: dom0 can still map it.
        let m = try dom0.grantMapper.map(pages.refs, from: id, writable: true)
        try dom0.grantMapper.unmap(m)
    }
}
