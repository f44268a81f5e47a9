import Testing
import XenBus
import XenPlatform
import XenStore

@Suite struct XenbusStateTests {
    @Test func parsesEveryValueOfTheHeader() throws {
        for state in XenbusState.allCases {
            #expect(try XenbusState(parsing: Array(state.nodeValue.utf8), at: "/x/state") == state)
        }
        #expect(XenbusState.initWait.nodeValue == "2")
        #expect(XenbusState.reconfigured.rawValue == 8)
    }

    @Test(arguments: ["banana", "99", "9", "", "-1", " 4", "4 ", "0x4", "0004", "4\u{0}"])
    func refusesAnythingElse(_ text: String) {
        #expect(throws: XenbusError.invalidState(path: "/local/domain/1/device/vbd/1/state", value: XenbusErrorPrintable.of(text))) {
            try XenbusState(parsing: Array(text.utf8), at: "/local/domain/1/device/vbd/1/state")
        }
    }

    @Test func errorNamesPathAndValue() {
        let error = XenbusError.invalidState(path: "/p/state", value: "banana")
        #expect(error.description.contains("/p/state"))
        #expect(error.description.contains("banana"))
        #expect(error.errno == 22)
    }

    @Test func standardPaths() throws {
        let paths = try XenbusDevicePaths(type: "vbd", devid: "51712", backendID: 0, frontendID: 5)
        #expect(paths.backend == "/local/domain/0/backend/vbd/5/51712")
        #expect(paths.frontend == "/local/domain/5/device/vbd/51712")
        #expect(throws: XenbusError.self) { try XenbusDevicePaths(type: "v/bd", devid: "1", backendID: 0, frontendID: 5) }
        #expect(throws: XenbusError.self) { try XenbusDevicePaths(type: "vbd", devid: "..", backendID: 0, frontendID: 5) }
    }

    @Test func keysKeepTheirOrderAndReplaceInPlace() {
        var keys = XenbusKeys()
        keys.set("ring-ref", "8")
        keys.set("ring-ref", "9")
        keys.set("event-channel", "3")
        #expect(keys["ring-ref"] == "9")
        #expect(keys.keys == ["ring-ref", "event-channel"])
        #expect(keys == ["ring-ref": "9", "event-channel": "3"])
        #expect(keys != ["event-channel": "3", "ring-ref": "9"])
    }
}

/// How XenbusError prints a peer value (printable ASCII as is, the rest as \xNN).
enum XenbusErrorPrintable {
    static func of(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if byte >= 0x20, byte < 0x7F, byte != UInt8(ascii: "\\") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16)
                out += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

@Suite struct DiscoveryTests {
    @Test func backendFindsTheFrontend() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "51712")
        let found = try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        #expect(found == paths)
    }

    @Test func frontendFindsTheBackend() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "51712")
        let guest = try world.store(world.guests[0])
        let found = try await XenbusDevicePaths.discover(frontend: paths.frontend, store: guest)
        #expect(found == paths)
    }

    @Test func backendRefusesAFrontendInAnotherDomain() async throws {
        let world = try World()
        let other = "/local/domain/\(world.guests[1])/device/\(dummyType)/7"
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "7", backendKeys: ["frontend": other])
        await #expect(throws: XenbusError.otherEndOutsideDomain(path: paths.backend + "/frontend", value: other, domain: world.guests[0])) {
            try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        }
    }

    @Test(arguments: ["/local/domain/1/device/../../2/device/xbt/7", "/local/domain/1", "relative/device/xbt/7", ""])
    func backendRefusesMalformedFrontendPaths(_ bad: String) async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "7", backendKeys: ["frontend": bad])
        await #expect(throws: XenbusError.otherEndOutsideDomain(path: paths.backend + "/frontend", value: bad, domain: world.guests[0])) {
            try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        }
    }

    @Test func backendRefusesAMismatchedFrontendID() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "7",
                                              backendKeys: ["frontend-id": String(world.guests[1])])
        await #expect(throws: XenbusError.self) {
            try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        }
        try await world.toolstack.write(paths.backend + "/frontend-id", "banana")
        await #expect(throws: XenbusError.invalidValue(path: paths.backend + "/frontend-id", value: "banana",
                                                      expected: "a decimal from 0 to \(DomainID.domidSelf - 1)")) {
            try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        }
        try await world.toolstack.rm(paths.backend + "/frontend-id")
        await #expect(throws: XenbusError.missingKey(path: paths.backend + "/frontend-id")) {
            try await XenbusDevicePaths.discover(backend: paths.backend, store: world.dom0)
        }
    }

    @Test func frontendRefusesABackendOutsideItsDomain() async throws {
        let world = try World()
        let paths = try await world.addDevice(frontend: world.guests[0], devid: "7")
        let guest = try world.store(world.guests[0])
        // The guest owns its node, so it can point it anywhere: only it is hurt, and it is refused.
        let elsewhere = "/local/domain/\(world.guests[1])/backend/\(dummyType)/\(world.guests[0])/7"
        try await guest.write(paths.frontend + "/backend", elsewhere)
        await #expect(throws: XenbusError.otherEndOutsideDomain(path: paths.frontend + "/backend", value: elsewhere, domain: 0)) {
            try await XenbusDevicePaths.discover(frontend: paths.frontend, store: guest)
        }
    }

    @Test func refusesPathsOfTheWrongShape() async throws {
        let world = try World()
        await #expect(throws: XenbusError.self) {
            try await XenbusDevicePaths.discover(backend: "/local/domain/0/device/xbt/1", store: world.dom0)
        }
        await #expect(throws: XenbusError.self) {
            try await XenbusDevicePaths.discover(frontend: "/local/domain/1/backend/xbt/1/2", store: world.dom0)
        }
        await #expect(throws: XenbusError.self) {
            try await XenbusDevicePaths.discover(backend: "/local/domain/0/backend/xbt/99999/1", store: world.dom0)
        }
    }
}
