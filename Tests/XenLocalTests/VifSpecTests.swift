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
        #expect(full.script == nil && full.rate == nil)
        let scripted = try VifSpec(parsing: "script=vif-route,rate=10Mb/s")
        #expect(scripted.script == "vif-route")
        #expect(scripted.rate == VifRate(bytesPerInterval: 62_500, intervalMicroseconds: 50_000))
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
        ("script=", #"VIFSPEC parameter 1 "script=" (offset 0): bad script, expected a script name (vif-bridge) or a path to one"#),
        ("script=/etc/", #"VIFSPEC parameter 1 "script=/etc/" (offset 0): bad script, expected a script name (vif-bridge) or a path to one"#),
        ("script=a,script=b", #"VIFSPEC parameter 2 "script=b" (offset 9): script given more than once"#),
        ("accel=x", #"VIFSPEC parameter 1 "accel=x" (offset 0): accel= is not supported: xl itself ignores it"#),
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

    /// `rate=` as xlu_vif_parse_rate reads it, to bytes per interval and microseconds.
    @Test func rateFormsBecomeBytesPerInterval() throws {
        let forms: [(String, String)] = [
            ("10Mb/s", "62500,50000"), ("1MB/s@20ms", "20000,20000"), ("250KB/s@20ms", "5000,20000"),
            ("100kb/s", "625,50000"), ("100Kb/s@1s", "12500,1000000"), ("1GB/s@1s", "1000000000,1000000"),
            ("8b/s@1s", "1,1000000"), ("3B/s@500000us", "1,500000"), ("1GB/s@4294s", "4294000000000,4294000000"),
        ]
        for (text, value) in forms {
            let rate = try #require(try VifSpec(parsing: "rate=" + text).rate, "\(text)")
            #expect(rate.xenstoreValue == value, "\(text)")
        }
    }

    static let badRates: [(String, String)] = [
        ("", "bad rate '': no rate before '@', expected RATE/s such as 10Mb/s"),
        ("@20ms", "bad rate '': no rate before '@', expected RATE/s such as 10Mb/s"),
        ("x", "bad rate 'x': expected a decimal number, then B/s or b/s (10MB/s, 100Kb/s)"),
        ("+5MB/s", "bad rate '+5MB/s': expected a decimal number, then B/s or b/s (10MB/s, 100Kb/s)"),
        ("10", "bad rate '10': no unit, expected B/s or b/s, optionally after k, K, M or G"),
        ("10Mb", "bad rate 'Mb': unit is not B/s or b/s, optionally after k, K, M or G"),
        ("10mB/s", "bad rate 'mB/s': unit is not B/s or b/s, optionally after k, K, M or G"),
        ("0B/s", "bad rate '0B/s': rate is less than 1 byte per second"),
        ("7b/s", "bad rate '7b/s': rate is less than 1 byte per second"),
        ("99999999999999999999B/s", "bad rate '99999999999999999999': number exceeds 64 bits"),
        ("20000000000GB/s", "bad rate '20000000000GB/s': rate exceeds 64 bits"),
        ("10MB/s@", "bad rate '@': expected an interval: a decimal number, then s, ms or us (@20ms)"),
        ("10MB/s@20", "bad rate '@20': interval unit is not s, ms or us"),
        ("10MB/s@20ms@1s", "bad rate '@20ms@1s': interval unit is not s, ms or us"),
        ("10MB/s@0ms", "bad rate '@0ms': interval is zero"),
        ("10MB/s@4295s", "bad rate '@4295s': interval exceeds 4294967295 us"),
        ("5B/s@100us", "bad rate '5B/s@100us': 5 bytes/s is 0 bytes per 100 us interval"),
        ("18446744073709551615B/s@2us", "bad rate '18446744073709551615B/s@2us': 18446744073709551615 bytes/s over 2 us overflows 64 bits"),
    ]

    @Test func refusesBadRatesNamingThePart() {
        for (text, reason) in Self.badRates {
            let spec = "bridge=br0,rate=" + text
            do {
                let v = try VifSpec(parsing: spec)
                Issue.record("\(spec) parsed as \(v)")
            } catch {
                #expect(error.description == #"VIFSPEC parameter 2 "rate="# + text + #"" (offset 11): "# + reason
                        + "; expected RATE/s[@INTERVAL] such as 10Mb/s or 250KB/s@20ms", "\(spec)")
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
        let nics = [try VifSpec(parsing: "mac=00:16:3e:00:00:01,bridge=br0,ip=198.18.0.2,vifname=g0,mtu=9000,rate=1MB/s@20ms"),
                    try VifSpec(parsing: "mac=00:16:3e:00:00:02,untrusted,script=/srv/vif-custom")]
        // Nodes only: no backend runs here, so none is waited for and no script runs.
        let toolstack = LocalToolstack(platform: dom0, scriptDirectory: "/srv/scripts")
        let id = try await toolstack.createDomain(name: "guest", disks: [], nics: nics, hotplug: .none)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let expected: [(UInt32, [String: String], [String: String])] = [
            (0, ["frontend-id": "\(id)", "online": "1", "state": "1", "mac": "00:16:3e:00:00:01", "bridge": "br0", "handle": "0",
                 "type": "vif", "ip": "198.18.0.2", "vifname": "g0", "mtu": "9000", "script": "/srv/scripts/vif-bridge",
                 "rate": "20000,20000"],
                ["backend-id": "0", "state": "1", "handle": "0", "mac": "00:16:3e:00:00:01", "trusted": "1", "mtu": "9000"]),
            (1, ["frontend-id": "\(id)", "online": "1", "state": "1", "mac": "00:16:3e:00:00:02", "bridge": "xenbr0", "handle": "1",
                 "type": "vif", "script": "/srv/vif-custom"],
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
        try await toolstack.attachNic(try VifSpec(parsing: "devid=9"), to: id, hotplug: .none)
        try await toolstack.attachNic(try VifSpec(parsing: "bridge=br2,script=vif-nat"), to: id, hotplug: .none)
        #expect(try await store.readString(LocalToolstack.backendPath(kind: "vif", frontend: id, device: 10) + "/bridge") == "br2")
        #expect(try await store.readString(LocalToolstack.backendPath(kind: "vif", frontend: id, device: 10) + "/script")
                == "/srv/scripts/vif-nat")

        try await toolstack.destroy(name: "guest", hotplug: .none)
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vif") }
    }
}
