import CRingReference
import Foundation
import Testing
import XenRing

/// Protocols/ring-*.tsv are checked against the system headers (through the C compiler)
/// and against the Swift code, so the three cannot drift apart.
@Suite struct ProtocolFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static func rows(_ name: String) throws -> [[String]] {
        let text = try String(contentsOf: root.appendingPathComponent("Protocols/\(name)"), encoding: .utf8)
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
            .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
    }

    /// What the Swift code says about each field.
    static let swiftLayout: [String: (Int, Int)] = {
        typealias X = XenstoreRingInterface.Layout
        typealias C = ConsoleRingInterface.Layout
        typealias H = SharedRing.Header
        return [
            "sring.req_prod": (H.requestProducer, 4), "sring.req_event": (H.requestEvent, 4),
            "sring.rsp_prod": (H.responseProducer, 4), "sring.rsp_event": (H.responseEvent, 4),
            "sring.pvt": (H.privateArea, 4), "sring.pad": (H.privateArea + 4, H.size - H.privateArea - 4),
            "sring.ring": (H.size, 0),
            "xenstore_domain_interface.req": (X.requests, X.ringSize),
            "xenstore_domain_interface.rsp": (X.responses, X.ringSize),
            "xenstore_domain_interface.req_cons": (X.requestConsumer, 4),
            "xenstore_domain_interface.req_prod": (X.requestProducer, 4),
            "xenstore_domain_interface.rsp_cons": (X.responseConsumer, 4),
            "xenstore_domain_interface.rsp_prod": (X.responseProducer, 4),
            "xenstore_domain_interface.server_features": (X.serverFeatures, 4),
            "xenstore_domain_interface.connection": (X.connection, 4),
            "xenstore_domain_interface.error": (X.error, 4),
            "xenstore_domain_interface.(size)": (0, X.size),
            "xencons_interface.in": (C.input, C.inputSize), "xencons_interface.out": (C.output, C.outputSize),
            "xencons_interface.in_cons": (C.inputConsumer, 4), "xencons_interface.in_prod": (C.inputProducer, 4),
            "xencons_interface.out_cons": (C.outputConsumer, 4), "xencons_interface.out_prod": (C.outputProducer, 4),
            "xencons_interface.(size)": (0, C.size),
        ]
    }()

    @Test func layoutsMatchHeadersAndSwift() throws {
        let rows = try Self.rows("ring-layout.tsv")
        #expect(rows.count == Self.swiftLayout.count, "every Swift layout fact has a row and no more")
        for row in rows {
            try #require(row.count == 4, "malformed row \(row)")
            let (structure, field, offset, size) = (row[0], row[1], Int(row[2])!, Int(row[3])!)
            let cStruct = structure == "sring" ? "blkif_sring" : structure
            let cField = field == "pad" ? "__pad" : field
            var cOffset = 0, cSize = 0
            #expect(cref_layout(cStruct, cField, &cOffset, &cSize) == 0, "C knows \(structure).\(field)")
            #expect(cOffset == offset && cSize == size, "\(structure).\(field): file \(offset)/\(size), C \(cOffset)/\(cSize)")
            let swift = try #require(Self.swiftLayout["\(structure).\(field)"], "Swift knows \(structure).\(field)")
            #expect(swift == (offset, size), "\(structure).\(field): file \(offset)/\(size), Swift \(swift)")
        }
    }

    @Test func constantsMatchHeadersAndSwift() throws {
        let swift: [String: Int] = [
            "ring_header_bytes": SharedRing.Header.size,
            "ring_initial_event": 1,
            "max_ring_page_order": 4,
            "xenstore_ring_size": XenstoreRingInterface.Layout.ringSize,
            "xenstore_payload_max": 4096,
            "xenstore_server_feature_reconnection": Int(XenstoreRingInterface.ServerFeatures.reconnection.rawValue),
            "xenstore_server_feature_error": Int(XenstoreRingInterface.ServerFeatures.error.rawValue),
            "xenstore_connected": Int(XenstoreRingInterface.Connection.connected.rawValue),
            "xenstore_reconnect": Int(XenstoreRingInterface.Connection.reconnect.rawValue),
            "xenstore_error_none": Int(XenstoreRingInterface.RingErrorCode.none.rawValue),
            "xenstore_error_comm": Int(XenstoreRingInterface.RingErrorCode.communication.rawValue),
            "xenstore_error_ringidx": Int(XenstoreRingInterface.RingErrorCode.ringIndex.rawValue),
            "xenstore_error_proto": Int(XenstoreRingInterface.RingErrorCode.protocolViolation.rawValue),
        ]
        let rows = try Self.rows("ring-constants.tsv")
        #expect(rows.count == swift.count)
        for row in rows {
            let (name, value) = (row[0], Int(row[1])!)
            #expect(swift[name] == value, "\(name): file \(value), Swift \(swift[name].map(String.init) ?? "missing")")
            if name != "max_ring_page_order" {
                #expect(cref_constant(name) == value, "\(name): file \(value), C \(cref_constant(name))")
            }
        }
        // The page-order limit is ours; 16 pages of blkif slots is what io/blkif.h sizes for.
        #expect(throws: RingError.badPageCount(32)) {
            _ = try SharedRing(memory: .init(base: UnsafeMutableRawPointer(bitPattern: 4096)!, count: 0), pages: 32, entrySize: 112)
        }
    }
}
