import Testing
import XenTesting
import Tap

/// VirtioNetHeader and the TAP constants against the installed linux headers, and
/// encode/decode round trips.
@Suite struct VirtioNetHeaderTests {
    static let golden = VirtioNetHeader(flags: .needsChecksum, gsoType: .tcpv6, ecn: true, headerLength: 0x56,
                                        gsoSize: 0x5A8, csumStart: 0x36, csumOffset: 0x10)

    @Test func layoutMatchesCompiler() throws {
        let c = try CHeaderOutput.shared.get()
        #expect(c.rows("size") == [[String(VirtioNetHeader.size)]])
        // (name, offset, size) as this module encodes them.
        let fields = [["flags", "0", "1"], ["gso_type", "1", "1"], ["hdr_len", "2", "2"], ["gso_size", "4", "2"],
                      ["csum_start", "6", "2"], ["csum_offset", "8", "2"]]
        #expect(c.rows("field") == fields)
    }

    @Test func constantsMatchCompiler() throws {
        let c = try CHeaderOutput.shared.get()
        let ours: [[String]] = [
            ["VIRTIO_NET_HDR_F_NEEDS_CSUM", "\(VirtioNetHeader.Flags.needsChecksum.rawValue)"],
            ["VIRTIO_NET_HDR_F_DATA_VALID", "\(VirtioNetHeader.Flags.dataValid.rawValue)"],
            ["VIRTIO_NET_HDR_GSO_NONE", "\(VirtioNetHeader.GSOType.none.rawValue)"],
            ["VIRTIO_NET_HDR_GSO_TCPV4", "\(VirtioNetHeader.GSOType.tcpv4.rawValue)"],
            ["VIRTIO_NET_HDR_GSO_UDP", "\(VirtioNetHeader.GSOType.udp.rawValue)"],
            ["VIRTIO_NET_HDR_GSO_TCPV6", "\(VirtioNetHeader.GSOType.tcpv6.rawValue)"],
            ["VIRTIO_NET_HDR_GSO_ECN", "\(VirtioNetHeader(ecn: true).gsoTypeByte)"],
            ["TUN_F_CSUM", "\(TapOffloads.checksum.rawValue)"],
            ["TUN_F_TSO4", "\(TapOffloads.tso4.rawValue)"],
            ["TUN_F_TSO6", "\(TapOffloads.tso6.rawValue)"],
            ["TUN_F_TSO_ECN", "\(TapOffloads.tsoECN.rawValue)"],
            ["TUN_F_UFO", "\(TapOffloads.ufo.rawValue)"],
        ]
        #expect(c.rows("const") == ours)
    }

    @Test func encodesCompilerGoldenBytes() throws {
        let c = try CHeaderOutput.shared.get()
        let hex = Self.golden.bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        #expect(c.rows("golden") == [[hex]])
        // TCPV6 (4) | ECN (0x80), then little-endian 16-bit fields.
        #expect(hex == "01845600a80536001000")
    }

    @Test func decodesCompilerGoldenBytes() throws {
        let c = try CHeaderOutput.shared.get()
        let hex = try #require(c.rows("golden").first?.first)
        let bytes = stride(from: 0, to: hex.count, by: 2).map { i in
            UInt8(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 2)], radix: 16)!
        }
        #expect(VirtioNetHeader(decoding: bytes) == Self.golden)
    }

    @Test func roundTripsAtAnOffset() {
        var generator = SplitMix64(seed: 0x7A9)
        for _ in 0..<200 {
            let header = VirtioNetHeader(
                flags: VirtioNetHeader.Flags(rawValue: UInt8(truncatingIfNeeded: generator.next()) & 3),
                gsoType: VirtioNetHeader.GSOType(rawValue: UInt8(truncatingIfNeeded: generator.next()) & 0x7F),
                ecn: generator.next() & 1 == 1,
                headerLength: UInt16(truncatingIfNeeded: generator.next()), gsoSize: UInt16(truncatingIfNeeded: generator.next()),
                csumStart: UInt16(truncatingIfNeeded: generator.next()), csumOffset: UInt16(truncatingIfNeeded: generator.next()))
            let offset = Int(generator.next() % 8)
            var buffer = [UInt8](repeating: 0xEE, count: offset + VirtioNetHeader.size + 3)
            let written = buffer.withUnsafeMutableBytes { header.encode(into: $0, at: offset) }
            #expect(written)
            #expect(buffer[..<offset].allSatisfy { $0 == 0xEE } && buffer[(offset + 10)...].allSatisfy { $0 == 0xEE })
            #expect(VirtioNetHeader(decoding: buffer, at: offset) == header)
        }
    }

    @Test func refusesBuffersTooShort() {
        var nine = [UInt8](repeating: 0, count: 9)
        #expect(VirtioNetHeader(decoding: nine) == nil)
        #expect(VirtioNetHeader(decoding: [UInt8](repeating: 0, count: 12), at: 3) == nil)
        #expect(VirtioNetHeader(decoding: [UInt8](repeating: 0, count: 12), at: -1) == nil)
        let written = nine.withUnsafeMutableBytes { VirtioNetHeader().encode(into: $0) }
        #expect(!written)
    }

    @Test func ecnBitIsSeparateFromType() {
        let header = VirtioNetHeader(decoding: [0, 0x81, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(header?.gsoType == .tcpv4)
        #expect(header?.ecn == true)
    }
}

/// A small seeded generator (SplitMix64) so random tests repeat.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE5_E9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
