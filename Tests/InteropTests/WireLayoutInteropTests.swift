import Testing
import XenTesting
import SharedMemory
import Blkif
import Netif

/// The system's C compiler and Xen headers against Protocols/ and the Swift code: struct
/// layouts (cc -m32 for x86_32, cc -m64 for x86_64), constants, and golden encodings.
@Suite struct WireLayoutInteropTests {
    static func outputs() throws -> [(abi: String, output: CLayoutOutput)] {
        [("x86_32", try CLayoutOutput.m32.get()), ("x86_64", try CLayoutOutput.m64.get())]
    }

    @Test func compilerSeesBothABIs() throws {
        for (abi, output) in try Self.outputs() {
            #expect(!output.layouts.isEmpty)
            #expect(output.layouts.allSatisfy { $0[1] == abi }, "cc output claims the \(abi) ABI")
        }
    }

    @Test(arguments: ["blkif", "netif"])
    func layoutsMatchProtocols(family: String) throws {
        let fromC = try Self.outputs().flatMap { $0.output.layouts.filter { $0[0] == family } }
            .map { Array($0.dropFirst()) }
        let table = try ProtocolTable("\(family)-layout.tsv")
        let fromFile = table.rows.map { row in ["abi", "struct", "field", "offset", "size"].map { row[$0]! } }
        #expect(fromC == fromFile, "Protocols/\(family)-layout.tsv differs from the C compiler")
    }

    @Test(arguments: ["blkif", "netif"])
    func constantsMatchProtocols(family: String) throws {
        let outputs = try Self.outputs()
        #expect(outputs[0].output.constants == outputs[1].output.constants, "constants differ between ABIs")
        let fromC = outputs[1].output.constants.filter { $0[0] == family }.map { Array($0.dropFirst()) }
        let table = try ProtocolTable("\(family)-constants.tsv")
        #expect(fromC == table.rows.map { [$0["name"]!, $0["value"]!] })
    }

    @Test(arguments: ["blkif", "netif"])
    func goldenVectorsMatchProtocols(family: String) throws {
        let fromC = try Self.outputs().flatMap { $0.output.goldens.filter { $0[0] == family } }
            .map { Array($0.dropFirst()) }
        let table = try ProtocolTable("\(family)-golden.tsv")
        #expect(fromC == table.rows.map { [$0["abi"]!, $0["name"]!, $0["hex"]!] })
    }

    @Test func swiftBlkifLayoutsMatchCompiler() throws {
        for (abi, output) in try Self.outputs() {
            let fromC = output.layouts.filter { $0[0] == "blkif" }.map {
                BlkifLayout.Field($0[2], $0[3], Int($0[4])!, Int($0[5])!)
            }
            let swiftABI: BlkifABI = abi == "x86_32" ? .x86_32 : .x86_64
            #expect(swiftABI.layout.fields == fromC, "BlkifLayout.\(abi)")
        }
        // This host's compiler defines the native ABI.
        let native = try CLayoutOutput.m64.get().layouts.filter { $0[0] == "blkif" }.map {
            BlkifLayout.Field($0[2], $0[3], Int($0[4])!, Int($0[5])!)
        }
        #if arch(x86_64)
        #expect(BlkifABI.native.layout.fields == native)
        #endif
    }

    @Test func swiftNetifLayoutMatchesCompiler() throws {
        for (abi, output) in try Self.outputs() {
            let fromC = output.layouts.filter { $0[0] == "netif" }.map {
                NetifLayout.Field($0[2], $0[3], Int($0[4])!, Int($0[5])!)
            }
            #expect(NetifLayout.fields == fromC, "NetifLayout in \(abi)")
        }
    }

    /// Each struct the C compiler filled is decoded by Swift and re-encoded to the same bytes.
    @Test func swiftRoundTripsCompilerBytes() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        for (abi, output) in try Self.outputs() {
            let blkifABI: BlkifABI = abi == "x86_32" ? .x86_32 : .x86_64
            for golden in output.goldens {
                let (family, name, bytes) = (golden[0], golden[2], hexBytes(golden[3]))
                view.fill(0, at: 0, length: view.count)
                bytes.withUnsafeBytes { view.copyBytes(from: $0, to: 0) }
                let staging = 2048
                view.fill(0, at: staging, length: 1024)
                if family == "blkif" {
                    if name == "segment" {
                        let s = try BlkifIndirectPage.decodeSegment(0, from: view)
                        BlkifIndirectPage.encodeSegment(s, index: 0, into: try view.slice(offset: staging, length: 8))
                    } else if name.hasPrefix("response") {
                        try BlkifResponse.decode(from: view, at: 0, abi: blkifABI).encode(into: view, at: staging, abi: blkifABI)
                    } else {
                        try BlkifRequest.decode(from: view, at: 0, abi: blkifABI, maxIndirectSegments: 4096)
                            .encode(into: view, at: staging, abi: blkifABI)
                    }
                } else if name.hasPrefix("tx_request") {
                    try NetifTxRequest.decode(from: view, at: 0).encode(into: view, at: staging)
                } else if name.hasPrefix("tx_response") {
                    try NetifTxResponse.decode(from: view, at: 0).encode(into: view, at: staging)
                } else if name.hasPrefix("rx_request") {
                    try NetifRxRequest.decode(from: view, at: 0).encode(into: view, at: staging)
                } else if name.hasPrefix("rx_response") {
                    try NetifRxResponse.decode(from: view, at: 0).encode(into: view, at: staging)
                } else if name.hasPrefix("extra") {
                    try NetifExtraInfo.decode(from: view, at: 0).encode(into: view, at: staging)
                } else {
                    Issue.record("no Swift type for golden \(family) \(name)")
                }
                #expect(view.bytes(at: staging, length: bytes.count) == bytes, "\(abi) \(family) \(name)")
            }
        }
    }
}
