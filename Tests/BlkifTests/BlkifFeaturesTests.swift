import Testing
import XenTesting
@testable import Blkif

@Suite struct BlkifFeaturesTests {
    static func fullBackend() -> BlkifBackendFeatures {
        var b = BlkifBackendFeatures()
        b.flushCache = true
        b.barrier = true
        b.discard = true
        b.discardGranularity = 4096
        b.discardAlignment = 512
        b.discardSecure = true
        b.persistent = true
        b.maxIndirectSegments = 256
        b.maxQueues = 4
        b.maxRingPageOrder = 4
        return b
    }

    static func fullFrontend() -> BlkifFrontendFeatures {
        var f = BlkifFrontendFeatures()
        f.abi = .x86_32
        f.persistent = true
        f.largeSectorSize = true
        f.queueCount = 2
        f.ringPageOrder = 3
        f.trusted = false
        return f
    }

    @Test func roundTrip() throws {
        let b = Self.fullBackend()
        #expect(try BlkifBackendFeatures(xenstore: b.xenstoreEntries) == b)
        #expect(try BlkifBackendFeatures(xenstore: BlkifBackendFeatures().xenstoreEntries) == BlkifBackendFeatures())
        let f = Self.fullFrontend()
        #expect(try BlkifFrontendFeatures(xenstore: f.xenstoreEntries) == f)
        #expect(b.xenstoreEntries["feature-max-indirect-segments"] == "256")
        #expect(f.xenstoreEntries["protocol"] == "x86_32-abi")
    }

    @Test func defaultsWhenAbsent() throws {
        let b = try BlkifBackendFeatures(xenstore: ["unrelated": "x"])
        #expect(b == BlkifBackendFeatures())
        #expect(b.maxIndirectSegments == nil && b.maxQueues == nil && b.maxRingPageOrder == 0)
        let f = try BlkifFrontendFeatures(xenstore: [:])
        #expect(f.abi == .native && f.trusted && f.queueCount == nil)
    }

    /// Every row of Protocols/blkif-xenstore.tsv that names a model is a key the Swift
    /// side reads and writes, with the documented default.
    @Test func keysMatchProtocols() throws {
        let table = try ProtocolTable("blkif-xenstore.tsv")
        let sides: [(String, String, [String: String], [String: String])] = [
            ("backend", "BlkifBackendFeatures.", Self.fullBackend().xenstoreEntries, BlkifBackendFeatures().xenstoreEntries),
            ("frontend", "BlkifFrontendFeatures.", Self.fullFrontend().xenstoreEntries, BlkifFrontendFeatures().xenstoreEntries),
        ]
        for (writer, prefix, full, defaults) in sides {
            let rows = table.rows.filter { $0["writer"] == writer && $0["model"]!.hasPrefix(prefix) }
            #expect(Set(rows.map { $0["key"]! }) == Set(full.keys), "\(writer) keys")
            for row in rows where row["default"] != "-" && row["default"] != "native" {
                #expect(defaults[row["key"]!] == row["default"], "\(writer) \(row["key"]!) default")
            }
            for row in rows where row["default"] == "-" {
                #expect(defaults[row["key"]!] == nil, "\(writer) \(row["key"]!) absent by default")
            }
        }
    }

    @Test func badValues() throws {
        for bad in ["", "2", "yes", "true", " 1", "01"] {
            #expect(throws: BlkifError.featureValue(key: "feature-flush-cache", value: bad, expected: "0 or 1")) {
                try BlkifBackendFeatures(xenstore: ["feature-flush-cache": bad])
            }
        }
        for bad in ["", "-1", "0x10", "1 ", "+3", "1e3", "123456789012345678901234"] {
            #expect(throws: BlkifError.featureValue(key: "feature-max-indirect-segments", value: bad,
                                                    expected: "a decimal number")) {
                try BlkifBackendFeatures(xenstore: ["feature-max-indirect-segments": bad])
            }
        }
        #expect(throws: BlkifError.featureRange(key: "max-ring-page-order", value: 4_294_967_296,
                                                limit: 0...4_294_967_295)) {
            try BlkifBackendFeatures(xenstore: ["max-ring-page-order": "4294967296"])
        }
        // io/blkif.h: a queue count must be above 0 and at most the maximum, so a maximum
        // of 0 offers no multi-queue: one ring on the top-level keys, as when absent.
        #expect(try BlkifBackendFeatures(xenstore: ["multi-queue-max-queues": "0"]).maxQueues == nil)
        #expect(throws: BlkifError.featureValue(key: "multi-queue-max-queues", value: "-1", expected: "a decimal number")) {
            try BlkifBackendFeatures(xenstore: ["multi-queue-max-queues": "-1"])
        }
        #expect(throws: BlkifError.featureRange(key: "multi-queue-num-queues", value: 0, limit: 1...4_294_967_295)) {
            try BlkifFrontendFeatures(xenstore: ["multi-queue-num-queues": "0"])
        }
        #expect(throws: BlkifError.featureValue(key: "trusted", value: "no", expected: "0 or 1")) {
            try BlkifFrontendFeatures(xenstore: ["trusted": "no"])
        }
        #expect(throws: BlkifError.unknownABI("sparc-abi")) {
            try BlkifFrontendFeatures(xenstore: ["protocol": "sparc-abi"])
        }
    }

    @Test func frontendChoicesAgainstBackendOffer() throws {
        var b = BlkifBackendFeatures()
        var f = BlkifFrontendFeatures()
        #expect(throws: Never.self) { try b.validate(f) }
        f.queueCount = 2
        #expect(throws: BlkifError.featureRange(key: "multi-queue-num-queues", value: 2, limit: 1...1)) { try b.validate(f) }
        b.maxQueues = 2
        #expect(throws: Never.self) { try b.validate(f) }
        f.ringPageOrder = 1
        #expect(throws: BlkifError.featureRange(key: "ring-page-order", value: 1, limit: 0...0)) { try b.validate(f) }
        b.maxRingPageOrder = 2
        #expect(throws: Never.self) { try b.validate(f) }
    }

    @Test func errorDescriptionsNameFieldValueAndLimit() {
        let text = BlkifError.invalidRequest(id: 5, operation: 0, reason: .segmentCount(value: 12, limit: 1...11)).description
        #expect(text.contains("nr_segments 12") && text.contains("1...11") && text.contains("id 5"))
        #expect(BlkifError.segmentSectors(index: 2, first: 3, last: 9, limit: 7).description.contains("last_sect 9"))
    }
}

@Suite struct BlkifDiskPropertiesTests {
    @Test func roundTripAndUnits() throws {
        let disk = BlkifDiskProperties(sectors512: 8 << 20, sectorSize: 4096, physicalSectorSize: 8192,
                                       info: [.readOnly, .removable])
        #expect(try BlkifDiskProperties(xenstore: disk.xenstoreEntries) == disk)
        // A 4 GiB disk of 4096-byte sectors: `sectors` counts 512-byte units, as Linux's
        // blkback writes it and its blkfront reads it (set_capacity takes 512-byte units).
        #expect(disk.xenstoreEntries["sectors"] == "8388608")
        #expect(try BlkifDiskProperties(xenstore: ["sectors": "8388608", "sector-size": "4096"]).sectors512 == 8 << 20)
        let plain = try BlkifDiskProperties(xenstore: ["sectors": "100", "sector-size": "512"])
        #expect(plain == BlkifDiskProperties(sectors512: 100))
    }

    @Test func keysMatchProtocols() throws {
        let table = try ProtocolTable("blkif-xenstore.tsv")
        let rows = table.rows.filter { $0["model"]!.hasPrefix("BlkifDiskProperties.") }
        let full = BlkifDiskProperties(sectors512: 8, sectorSize: 512, physicalSectorSize: 4096, info: .cdrom)
        #expect(Set(rows.map { $0["key"]! }) == Set(full.xenstoreEntries.keys))
        #expect(rows.allSatisfy { $0["writer"] == "backend" })
        let minimal = BlkifDiskProperties(sectors512: 1).xenstoreEntries
        for row in rows where row["default"] != "-" { #expect(minimal[row["key"]!] == row["default"]) }
    }

    @Test func badValues() throws {
        #expect(throws: BlkifError.featureValue(key: "sectors", value: "", expected: "a decimal number (the node is required)")) {
            try BlkifDiskProperties(xenstore: ["sector-size": "512"])
        }
        #expect(throws: BlkifError.featureValue(key: "sector-size", value: "",
                                                expected: "a decimal number (the node is required)")) {
            try BlkifDiskProperties(xenstore: ["sectors": "8"])
        }
        #expect(throws: BlkifError.featureValue(key: "sectors", value: "18446744073709551616", expected: "a decimal number")) {
            try BlkifDiskProperties(xenstore: ["sectors": "18446744073709551616", "sector-size": "512"])
        }
        for bad in ["0", "256", "520", "3000"] {
            #expect(throws: BlkifError.featureValue(key: "sector-size", value: bad, expected: "a power of two >= 512")) {
                try BlkifDiskProperties(xenstore: ["sectors": "8", "sector-size": bad])
            }
        }
        for bad in ["0", "1024", "6144"] {
            #expect(throws: BlkifError.featureValue(key: "physical-sector-size", value: bad,
                                                    expected: "a multiple of sector-size 4096")) {
                try BlkifDiskProperties(xenstore: ["sectors": "8", "sector-size": "4096", "physical-sector-size": bad])
            }
        }
        #expect(throws: BlkifError.featureValue(key: "info", value: "ro", expected: "a decimal number")) {
            try BlkifDiskProperties(xenstore: ["sectors": "8", "sector-size": "512", "info": "ro"])
        }
    }
}
