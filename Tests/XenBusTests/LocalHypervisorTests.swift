import Foundation
import Testing
import XenTesting
import XenBus
import XenLocal
import XenPlatform
import XenStore

/// A local hypervisor served on a thread of the test process, in its own state directory
/// (the fixture of XenLocalTests, trimmed to what these tests use).
final class HypervisorFixture: @unchecked Sendable {
    let directory: String
    let hypervisor: LocalHypervisor

    init() throws {
        var template = Array("/tmp/xensplit-xenbus-test-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: p)
        hypervisor = try LocalHypervisor(configuration: LocalHypervisor.Configuration(stateDirectory: directory))
        hypervisor.start()
    }

    /// Stops the hypervisor and removes the state directory.
    func stop() {
        hypervisor.stopAndWait()
        try? FileManager.default.removeItem(atPath: directory)
    }

    func dom0() throws -> LocalPlatform { try LocalPlatform(stateDirectory: directory) }

    func createDomain(_ name: String) async throws -> (DomainID, LocalPlatform) {
        let id = try await LocalToolstack(platform: dom0()).createDomain(name: name)
        return (id, try LocalPlatform(stateDirectory: directory, domain: name))
    }
}

/// The same handshake over the real local hypervisor: separate xenstore connections per
/// domain through its sockets, its permissions and its watches.
@Suite struct LocalHypervisorTests {
    @Test func handshakeAndTeardownOverTheLocalHypervisor() async throws {
        let fixture = try HypervisorFixture()
        defer { fixture.stop() }
        let dom0 = try fixture.dom0()
        let (guestID, guest) = try await fixture.createDomain("guest")
        let toolstack = try dom0.connectXenStore()
        let backendStore = try dom0.connectXenStore()
        let frontendStore = try guest.connectXenStore()
        defer {
            toolstack.close()
            backendStore.close()
            frontendStore.close()
        }

        let watcher = try await XenbusBackendWatcher.start(store: backendStore, backendID: dom0.domainID, type: dummyType, logger: testLogger)
        let paths = try XenbusDevicePaths(type: dummyType, devid: "51712", backendID: dom0.domainID, frontendID: guestID)
        try await XenbusToolstack.addDevice(paths, store: toolstack)
        let added = try await bounded("watcher reports the device") {
            for await event in watcher { return event }
            throw WaitExceeded(description: "watcher ended")
        }
        guard case let .added(id) = added else {
            Issue.record("expected an added event, got \(added)")
            return
        }
        #expect(id.backendPath == paths.backend)
        #expect(id.frontendID == guestID)

        let backHooks = DummyBackend()
        let back = XenbusBackendDevice(store: backendStore, backend: id.backendPath, hooks: backHooks, logger: testLogger)
        let frontHooks = DummyFrontend(ringRef: 33)
        let front = XenbusFrontendDevice(store: frontendStore, frontend: paths.frontend, hooks: frontHooks, logger: testLogger)
        try await waitForState(paths.backend, .connected, store: toolstack)
        try await waitForState(paths.frontend, .connected, store: toolstack)
        #expect(backHooks.snapshot.connects == [33])
        #expect(frontHooks.snapshot.sectors == [66])

        #expect(await front.close() == .closed)
        try await waitForState(paths.backend, .closed, store: toolstack)
        #expect(backHooks.snapshot.disconnects.count == 1)
        #expect(frontHooks.snapshot.disconnects.count == 1)

        // The toolstack unplugs: the backend driver stops, the watcher reports it.
        try await XenbusToolstack.removeDevice(paths, store: toolstack)
        #expect(try await bounded("backend driver stops") { await back.stopped() } == .nodeRemoved)
        let removed = try await bounded("watcher reports the removal") {
            for await event in watcher { return event }
            throw WaitExceeded(description: "watcher ended")
        }
        #expect(removed == .removed(id))
        #expect(try await value(paths.backend, store: toolstack) == nil)
        await watcher.cancel()
    }
}
