import Synchronization
import Testing
import XenStore
import XenTesting
@testable import XenBus

/// The backend's rules after a fatal error (Protocols/xenbus.md, "After a fatal error"),
/// at the xenbus level with dummy hooks.
struct RefusedDeviceTests {
    func frontend(_ world: World, _ paths: XenbusDevicePaths, ringRef: UInt32) throws -> (XenbusFrontendDevice<DummyFrontend>, DummyFrontend) {
        let hooks = DummyFrontend(ringRef: ringRef)
        return (XenbusFrontendDevice(store: try world.store(paths.frontendID), frontend: paths.frontend, hooks: hooks,
                                     logger: testLogger), hooks)
    }

    /// A frontend's handshake written by hand: wait for InitWait, publish `ring-ref` with
    /// Initialised, wait for Connected, write Connected.
    func handshakeByHand(_ world: World, _ paths: XenbusDevicePaths, _ guest: XenStoreClient, ringRef: UInt32) async throws {
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.write(paths.frontend + "/ring-ref", String(ringRef))
        try await guest.write(paths.frontend + "/state", "3")
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "4")
    }

    func errorNode(_ paths: XenbusDevicePaths) -> String {
        "/local/domain/0/error/backend/\(dummyType)/\(paths.frontendID)/\(paths.devid)/error"
    }

    @Test func aDeviceRefusedBeforeItsFrontendStartedWritesClosingOnceAndNothingMore() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let writes = try await XenStoreWriteCounter(world.toolstack, paths.backend + "/state")
        defer { writes.cancel() }
        let service = try await BackendService(store: world.dom0) { _ in DummyBackend(failFeatures: true) }
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        // The frontend still reads Initialising (it never started): that is not starting over.
        try await Task.sleep(for: .seconds(1))
        #expect(writes.count == 1, "state writes: \(writes.count)")
        #expect(try await value(paths.backend + "/state", store: world.toolstack) == "5")
        await service.close()
    }

    @Test func aViolationRefusesTheDeviceUntilTheFrontendStartsOver() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "7")
        let (first, firstHooks) = try frontend(world, paths, ringRef: 70)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)

        back.device.reportViolation("queue 0: req_prod overran the ring")
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        let error = try await value(errorNode(paths), store: world.toolstack)
        #expect(error?.hasPrefix("71 data path: protocol violation") == true, "error node: \(error ?? "absent")")
        #expect(error?.contains("req_prod overran the ring") == true)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        // Our frontend driver follows the backend down; the backend follows it to Closed
        // and does not invite it back.
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        let writes = try await XenStoreWriteCounter(world.toolstack, paths.backend + "/state")
        defer { writes.cancel() }
        try await Task.sleep(for: .milliseconds(500))
        #expect(writes.count == 0)
        #expect(back.hooks.snapshot.connects == [70])
        #expect(firstHooks.snapshot.disconnects.count == 1)
        await first.close()

        // A second report for the connection already gone changes nothing.
        back.device.reportViolation("late")
        // A new frontend instance starts over from Initialising: served, error cleared.
        let (second, _) = try frontend(world, paths, ringRef: 71)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(back.hooks.snapshot.connects == [70, 71])
        #expect(try await value(errorNode(paths), store: world.toolstack) == nil)
        await second.close()
        await service.close()
    }

    @Test func aRefusedFrontendRepublishingItsKeysIsNotServed() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "8")
        let guest = try world.store(paths.frontendID)
        // A frontend that writes its keys and states by hand and then misbehaves.
        try await handshakeByHand(world, paths, guest, ringRef: 80)
        let back = try await service.driver(paths.backend)
        back.device.reportViolation("scribbled ring")
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        // Writing Initialised or Connected again (the old ring) is not starting over.
        let writes = try await XenStoreWriteCounter(world.toolstack, paths.backend + "/state")
        defer { writes.cancel() }
        try await guest.write(paths.frontend + "/state", "3")
        try await guest.write(paths.frontend + "/state", "4")
        try await Task.sleep(for: .milliseconds(500))
        #expect(writes.count == 0)
        #expect(back.hooks.snapshot.connects == [80])
        // Closed, then Initialising: a new handshake.
        try await guest.write(paths.frontend + "/state", "6")
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        try await guest.write(paths.frontend + "/ring-ref", "81")
        try await guest.write(paths.frontend + "/state", "1")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "3")
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(back.hooks.snapshot.connects == [80, 81])
        await service.close()
    }

    @Test func aNewDriverDoesNotTakeOverARingAnEarlierDriverRefused() async throws {
        let world = try World()
        let oldStore = try world.store(.dom0)
        let oldService = try await BackendService(store: oldStore)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "9")
        let guest = try world.store(paths.frontendID)
        try await handshakeByHand(world, paths, guest, ringRef: 90)
        let oldDriver = try await oldService.driver(paths.backend).device
        oldDriver.reportViolation("overrun")
        try await waitForState(paths.backend, .closing, store: world.toolstack)

        // The backend "process" goes away without writing (its xenstore connection drops),
        // and a new one starts on the same nodes.
        oldStore.close()
        #expect(try await bounded("the old driver stops") { await oldDriver.stopped() } == .connectionLost)
        let service = try await BackendService(store: try world.store(.dom0))
        let writes = try await XenStoreWriteCounter(world.toolstack, paths.backend + "/state")
        defer { writes.cancel() }
        let back = try await service.driver(paths.backend)
        try await Task.sleep(for: .milliseconds(500))
        #expect(writes.count == 0, "the new driver wrote \(writes.count) states")
        #expect(back.hooks.snapshot.connects.isEmpty, "the refused ring was not taken over")
        #expect(back.hooks.snapshot.features == 0)
        // Starting over is served by the new driver.
        try await guest.write(paths.frontend + "/state", "1")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.write(paths.frontend + "/ring-ref", "91")
        try await guest.write(paths.frontend + "/state", "3")
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(back.hooks.snapshot.connects == [91])
        await service.close()
    }

    @Test func aNodeClosedCleanlyIsNotTakenOverButReconnectsOnceTheFrontendLetGo() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "10")
        let guest = try world.store(paths.frontendID)
        // As a backend that shut down cleanly leaves it, before the frontend reacted.
        try await world.toolstack.write(paths.backend + "/state", "6")
        try await guest.write(paths.frontend + "/ring-ref", "100")
        try await guest.write(paths.frontend + "/state", "4")
        let service = try await BackendService(store: world.dom0)
        let back = try await service.driver(paths.backend)
        try await Task.sleep(for: .milliseconds(500))
        #expect(back.hooks.snapshot.connects.isEmpty)
        #expect(try await value(paths.backend + "/state", store: world.toolstack) == "6")
        // The frontend lets go (Closed): the backend invites a new handshake.
        try await guest.write(paths.frontend + "/state", "6")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.write(paths.frontend + "/ring-ref", "101")
        try await guest.write(paths.frontend + "/state", "3")
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(back.hooks.snapshot.connects == [101])
        await service.close()
    }
}
