import Netif
import Testing
import XenTesting

/// The toolstack's `mac` and `mtu` for a vif, parsed strictly.
struct NetifVifSettingsTests {
    @Test func parsesMacAndMTU() throws {
        let settings = try NetifVifSettings(xenstore: ["mac": "00:16:3e:0a:bB:Cc", "mtu": "9000", "other": "x"])
        #expect(settings == NetifVifSettings(mac: NetifMACAddress(0x00, 0x16, 0x3E, 0x0A, 0xBB, 0xCC), mtu: 9000))
        #expect(try NetifVifSettings(xenstore: ["mac": "02:00:00:00:00:01"]).mtu == NetifVifSettings.defaultMTU)
    }

    @Test func refusesWhatIsNotAnAddressOrAnMTU() {
        #expect(throws: NetifError.missingKey("mac")) { try NetifVifSettings(xenstore: [:]) }
        for bad in ["", "00:16:3e:0a:bb", "00:16:3e:0a:bb:cc:dd", "0:16:3e:0a:bb:cc", "00:16:3e:0a:bb:zz", "00-16-3e-0a-bb-cc",
                    "00:16:3e:0a:bb:+c"] {
            #expect(throws: NetifError.featureValue(key: "mac", value: bad, expected: "six hex octets separated by ':'")) {
                try NetifVifSettings(xenstore: ["mac": bad])
            }
        }
        #expect(throws: NetifError.featureRange(key: "mtu", value: 67, limit: 68...65535)) {
            try NetifVifSettings(xenstore: ["mac": "02:00:00:00:00:01", "mtu": "67"])
        }
    }

    @Test func keysMatchProtocols() throws {
        let table = try ProtocolTable("netif-xenstore.tsv")
        let rows = table.rows.filter { $0["model"]!.hasPrefix("NetifVifSettings.") }
        #expect(Set(rows.map { $0["key"]! }) == [NetifVifSettings.Key.mac, NetifVifSettings.Key.mtu])
        #expect(rows.first { $0["key"] == NetifVifSettings.Key.mtu }?["default"] == String(NetifVifSettings.defaultMTU))
        #expect(rows.allSatisfy { $0["writer"] == "toolstack" })
    }
}
