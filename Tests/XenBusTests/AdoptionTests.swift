import Testing
import XenStore
import XenTesting
@testable import XenBus

/// A backend driver starting on a device Connected on both ends (its previous process
/// died without closing it): a device type that adopts it is connected with no write to
/// the state node; one that does not goes through InitWait; a refused adoption is fatal.
struct AdoptionTests {
    /// A device connected by a first backend "process" whose xenstore connection then
    /// dies, leaving both ends Connected; the state node's writes are counted from there.
    func orphanedDevice(_ world: World, devid: String, ringRef: UInt32)
        async throws -> (XenbusDevicePaths, XenbusFrontendDevice<DummyFrontend>, DummyFrontend, XenStoreWriteCounter) {
        let firstStore = try world.store(.dom0)
        let first = try await BackendService(store: firstStore)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: devid)
        let hooks = DummyFrontend(ringRef: ringRef)
        let front = XenbusFrontendDevice(store: try world.store(paths.frontendID), frontend: paths.frontend, hooks: hooks,
                                         logger: testLogger)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        let old = try await first.driver(paths.backend)
        firstStore.close()
        _ = try await bounded("old backend driver stops") { await old.device.stopped() }
        let writes = try await XenStoreWriteCounter(world.toolstack, paths.backend + "/state")
        return (paths, front, hooks, writes)
    }

    @Test func anAdoptingDeviceIsConnectedWithNoStateWrite() async throws {
        let world = try World()
        let (paths, front, frontHooks, writes) = try await orphanedDevice(world, devid: "11", ringRef: 90)
        defer { writes.cancel() }
        let second = try await BackendService(store: world.dom0) { _ in DummyBackend(adopting: true) }
        let d = try await second.driver(paths.backend)
        try await eventually("the new driver connects") { !d.hooks.snapshot.connects.isEmpty && d.device.state == .connected }
        #expect(d.hooks.snapshot.connects == [90])
        #expect(d.hooks.snapshot.features == 1, "features asked for (not written)")
        // A write of our own, counted after any the driver made: then the count is final.
        try await world.toolstack.write(paths.backend + "/state", "4")
        try await eventually("the marker write counted") { writes.count >= 1 }
        #expect(writes.count == 1, "state writes by the adopting driver: \(writes.count - 1)")
        #expect(frontHooks.snapshot.disconnects.isEmpty)
        #expect(frontHooks.snapshot.initialises == 1)
        await front.close()
        await second.close()
    }

    @Test func aNonAdoptingDeviceGoesThroughInitWait() async throws {
        let world = try World()
        let (paths, front, _, writes) = try await orphanedDevice(world, devid: "12", ringRef: 91)
        defer { writes.cancel() }
        let second = try await BackendService(store: world.dom0)
        let d = try await second.driver(paths.backend)
        try await eventually("the new driver connects") { !d.hooks.snapshot.connects.isEmpty && d.device.state == .connected }
        try await eventually("InitWait and Connected counted") { writes.count >= 2 }
        #expect(writes.values == ["2", "4"])
        await front.close()
        await second.close()
    }

    @Test func aRefusedAdoptionGoesToClosingWithTheReason() async throws {
        let world = try World()
        let (paths, front, _, writes) = try await orphanedDevice(world, devid: "13", ringRef: 92)
        defer { writes.cancel() }
        let second = try await BackendService(store: world.dom0) { _ in DummyBackend(failConnect: true, adopting: true) }
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        let error = try await value("/local/domain/0/error/backend/\(dummyType)/\(paths.frontendID)/\(paths.devid)/error",
                                    store: world.toolstack)
        #expect(error?.contains("adopting a Connected device: connecting") == true, "error node: \(error ?? "absent")")
        #expect(error?.contains("cannot map ring-ref 92") == true)
        #expect(writes.values.first == "5", "Closing is the first write: \(writes.values)")
        await front.close()
        await second.close()
    }
}
