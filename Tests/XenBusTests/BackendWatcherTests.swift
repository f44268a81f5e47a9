import Testing
import XenTesting
import XenBus
import XenPlatform
import XenStore

/// The watcher alone: what it reports for devices coming and going, and what it skips.
@Suite struct BackendWatcherTests {
    /// The next `count` events, bounded.
    func next(_ count: Int, of watcher: XenbusBackendWatcher) async throws -> [XenbusBackendEvent] {
        try await bounded("\(count) watcher events") {
            var events: [XenbusBackendEvent] = []
            for await event in watcher {
                events.append(event)
                if events.count == count { return events }
            }
            throw WaitExceeded(description: "watcher ended after \(events)")
        }
    }

    func id(_ paths: XenbusDevicePaths) -> XenbusBackendDeviceID { XenbusBackendDeviceID(paths) }

    @Test func reportsDevicesPresentAddedAndRemoved() async throws {
        let world = try World()
        let early = try await world.addDevice(frontend: world.guests[0], devid: "1")
        let watcher = try await XenbusBackendWatcher.start(store: world.dom0, backendID: .dom0, type: dummyType, logger: testLogger)
        #expect(try await next(1, of: watcher).map(\.backendPath) == [early.backend])

        // Names that are not a domain id and a device id are skipped, and the rest served.
        try await world.toolstack.write("/local/domain/0/backend/\(dummyType)/banana/1/state", "1")
        try await world.toolstack.write("/local/domain/0/backend/\(dummyType)/99999/1/state", "1")
        let a = try await world.addDevice(frontend: world.guests[0], devid: "2")
        let b = try await world.addDevice(frontend: world.guests[1], devid: "1")
        #expect(try await next(2, of: watcher) == [.added(id(a)), .added(id(b))])

        // One device, then a frontend's whole directory.
        try await world.toolstack.rm(b.backend)
        #expect(try await next(1, of: watcher) == [.removed(id(b))])
        try await world.toolstack.rm("/local/domain/0/backend/\(dummyType)/\(world.guests[0])")
        let gone = try await next(2, of: watcher)
        #expect(Set(gone) == [.removed(id(early)), .removed(id(a))])

        // A device that comes back is reported again.
        try await XenbusToolstack.addDevice(a, store: world.toolstack)
        #expect(try await next(1, of: watcher) == [.added(id(a))])
        await watcher.cancel()
        #expect(try await bounded("watcher ends") { for await _ in watcher {}; return true })
    }

    @Test func nodeReaderParsesStrictly() async throws {
        let world = try World()
        let node = "/local/domain/0/test"
        for (key, text) in [("one", "1"), ("zero", "0"), ("two", "2"), ("big", "70000"), ("neg", "-1"), ("hex", "0x10")] {
            try await world.toolstack.write(node + "/" + key, text)
        }
        let reader = XenbusNodeReader(store: world.dom0, path: node)
        #expect(try await reader.flag("one"))
        #expect(try await !reader.flag("zero"))
        #expect(try await !reader.flag("absent"))
        await #expect(throws: XenbusError.invalidValue(path: node + "/two", value: "2", expected: "0 or 1")) {
            try await reader.flag("two")
        }
        await #expect(throws: XenbusError.invalidValue(path: node + "/big", value: "70000", expected: "a decimal from 0 to 65535")) {
            let _: UInt16 = try await reader.unsigned("big")
        }
        await #expect(throws: XenbusError.self) { let _: UInt32 = try await reader.unsigned("neg") }
        await #expect(throws: XenbusError.self) { let _: UInt32 = try await reader.unsigned("hex") }
        await #expect(throws: XenbusError.missingKey(path: node + "/absent")) { let _: UInt32 = try await reader.unsigned("absent") }
        #expect(try await reader.optionalUnsigned("absent") as UInt32? == nil)
        #expect(try await reader.unsigned("big") as UInt32 == 70000)
        #expect(try await reader.state() == .unknown)
    }
}

extension XenbusBackendEvent {
    var backendPath: String {
        switch self {
        case let .added(id), let .removed(id): return id.backendPath
        }
    }
}
