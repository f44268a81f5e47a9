import Testing
import XenTesting
import SharedMemory
@testable import Blkif

/// The Swift layouts, constants and encoders against the committed Protocols/ files.
@Suite struct BlkifProtocolFileTests {
    static let abis: [(String, BlkifABI)] = [("x86_32", .x86_32), ("x86_64", .x86_64)]

    @Test func layoutTablesMatchProtocols() throws {
        let table = try ProtocolTable("blkif-layout.tsv")
        for (name, abi) in Self.abis {
            let expected = table.rows.filter { $0["abi"] == name }.map {
                BlkifLayout.Field($0["struct"]!, $0["field"]!, Int($0["offset"]!)!, Int($0["size"]!)!)
            }
            #expect(!expected.isEmpty)
            #expect(abi.layout.fields == expected, "layout of \(name)")
        }
    }

    @Test func slotSizeIsTheUnionSize() throws {
        let table = try ProtocolTable("blkif-layout.tsv")
        for (name, abi) in Self.abis {
            let entry = table.rows.first { $0["abi"] == name && $0["struct"] == "blkif_sring_entry" }
            #expect(entry?["size"] == String(abi.slotSize))
        }
        #expect(BlkifABI.x86_64.slotSize == 112)
        #expect(BlkifABI.x86_32.slotSize == 108)
    }

    @Test func nativeIsTheHostLayout() {
        #if arch(i386)
        #expect(BlkifABI.native.layout == BlkifLayout.x86_32)
        #else
        #expect(BlkifABI.native.layout == BlkifLayout.x86_64)
        #endif
    }

    @Test func constantsMatchProtocols() throws {
        let swift: [String: String] = [
            "BLKIF_OP_READ": String(BlkifOperation.read.rawValue),
            "BLKIF_OP_WRITE": String(BlkifOperation.write.rawValue),
            "BLKIF_OP_WRITE_BARRIER": String(BlkifOperation.writeBarrier.rawValue),
            "BLKIF_OP_FLUSH_DISKCACHE": String(BlkifOperation.flushDiskCache.rawValue),
            "BLKIF_OP_RESERVED_1": String(BlkifOperation.reserved1),
            "BLKIF_OP_DISCARD": String(BlkifOperation.discard.rawValue),
            "BLKIF_OP_INDIRECT": String(BlkifOperation.indirect.rawValue),
            "BLKIF_MAX_SEGMENTS_PER_REQUEST": String(BlkifSegments.capacity),
            "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST": String(BlkifIndirectGrefs.capacity),
            "BLKIF_DISCARD_SECURE": String(BlkifDiscardRequest.secureFlag),
            "BLKIF_RSP_EOPNOTSUPP": String(BlkifStatus.notSupported.rawValue),
            "BLKIF_RSP_ERROR": String(BlkifStatus.error.rawValue),
            "BLKIF_RSP_OKAY": String(BlkifStatus.okay.rawValue),
            "VDISK_CDROM": String(BlkifDiskInfo.cdrom.rawValue),
            "VDISK_REMOVABLE": String(BlkifDiskInfo.removable.rawValue),
            "VDISK_READONLY": String(BlkifDiskInfo.readOnly.rawValue),
            "BLKIF_SEGMENTS_PER_INDIRECT_PAGE": String(BlkifIndirectPage.segmentsPerPage),
            "XEN_IO_PROTO_ABI_X86_32": BlkifABI.x86_32.protocolName,
            "XEN_IO_PROTO_ABI_X86_64": BlkifABI.x86_64.protocolName,
        ]
        let table = try ProtocolTable("blkif-constants.tsv")
        #expect(Set(table.rows.map { $0["name"]! }) == Set(swift.keys), "every constant is mapped")
        for row in table.rows {
            #expect(swift[row["name"]!] == row["value"], "\(row["name"]!)")
        }
        // No Swift case hides an operation code beyond those listed.
        #expect(BlkifOperation.allCases.count == 6)
        #expect((try? BlkifOperation(validating: BlkifOperation.reserved1)) == nil)
    }

    /// Encodes every example for every ABI and compares with the C compiler's bytes; then
    /// decodes those bytes back to the example.
    @Test func goldenVectorsMatchEncoderAndDecoder() throws {
        let table = try ProtocolTable("blkif-golden.tsv")
        let examples = try BlkifExample.all()
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        for (abiName, abi) in Self.abis {
            let rows = table.rows.filter { $0["abi"] == abiName }
            #expect(Set(rows.map { $0["name"]! }) == Set(examples.keys), "examples for \(abiName)")
            for row in rows {
                let name = row["name"]!
                let golden = hexBytes(row["hex"]!)
                let example = try #require(examples[name])

                // Zeroed slot: the whole struct must equal C's.
                view.fill(0, at: 0, length: view.count)
                encode(example, into: view, abi: abi)
                #expect(view.bytes(at: 0, length: golden.count) == golden, "\(abiName) \(name) bytes")

                // Dirty slot: every byte the encoder owns (padding included) is written.
                view.fill(0xAA, at: 0, length: view.count)
                encode(example, into: view, abi: abi)
                let owned = ownedLength(example, abi: abi, structSize: golden.count)
                #expect(view.bytes(at: 0, length: owned) == Array(golden.prefix(owned)), "\(abiName) \(name) padding")

                // Decode C's bytes.
                view.fill(0, at: 0, length: view.count)
                golden.withUnsafeBytes { view.copyBytes(from: $0, to: 64) }
                #expect(try decode(like: example, from: view, at: 64, abi: abi) == example, "\(abiName) \(name) decode")
            }
        }
    }

    private func encode(_ example: BlkifExample, into view: SharedView, abi: BlkifABI) {
        switch example {
        case let .request(r): r.encode(into: view, at: 0, abi: abi)
        case let .response(r): r.encode(into: view, at: 0, abi: abi)
        case let .segment(s): BlkifIndirectPage.encodeSegment(s, index: 0, into: view)
        }
    }

    private func decode(like example: BlkifExample, from view: SharedView, at offset: Int,
                        abi: BlkifABI) throws -> BlkifExample {
        switch example {
        case .request:
            return .request(try BlkifRequest.decode(from: view, at: offset, abi: abi, maxIndirectSegments: 4096))
        case .response:
            return .response(try BlkifResponse.decode(from: view, at: offset, abi: abi))
        case .segment:
            return .segment(try BlkifIndirectPage.decodeSegment(0, from: try view.slice(offset: offset, length: 4096 - offset)))
        }
    }

    /// Direct requests leave segment entries past nr_segments alone.
    private func ownedLength(_ example: BlkifExample, abi: BlkifABI, structSize: Int) -> Int {
        if case let .request(.direct(r)) = example {
            return abi.layout.segmentsOffset + r.segments.count * BlkifSegment.size
        }
        return structSize
    }
}
