import Testing
import XenTesting
import XenBus
import XenPlatform
import XenStore

/// Frontends that lie, scripted over the guest's own xenstore connection, and devices
/// whose hooks fail: the device goes to Closing with Linux's error node, nothing is
/// left half-configured, and the backend keeps serving everyone else.
@Suite struct HostilePeerTests {
    /// `/local/domain/0/error/backend/xbt/<fe>/<devid>/error`, where xenbus_dev_fatal writes.
    func errorNode(_ paths: XenbusDevicePaths) -> String {
        "/local/domain/0/error/backend/\(dummyType)/\(paths.frontendID)/\(paths.devid)/error"
    }

    /// A good device of another guest still connects through the same service.
    func expectStillServing(_ world: World, _ service: BackendService, devid: String) async throws {
        let good = try await world.addDevice(frontend: world.guests[1], devid: devid)
        let store = try world.store(good.frontendID)
        let front = XenbusFrontendDevice(store: store, frontend: good.frontend, hooks: DummyFrontend(ringRef: 5), logger: testLogger)
        try await waitForState(good.backend, .connected, store: world.toolstack)
        try await waitForState(good.frontend, .connected, store: world.toolstack)
        await front.close()
    }

    enum Lie: String, CaseIterable, Sendable {
        case stateBanana, state99, missingRingRef, ringRefNotANumber, ringRefTooLarge
    }

    @Test(arguments: Lie.allCases)
    func aLyingFrontendIsClosedWithAnErrorNode(_ lie: Lie) async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "51712")
        let guest = try world.store(paths.frontendID)
        try await waitForState(paths.backend, .initWait, store: world.toolstack)

        let expected: String
        switch lie {
        case .stateBanana:
            try await guest.write(paths.frontend + "/state", "banana")
            expected = "22 reading frontend state: \(paths.frontend)/state is 'banana', not a xenbus state (0...8)"
        case .state99:
            try await guest.write(paths.frontend + "/state", "99")
            expected = "22 reading frontend state: \(paths.frontend)/state is '99', not a xenbus state (0...8)"
        case .missingRingRef:
            try await guest.write(paths.frontend + "/state", "3")
            expected = "2 reading frontend keys: \(paths.frontend)/ring-ref is missing"
        case .ringRefNotANumber:
            try await guest.withTransaction { tx in
                try await tx.write(paths.frontend + "/ring-ref", "12abc")
                try await tx.write(paths.frontend + "/state", "3")
            }
            expected = "22 reading frontend keys: \(paths.frontend)/ring-ref is '12abc', expected a decimal from 0 to 1000"
        case .ringRefTooLarge:
            try await guest.withTransaction { tx in
                try await tx.write(paths.frontend + "/ring-ref", "5000")
                try await tx.write(paths.frontend + "/state", "4")
            }
            expected = "22 reading frontend keys: \(paths.frontend)/ring-ref is '5000', expected a decimal from 0 to 1000"
        }
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await value(errorNode(paths), store: world.toolstack) == expected)
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.connects.isEmpty)
        #expect(back.hooks.snapshot.disconnects.isEmpty)
        #expect(try await value(paths.backend + "/sectors", store: world.toolstack) == nil)
        try await eventually("driver records Closing") { back.device.state == .closing }
        try await expectStillServing(world, service, devid: "1")
        await service.close()
    }

    @Test func aFrontendPathIntoAnotherDomainIsRefused() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let other = "/local/domain/\(world.guests[1])/device/\(dummyType)/51712"
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "51712", backendKeys: ["frontend": other])
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await value(errorNode(paths), store: world.toolstack)
            == "22 reading frontend details: \(paths.backend)/frontend is '\(other)', which is not a device node under /local/domain/\(world.guests[0])")
        #expect(try await service.driver(paths.backend).device.paths == nil)
        try await expectStillServing(world, service, devid: "2")
        // Closing it still walks to Closed and runs no hook.
        let back = try await service.driver(paths.backend)
        #expect(await back.device.close() == .closed)
        #expect(try await value(paths.backend + "/state", store: world.toolstack) == "6")
        #expect(back.hooks.snapshot.disconnects.isEmpty)
        await service.close()
    }

    @Test func aFrontendThatStartsOverAfterAnErrorIsServedAndTheErrorCleared() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "9")
        let guest = try world.store(paths.frontendID)
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "banana")
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await value(errorNode(paths), store: world.toolstack) != nil)

        try await guest.write(paths.frontend + "/state", "6")
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        try await guest.write(paths.frontend + "/state", "1")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        try await guest.withTransaction { tx in
            try await tx.write(paths.frontend + "/ring-ref", "12")
            try await tx.write(paths.frontend + "/state", "3")
        }
        try await waitForState(paths.backend, .connected, store: world.toolstack)
        #expect(try await service.driver(paths.backend).hooks.snapshot.connects == [12])
        #expect(try await value(paths.backend + "/sectors", store: world.toolstack) == "24")
        #expect(try await value(errorNode(paths), store: world.toolstack) == nil)
        await service.close()
    }

    @Test func aFailingConnectHookLeavesNothingConnected() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0) { _ in DummyBackend(failConnect: true) }
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let store = try world.store(paths.frontendID)
        let hooks = DummyFrontend(ringRef: 8)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger)
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await value(errorNode(paths), store: world.toolstack)
            == "22 connecting: connect: cannot map ring-ref 8")
        let back = try await service.driver(paths.backend)
        #expect(back.hooks.snapshot.disconnects.isEmpty)
        #expect(try await value(paths.backend + "/sectors", store: world.toolstack) == nil)
        // The frontend follows the backend down and takes its keys back.
        try await waitForState(paths.frontend, .closed, store: world.toolstack)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        await front.close()
        #expect(hooks.snapshot.disconnects.count == 1)
        await service.close()
    }

    @Test func aFailingFeaturesHookNeverReachesInitWait() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0) { _ in DummyBackend(failFeatures: true) }
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await value(errorNode(paths), store: world.toolstack)
            == "22 writing features: features: no backing store for 3")
        #expect(try await value(paths.backend + "/feature-magic", store: world.toolstack) == nil)
        await service.close()
    }

    @Test func aFailingInitialiseHookWritesNoKeys() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let store = try world.store(paths.frontendID)
        let hooks = DummyFrontend(ringRef: 8, failInitialise: true)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger)
        try await waitForState(paths.frontend, .closing, store: world.toolstack)
        #expect(hooks.snapshot.magic == [7])
        #expect(hooks.snapshot.disconnects.isEmpty)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        // The backend, never connected, follows the frontend's Closing as blkback does.
        try await waitForState(paths.backend, .closing, store: world.toolstack)
        #expect(try await service.driver(paths.backend).hooks.snapshot.connects.isEmpty)
        #expect(await front.close() == .closed)
        #expect(try await value(paths.frontend + "/state", store: world.toolstack) == "6")
        try await waitForState(paths.backend, .closed, store: world.toolstack)
        #expect(hooks.snapshot.disconnects.isEmpty)
        await service.close()
    }

    @Test func anInvalidKeyFromTheInitialiseHookIsUndoneOnce() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let store = try world.store(paths.frontendID)
        let hooks = DummyFrontend(ringRef: 8, badKey: true)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger)
        try await waitForState(paths.frontend, .closing, store: world.toolstack)
        #expect(hooks.snapshot.initialises == 1)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        await front.close()
        #expect(hooks.snapshot.disconnects.count == 1)
        await service.close()
    }

    @Test func aFrontendRefusesABackendThatLies() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let store = try world.store(paths.frontendID)
        let hooks = DummyFrontend(ringRef: 8)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger)
        try await waitForState(paths.frontend, .initialising, store: world.toolstack)
        // A backend (scripted over dom0's connection) that writes a bad state.
        try await world.dom0.write(paths.backend + "/state", "banana")
        try await waitForState(paths.frontend, .closing, store: world.toolstack)
        #expect(hooks.snapshot.magic.isEmpty)
        #expect(await front.close() == .closed)
        #expect(hooks.snapshot.disconnects.isEmpty)
    }

    @Test func aFrontendRefusesABackendPathOutsideTheBackendDomain() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        let elsewhere = "/local/domain/\(world.guests[1])/backend/\(dummyType)/\(world.guests[0])/3"
        try await world.toolstack.write(paths.frontend + "/backend", elsewhere)
        let store = try world.store(paths.frontendID)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: DummyFrontend(ringRef: 8), logger: testLogger)
        try await waitForState(paths.frontend, .closing, store: world.toolstack)
        #expect(front.paths == nil)
        #expect(await front.close() == .closed)
    }

    @Test func aKeysTransactionThatFailsIsUndoneOnceAndLeavesNoKeys() async throws {
        let world = try World()
        let service = try await BackendService(store: world.dom0)
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "3")
        try await waitForState(paths.backend, .initWait, store: world.toolstack)
        // The toolstack takes write access to the frontend node away (its existing
        // children, `state` among them, keep theirs), so the transaction that creates
        // the frontend's keys fails (EACCES) after setup.
        try await world.toolstack.setPermissions(paths.frontend, [XenStorePermission(domid: 0, access: .none),
                                                                 XenStorePermission(domid: paths.frontendID, access: .read)])
        let store = try world.store(paths.frontendID)
        let hooks = DummyFrontend(ringRef: 8)
        let front = XenbusFrontendDevice(store: store, frontend: paths.frontend, hooks: hooks, logger: testLogger)
        try await waitForState(paths.frontend, .closing, store: world.toolstack)
        #expect(hooks.snapshot.initialises == 1)
        #expect(hooks.snapshot.disconnects.count == 1)
        #expect(try await value(paths.frontend + "/ring-ref", store: world.toolstack) == nil)
        await front.close()
        #expect(hooks.snapshot.disconnects.count == 1)
        await service.close()
    }
}
