import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore

/// xl's VIFSPEC syntax and the vif nodes libxl writes.
@Suite struct VifSpecTests {
    /// SplitMix64: a seeded generator, so generated MACs are the same on every run.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test func parsesGoodSpecs() throws {
        let empty = try VifSpec(parsing: "")
        #expect(empty.mac == nil && empty.bridge == "xenbr0" && empty.devid == nil && empty.mtu == nil && empty.trusted)

        let full = try VifSpec(parsing: "mac=00:16:3E:74:3d:76, bridge=br1,ip=198.18.0.2 198.18.0.3,netdev=eth0,vifname=guestnet,devid=7,mtu=9000,type=vif,model=e1000,untrusted,backend=Domain-0")
        #expect(full.mac == [0x00, 0x16, 0x3e, 0x74, 0x3d, 0x76])
        #expect(full.bridge == "br1")
        #expect(full.ip == "198.18.0.2 198.18.0.3")
        #expect(full.gatewayDevice == "eth0")
        #expect(full.vifName == "guestnet")
        #expect(full.devid == 7)
        #expect(full.mtu == 9000)
        #expect(full.model == "e1000")
        #expect(!full.trusted)
        #expect(full.backendDomain == "Domain-0")
        #expect(VifSpec.format(mac: full.mac!) == "00:16:3e:74:3d:76")
        #expect(try VifSpec(parsing: "mac=0:1:2:a:b:c").mac == [0, 1, 2, 0xa, 0xb, 0xc])
    }

    static let bad: [(String, String)] = [
        ("mac=00:16:3e:74:3d", #"VIFSPEC parameter 1 "mac=00:16:3e:74:3d" (offset 0): bad mac, expected six hex octets separated by ':' (00:16:3e:12:34:56)"#),
        ("bridge=br0,mac=00:16:3e:74:3d:7g", #"VIFSPEC parameter 2 "mac=00:16:3e:74:3d:7g" (offset 11): bad mac, expected six hex octets separated by ':' (00:16:3e:12:34:56)"#),
        ("mac=00:16:3e:74:3d:+7", #"VIFSPEC parameter 1 "mac=00:16:3e:74:3d:+7" (offset 0): bad mac, expected six hex octets separated by ':' (00:16:3e:12:34:56)"#),
        ("bridge=br0, colour=red", #"VIFSPEC parameter 2 "colour=red" (offset 12): unknown parameter 'colour='"#),
        ("bridge=br0,bridge=br1", #"VIFSPEC parameter 2 "bridge=br1" (offset 11): bridge given more than once"#),
        ("gatewaydev=eth0,netdev=eth1", #"VIFSPEC parameter 2 "netdev=eth1" (offset 16): gatewaydev given more than once"#),
        ("type=ioemu", #"VIFSPEC parameter 1 "type=ioemu" (offset 0): type=ioemu is not supported: an emulated card needs a device model; local domains have paravirtual interfaces only"#),
        ("type=tap", #"VIFSPEC parameter 1 "type=tap" (offset 0): bad type, expected vif or ioemu"#),
        ("script=vif-route", #"VIFSPEC parameter 1 "script=vif-route" (offset 0): script= is not supported: the local toolstack runs no hotplug scripts"#),
        ("rate=10Mb/s", #"VIFSPEC parameter 1 "rate=10Mb/s" (offset 0): rate= is not supported: the local netback does no rate limiting"#),
        ("mtu=67", #"VIFSPEC parameter 1 "mtu=67" (offset 0): bad mtu, expected a decimal number from 68 to 65535"#),
        ("devid=-1", #"VIFSPEC parameter 1 "devid=-1" (offset 0): bad devid, expected a decimal number up to 2147483647"#),
        ("bridge", #"VIFSPEC parameter 1 "bridge" (offset 0): expected key=value, trusted or untrusted"#),
        ("trusted,untrusted", #"VIFSPEC parameter 2 "untrusted" (offset 8): trusted/untrusted given more than once"#),
        ("colo_compare_out=x", #"VIFSPEC parameter 1 "colo_compare_out=x" (offset 0): colo_compare_out= is not supported: COLO network replication is not part of the local toolstack"#),
    ]

    @Test func refusesBadSpecsPointingAtTheBadPart() {
        for (spec, message) in Self.bad {
            do {
                let v = try VifSpec(parsing: spec)
                Issue.record("\(spec) parsed as \(v)")
            } catch {
                #expect(error.description == message, "\(spec)")
            }
        }
    }

    @Test func resolveAssignsLowestFreeIdsAndXenMACs() throws {
        var rng = Seeded(state: 42)
        let nics = try ["", "devid=5", "mac=02:00:00:00:00:01", "devid=3"].map { spec throws(DeviceSpecError) in try VifSpec(parsing: spec) }
        let resolved = try LocalToolstack.resolve(nics, using: &rng)
        #expect(resolved.map(\.devid) == [0, 5, 2, 3])
        #expect(resolved[2].mac == [2, 0, 0, 0, 0, 1])
        for nic in resolved where nic != resolved[2] {
            let mac = try #require(nic.mac)
            #expect(mac.prefix(3) == [0x00, 0x16, 0x3e] && mac[3] < 0x80)
        }
        #expect(resolved[0].mac != resolved[1].mac)
        var again = Seeded(state: 42)
        #expect(try LocalToolstack.resolve(nics, using: &again) == resolved)

        #expect(throws: DeviceSpecError.duplicateDeviceID(kind: "vif", devid: 2)) {
            _ = try LocalToolstack.resolve([try VifSpec(parsing: "devid=2"), try VifSpec(parsing: "devid=2")], using: &rng)
        }
        // The second interface's index is 1, which the first one claimed.
        #expect(throws: DeviceSpecError.duplicateDeviceID(kind: "vif", devid: 1)) {
            _ = try LocalToolstack.resolve([try VifSpec(parsing: "devid=1"), try VifSpec(parsing: "")], using: &rng)
        }
        #expect(throws: DeviceSpecError.self) { _ = try LocalToolstack.resolve([try VifSpec(parsing: "backend=driver")], using: &rng) }
    }

    @Test func createWritesVifNodesAsLibxlDoes() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try fx.dom0()
        let nics = [try VifSpec(parsing: "mac=00:16:3e:00:00:01,bridge=br0,ip=198.18.0.2,vifname=g0,mtu=9000"),
                    try VifSpec(parsing: "mac=00:16:3e:00:00:02,untrusted")]
        let toolstack = LocalToolstack(platform: dom0)
        let id = try await toolstack.createDomain(name: "guest", disks: [], nics: nics)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let expected: [(UInt32, [String: String], [String: String])] = [
            (0, ["frontend-id": "\(id)", "online": "1", "state": "1", "mac": "00:16:3e:00:00:01", "bridge": "br0", "handle": "0",
                 "type": "vif", "ip": "198.18.0.2", "vifname": "g0", "mtu": "9000"],
                ["backend-id": "0", "state": "1", "handle": "0", "mac": "00:16:3e:00:00:01", "trusted": "1", "mtu": "9000"]),
            (1, ["frontend-id": "\(id)", "online": "1", "state": "1", "mac": "00:16:3e:00:00:02", "bridge": "xenbr0", "handle": "1",
                 "type": "vif"],
                ["backend-id": "0", "state": "1", "handle": "1", "mac": "00:16:3e:00:00:02", "trusted": "0"]),
        ]
        for (devid, backKeys, frontKeys) in expected {
            let be = LocalToolstack.backendPath(kind: "vif", frontend: id, device: devid)
            let fe = LocalToolstack.frontendPath(kind: "vif", frontend: id, device: devid)
            var back = backKeys
            back["frontend"] = fe
            var front = frontKeys
            front["backend"] = be
            #expect(Set(try await store.directory(be)) == Set(back.keys))
            #expect(Set(try await store.directory(fe)) == Set(front.keys))
            #expect(try await store.getPermissions(be) == ToolstackDiskTests.domUReads(id))
            #expect(try await store.getPermissions(fe) == ToolstackDiskTests.dom0Reads(id))
            for (key, value) in back { #expect(try await store.readString(be + "/" + key) == value, "\(be)/\(key)") }
            for (key, value) in front {
                #expect(try await store.readString(fe + "/" + key) == value, "\(fe)/\(key)")
                #expect(try await store.getPermissions(fe + "/" + key) == ToolstackDiskTests.dom0Reads(id))
            }
        }
        // Hot-plugged without devid=, an interface takes one more than the highest id.
        try await toolstack.attachNic(try VifSpec(parsing: "devid=9"), to: id)
        try await toolstack.attachNic(try VifSpec(parsing: "bridge=br2"), to: id)
        #expect(try await store.readString(LocalToolstack.backendPath(kind: "vif", frontend: id, device: 10) + "/bridge") == "br2")

        try await toolstack.destroy(name: "guest")
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vif") }
    }
}
