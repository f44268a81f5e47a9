import Testing
import XenTesting
import XenBus
import XenPlatform
import XenStore

/// The full handshake, both roles, on the in-process hypervisor with real xenstore
/// permissions: dom0 serves, guests run frontends over their own connections.
@Suite struct HandshakeTests {
    /// Starts a frontend driver on `paths` as guest `paths.frontendID`.
    func frontend(_ world: World, _ paths: XenbusDevicePaths, ringRef: UInt32,
                  hooks: DummyFrontend? = nil) throws -> (XenbusFrontendDevice<DummyFrontend>, DummyFrontend, XenStoreClient) {
        let store = try world.store(paths.frontendID)
        let hooks = hooks ?? DummyFrontend(ringRef: ringRef)
        return (XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger), hooks, store)
    }

    @Test func oneDeviceConnectsBothWaysAndClosesCleanly() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "51712")
        let (front, frontHooks, _) = try frontend(world, paths, ringRef: 21)

        try await waitForState(paths.backend, .connected, store: world.toolstack)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        // A key each way, in each phase.
        #expect(frontHooks.snapshot.magic == [7])
        #expect(back.hooks.snapshot.connects == [21])
        #expect(frontHooks.snapshot.sectors == [42])
        #expect(try await value(paths.backend + "/feature-magic", store: world.toolstack) == "7")
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == "21")
        try await eventually("both drivers record Connected") { back.device.state == .connected && front.state == .connected }
        #expect(back.device.paths == paths)

        // The frontend leaves: the backend disconnects once and follows to Closed.
        #expect(await front.close() == .closed)
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        #expect(try await value(paths.frontend + "/state", store: world.toolstack) == "6")
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        #expect(try await value(paths.backend + "/sectors", store: world.toolstack) == nil)
        #expect(frontHooks.snapshot.disconnects.count == 1)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        // Closing again changes nothing and runs no hook twice.
        #expect(await front.close() == .closed)
        #expect(frontHooks.snapshot.disconnects.count == 1)

        #expect(await back.device.close() == .closed)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.backend + "/feature-magic", store: world.toolstack) == nil)
        await service.close()
    }

    /// Linux's netfront publishes its keys with Connected, and Linux's netback connects only
    /// to a Connected frontend: a frontend whose hooks say so writes Connected with its keys
    /// while the backend is still InitWait, and starts once the backend is Connected.
    @Test func keysPublishedWithConnectedStartOnceTheBackendConnects() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "0")
        // The backend's half played by hand, so the frontend is seen Connected before it.
        try await world.toolstack.write(paths.backend + "/feature-magic", "9")
        try await world.toolstack.write(paths.backend + "/state", String(XenbusState.initWait.rawValue))
        let (front, hooks, _) = try frontend(world, paths, ringRef: 5,
                                             hooks: DummyFrontend(ringRef: 5, stateWithKeys: .connected))
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == "5")
        #expect(hooks.snapshot.magic == [9])
        #expect(hooks.snapshot.sectors.isEmpty)
        try await world.toolstack.write(paths.backend + "/sectors", "10")
        try await world.toolstack.write(paths.backend + "/state", String(XenbusState.connected.rawValue))
        try await eventually("the connect hook ran") { hooks.snapshot.sectors == [10] }
        #expect(front.state == .connected)
        // The backend leaving tears the handshake down once, as for an Initialised one.
        try await world.toolstack.write(paths.backend + "/state", String(XenbusState.closing.rawValue))
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        #expect(await front.close() == .closed)
    }

    /// The same frontend against the backend driver: it serves a frontend that is Connected first.
    @Test func aBackendServesAFrontendConnectedWithItsKeys() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "0")
        let (front, hooks, _) = try frontend(world, paths, ringRef: 21,
                                             hooks: DummyFrontend(ringRef: 21, stateWithKeys: .connected))
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects == [21])
        try await eventually("the frontend started") { hooks.snapshot.sectors == [42] }
        #expect(await front.close() == .closed)
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        await service.close()
    }

    @Test func severalDevicesOfSeveralFrontendsAtOnce() async throws {
        let world = try World(guests: 3)
        let service = try await BackendService(store: world.dom0)
        var fronts: [(XenbusDevicePaths, XenbusFrontendDevice<DummyFrontend>, DummyFrontend, UInt32)] = []
        var ring: UInt32 = 10
        for guest in world.guests {
            for devid in ["51712", "51728"] {
                let paths = try await world.addDevice(frontend: guest, devid: devid)
                let (front, hooks, _) = try frontend(world, paths, ringRef: ring)
                fronts.append((paths, front, hooks, ring))
                ring += 1
            }
        }
        for (paths, _, hooks, ring) in fronts {
            try await waitForState(paths.frontend, .connected, store: world.toolstack)
            try await waitForState(paths.backend, .connected, store: world.toolstack)
            #expect(try await service.driver(paths.backend).hooks.snapshot.connects == [ring])
            #expect(hooks.snapshot.sectors == [UInt64(ring) * 2])
        }
        #expect(service.registry.drivers.withLock { $0.count } == 6)
        for (_, front, _, _) in fronts { await front.close() }
        await service.close()
    }

    @Test func aFrontendThatComesBackReconnects() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "5")
        let (first, firstHooks, _) = try frontend(world, paths, ringRef: 30)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        await first.close()
        try await waitForState(paths.backend, .closed, store: world.toolstack)

        // A new frontend instance (say, the guest rebooted its driver) with new keys.
        let (second, secondHooks, _) = try frontend(world, paths, ringRef: 31)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects == [30, 31])
        #expect(back.hooks.snapshot.disconnects.count == 1)
        #expect(back.hooks.snapshot.features == 2)
        #expect(firstHooks.snapshot.disconnects.count == 1)
        #expect(secondHooks.snapshot.sectors == [62])
        await second.close()
        await service.close()
    }

    @Test func aFrontendProcessThatDiedIsResetAndReconnects() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "5")
        let (first, _, firstStore) = try frontend(world, paths, ringRef: 40)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        // The frontend process dies: its connection goes, the nodes still say Connected.
        firstStore.close()
        #expect(try await bounded("first frontend stops") { await first.stopped() } == .connectionLost)
        #expect(try await value(paths.backend + "/state", store: world.toolstack) == "4")

        // Its successor walks Closing/Closed so the backend lets go, then reconnects.
        let (second, secondHooks, _) = try frontend(world, paths, ringRef: 41)
        // The nodes already read Connected, so wait for the new driver's own connect.
        try await eventually("second frontend connects") { !secondHooks.snapshot.sectors.isEmpty && second.state == .connected }
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects == [40, 41])
        #expect(back.hooks.snapshot.disconnects.count == 1)
        #expect(secondHooks.snapshot.sectors == [82])
        await second.close()
        await service.close()
    }

    @Test func aRestartedBackendReconnectsToConnectedFrontends() async throws {
        let world = try World()
        let firstStore = try world.store(.dom0)
        let first = try await BackendService(store: firstStore)
        var fronts: [(XenbusDevicePaths, XenbusFrontendDevice<DummyFrontend>, DummyFrontend)] = []
        for (i, guest) in world.guests.enumerated() {
            let paths = try await world.addDevice(frontend: guest, devid: "51712")
            let (front, hooks, _) = try frontend(world, paths, ringRef: UInt32(50 + i))
            fronts.append((paths, front, hooks))
        }
        for (paths, _, _) in fronts { try await waitForState(paths.backend, .connected, store: world.toolstack) }
        for (paths, _, _) in fronts { try await waitForState(paths.frontend, .connected, store: world.toolstack) }

        // The backend process dies: its xenstore connection goes with it, drivers stop,
        // their disconnect hooks run once, nothing is written.
        let old = first.registry.drivers.withLock { $0 }
        firstStore.close()
        for (_, d) in old {
            #expect(try await bounded("old backend driver stops") { await d.device.stopped() } == .connectionLost)
            #expect(d.hooks.snapshot.disconnects.count == 1)
        }
        for (paths, front, _) in fronts {
            #expect(try await value(paths.backend + "/state", store: world.toolstack) == "4")
            try await eventually("frontend still records Connected") { front.state == .connected }
        }

        // A new backend process finds Connected frontends and connects again from their keys.
        let second = try await BackendService(store: world.dom0)
        for (i, (paths, _, hooks)) in fronts.enumerated() {
            let d = try await second.driver(paths.backend)
            try await eventually("new backend connects \(paths.backend)") { !d.hooks.snapshot.connects.isEmpty && d.device.state == .connected }
            #expect(d.hooks.snapshot.connects == [UInt32(50 + i)])
            try await waitForState(paths.backend, .connected, store: world.toolstack)
            // The frontend never noticed: no disconnect, no second handshake.
            #expect(hooks.snapshot.disconnects.isEmpty)
            #expect(hooks.snapshot.initialises == 1)
        }
        for (_, front, _) in fronts { #expect(front.state == .connected, "the frontend never left Connected") }
        for (_, front, _) in fronts { await front.close() }
        await second.close()
    }

    @Test func aBackendThatClosesAndComesBackReconnectsTheFrontend() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "9")
        let (front, hooks, _) = try frontend(world, paths, ringRef: 60)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        await service.close()
        // The frontend follows the backend down, releasing its keys.
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)

        // A new backend: InitWait again, and the frontend redoes its half.
        let again = try await BackendService(store: world.dom0)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(hooks.snapshot.initialises == 2)
        #expect(hooks.snapshot.sectors == [120, 120])
        #expect(try await again.driver(paths.backend).hooks.snapshot.connects == [60])
        await front.close()
        await again.close()
    }

    @Test func theToolstackRemovingTheBackendNodeStopsItsDriver() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let keep = try await world.addDevice(frontend: world.guests[1], devid: "3")
        let (front, frontHooks, _) = try frontend(world, paths, ringRef: 70)
        let (other, _, _) = try frontend(world, keep, ringRef: 71)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        try await waitForState(keep.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)

        try await world.toolstack.rm(paths.backend)
        #expect(try await bounded("backend driver stops") { await back.device.stopped() } == .nodeRemoved)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        // Not resurrected by a late state write.
        #expect(try await value(paths.backend, store: world.toolstack) == nil)
        try await eventually("watcher reports the removal") { service.registry.removed.withLock { $0.contains(paths.backend) } }
        // The frontend sees its backend vanish and closes.
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        #expect(frontHooks.snapshot.disconnects.count == 1)
        // The other device is untouched.
        #expect(try await value(keep.backend + "/state", store: world.toolstack) == "4")
        #expect(await front.close() == .closed)
        await other.close()
        await service.close()
    }

    @Test func theToolstackRemovingTheFrontendNodeStopsItsDriver() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "4")
        let (front, hooks, _) = try frontend(world, paths, ringRef: 80)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        try await world.toolstack.rm(paths.frontend)
        #expect(try await bounded("frontend driver stops") { await front.stopped() } == .nodeRemoved)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend, store: world.toolstack) == nil)
        // The backend sees the frontend's state vanish: disconnect, Closed.
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        #expect(try await service.driver(paths.backend).hooks.snapshot.disconnects.count == 1)
        await service.close()
    }

    @Test func anUnplugTheWayXlDoesItWalksBothEndsToClosed() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "6")
        let (front, hooks, _) = try frontend(world, paths, ringRef: 90)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        try await waitForState(paths.frontend, .connected, store: world.toolstack)
        // libxl's device removal: online = 0 and the backend's state set to Closing by
        // the toolstack, then it waits for the backend to reach Closed.
        try await world.toolstack.withTransaction { tx in
            try await tx.write(paths.backend + "/online", "0")
            try await tx.write(paths.backend + "/state", "5")
        }
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        #expect(hooks.snapshot.disconnects.count == 1)
        try await XenbusToolstack.removeDevice(paths, store: world.toolstack)
        #expect(try await bounded("backend driver stops") { await back.device.stopped() } == .nodeRemoved)
        #expect(try await bounded("frontend driver stops") { await front.stopped() } == .nodeRemoved)
        #expect(back.hooks.snapshot.disconnects.count == 1)
        #expect(hooks.snapshot.disconnects.count == 1)
        await service.close()
    }

    @Test func aFrontendBackStraightToInitialisedAfterClosedIsServed() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "8")
        let (front, _, _) = try frontend(world, paths, ringRef: 94)
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        await front.close()
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        // A frontend (scripted over the guest's connection) that writes its keys and
        // Initialised without passing through Initialising.
        let guest = try world.store(paths.frontendID)
        try await guest.withTransaction { tx in
            try await tx.write(paths.frontend + "/ring-ref", "95")
            try await tx.write(paths.frontend + "/state", "3")
        }
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects == [94, 95])
        #expect(back.hooks.snapshot.features == 2)
        #expect(try await value(paths.backend + "/sectors", store: world.toolstack) == "190")
        await service.close()
    }

    /// Linux's blkback follows a frontend's Closing from InitWait; so does every device
    /// type on this driver, with no connect to undo.
    @Test func aFrontendClosingAtInitWaitIsFollowedToClosedAndServedAfterStartingOver() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "9")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        // A frontend scripted over the guest's connection gives up before publishing.
        let guest = try world.store(paths.frontendID)
        try await guest.write(paths.frontend + "/state", "5")
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "6")
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "1")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.withTransaction { tx in
            try await tx.write(paths.frontend + "/ring-ref", "96")
            try await tx.write(paths.frontend + "/state", "3")
        }
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects == [96])
        #expect(back.hooks.snapshot.disconnects.isEmpty, "nothing was connected to undo")
        #expect(back.hooks.snapshot.features == 2)
        await service.close()
    }
}
