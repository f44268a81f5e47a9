import Testing
import XenPlatform
import XenStore
import XenTesting

/// The embedded xenstored: each platform's connection acts as its domain, whatever it
/// sends, and domain homes are laid out with libxl's permissions.
@Suite struct InProcessXenStoreTests {
    @Test func homesAreLaidOutWithLibxlPermissions() async throws {
        let w = try World()
        let store = try w.dom0.connectXenStore()
        defer { store.close() }
        let id = w.guest1.domainID
        let home = "/local/domain/\(id)"
        #expect(try await store.readString(home + "/name") == "guest1")
        #expect(try await store.readString(home + "/domid") == "\(id)")
        let readOnly = [XenStorePermission(domid: 0, access: .none), XenStorePermission(domid: id, access: .read)]
        #expect(try await store.getPermissions(home) == readOnly)
        #expect(try await store.getPermissions(home + "/device") == readOnly)
        #expect(try await store.getPermissions(home + "/control") == readOnly)
        #expect(try await store.getPermissions(home + "/data") == [XenStorePermission(domid: id, access: .none)])
        #expect(try await store.isDomainIntroduced(id))
        #expect(try await store.readString("/local/domain/0/name") == "Domain-0")
    }

    @Test func aGuestReadsItsHomeWritesItsDataAndNothingElse() async throws {
        let w = try World()
        let store = try w.guest1.connectXenStore()
        defer { store.close() }
        #expect(try await store.readString("name") == "guest1", "relative paths resolve under the home")
        try await store.write("data/greeting", "hello")
        #expect(try await store.readString("/local/domain/\(w.guest1.domainID)/data/greeting") == "hello")
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await store.write("name", "mallory") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await store.write("/local/domain/0/evil", "x") }
        // Handing a node to another owner is the privileged domain's alone (EPERM, as C xenstored).
        await #expect(throws: XenStoreError.daemon(.eperm)) {
            try await store.setPermissions("data/greeting", [XenStorePermission(domid: 0, access: .none)])
        }
    }

    @Test func aGuestCannotReadAnotherGuestsHome() async throws {
        let w = try World()
        let g1 = try w.guest1.connectXenStore()
        let g2 = try w.guest2.connectXenStore()
        defer {
            g1.close()
            g2.close()
        }
        try await g2.write("data/secret", "42")
        let other = "/local/domain/\(w.guest2.domainID)"
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await g1.read(other + "/name") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await g1.read(other + "/data/secret") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await g1.directory(other) }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await g1.write(other + "/data/secret", "0") }
        // dom0 is privileged and sees everything.
        let d0 = try w.dom0.connectXenStore()
        defer { d0.close() }
        #expect(try await d0.readString(other + "/data/secret") == "42")
    }

    @Test func aToolstackConnectionSharesAFrontendNodeWithItsBackend() async throws {
        // What a toolstack does for a vbd: the frontend's device directory is the guest's
        // own, readable by the backend domain.
        let w = try World()
        let tool = try w.hypervisor.connectXenStore(as: .tool)
        defer { tool.close() }
        let g = w.guest1.domainID
        let front = "/local/domain/\(g)/device/vbd/51712"
        try await tool.mkdir(front)
        try await tool.setPermissions(front, [XenStorePermission(domid: g, access: .none),
                                              XenStorePermission(domid: 0, access: .read)])
        let guest = try w.guest1.connectXenStore()
        defer { guest.close() }
        try await guest.write("device/vbd/51712/ring-ref", "8")
        let other = try w.guest2.connectXenStore()
        defer { other.close() }
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await other.read(front + "/ring-ref") }
        let d0 = try w.dom0.connectXenStore()
        defer { d0.close() }
        #expect(try await d0.readString(front + "/ring-ref") == "8")
    }

    @Test func destroyingADomainRemovesItsHomeAndFiresReleaseDomain() async throws {
        let w = try World()
        let d0 = try w.dom0.connectXenStore()
        defer { d0.close() }
        let watch = try await d0.watch(XenStorePath.releaseDomain, token: "gone")
        var events = watch.makeAsyncIterator()
        // A watch fires once when set.
        #expect(await events.next()?.token == "gone")
        try w.hypervisor.destroyDomain(w.guest2.domainID)
        #expect(await events.next() == XenStoreWatchEvent(path: XenStorePath.releaseDomain, token: "gone"))
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await d0.read("/local/domain/\(w.guest2.domainID)") }
        #expect(try await !d0.isDomainIntroduced(w.guest2.domainID))
    }

    @Test func domainsAreCreatedOnceByNameAndId() throws {
        let w = try World()
        #expect(platformError { try w.hypervisor.createDomain(name: "guest1") } != nil)
        #expect(platformError { try w.hypervisor.createDomain(name: "again", id: w.guest2.domainID) } != nil)
        #expect(platformError { try w.hypervisor.createDomain(name: "self", id: .domidSelf) } != nil)
        #expect(platformError { _ = try w.hypervisor.platform(for: 4000) } != nil)
        let id = try w.hypervisor.createDomain(name: "guest7", id: 7)
        #expect(id == 7)
        #expect(w.hypervisor.domains == [0, w.guest1.domainID, w.guest2.domainID, 7])
    }
}
