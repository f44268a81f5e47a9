import Testing
import XenTesting
@testable import Netif

@Suite struct NetifFeaturesTests {
    static func fullBackend() -> NetifBackendFeatures {
        var b = NetifBackendFeatures()
        b.scatterGather = true
        b.gsoTCPv4 = true
        b.gsoTCPv6 = true
        b.ipv6ChecksumOffload = true
        b.rxCopy = true
        b.multicastControl = true
        b.dynamicMulticastControl = true
        b.splitEventChannels = true
        b.controlRing = true
        b.maxQueues = 8
        return b
    }

    static func fullFrontend() -> NetifFrontendFeatures {
        var f = NetifFrontendFeatures()
        f.requestRxCopy = true
        f.rxNotify = true
        f.scatterGather = true
        f.gsoTCPv4 = true
        f.noChecksumOffload = true
        f.requestMulticastControl = true
        f.queueCount = 4
        f.trusted = false
        return f
    }

    @Test func roundTripAndDefaults() throws {
        #expect(try NetifBackendFeatures(xenstore: Self.fullBackend().xenstoreEntries) == Self.fullBackend())
        #expect(try NetifFrontendFeatures(xenstore: Self.fullFrontend().xenstoreEntries) == Self.fullFrontend())
        #expect(try NetifBackendFeatures(xenstore: [:]) == NetifBackendFeatures())
        let f = try NetifFrontendFeatures(xenstore: ["mtu": "9000"])
        #expect(f.trusted && !f.noChecksumOffload && f.queueCount == nil)
        #expect(Self.fullBackend().xenstoreEntries["feature-rx-copy"] == "1")
        #expect(Self.fullBackend().xenstoreEntries["feature-rx-flip"] == "0")
    }

    @Test func keysMatchProtocols() throws {
        let table = try ProtocolTable("netif-xenstore.tsv")
        let sides: [(String, String, [String: String], [String: String])] = [
            ("backend", "NetifBackendFeatures.", Self.fullBackend().xenstoreEntries, NetifBackendFeatures().xenstoreEntries),
            ("frontend", "NetifFrontendFeatures.", Self.fullFrontend().xenstoreEntries, NetifFrontendFeatures().xenstoreEntries),
        ]
        for (writer, prefix, full, defaults) in sides {
            let rows = table.rows.filter { $0["writer"] == writer && $0["model"]!.hasPrefix(prefix) }
            #expect(Set(rows.map { $0["key"]! }) == Set(full.keys), "\(writer) keys")
            for row in rows where row["default"] != "-" {
                #expect(defaults[row["key"]!] == row["default"], "\(writer) \(row["key"]!) default")
            }
            for row in rows where row["default"] == "-" {
                #expect(defaults[row["key"]!] == nil, "\(writer) \(row["key"]!) absent by default")
            }
        }
    }

    @Test func badValues() {
        for bad in ["", "2", "on", "1\n"] {
            #expect(throws: NetifError.featureValue(key: "feature-sg", value: bad, expected: "0 or 1")) {
                try NetifBackendFeatures(xenstore: ["feature-sg": bad])
            }
            #expect(throws: NetifError.featureValue(key: "request-rx-copy", value: bad, expected: "0 or 1")) {
                try NetifFrontendFeatures(xenstore: ["request-rx-copy": bad])
            }
        }
        for bad in ["-2", "two", "", "0x4"] {
            #expect(throws: NetifError.featureValue(key: "multi-queue-max-queues", value: bad, expected: "a decimal number")) {
                try NetifBackendFeatures(xenstore: ["multi-queue-max-queues": bad])
            }
        }
        #expect(throws: NetifError.featureRange(key: "multi-queue-num-queues", value: 0, limit: 1...4_294_967_295)) {
            try NetifFrontendFeatures(xenstore: ["multi-queue-num-queues": "0"])
        }
        #expect(throws: NetifError.featureRange(key: "multi-queue-max-queues", value: 1 << 32, limit: 1...4_294_967_295)) {
            try NetifBackendFeatures(xenstore: ["multi-queue-max-queues": "4294967296"])
        }
    }

    @Test func queueCountAgainstOffer() {
        var b = NetifBackendFeatures()
        var f = NetifFrontendFeatures()
        f.queueCount = 1
        #expect(throws: Never.self) { try b.validate(f) }
        f.queueCount = 3
        #expect(throws: NetifError.featureRange(key: "multi-queue-num-queues", value: 3, limit: 1...1)) { try b.validate(f) }
        b.maxQueues = 2
        #expect(throws: NetifError.featureRange(key: "multi-queue-num-queues", value: 3, limit: 1...2)) { try b.validate(f) }
    }
}
