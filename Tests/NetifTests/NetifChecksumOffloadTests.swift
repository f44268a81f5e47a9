import Netif
import Testing
import XenTesting

/// Frames built by hand for the checksum-offload parser: Ethernet, an optional VLAN tag,
/// IPv4 or IPv6 with extension headers, TCP or UDP with a zero checksum field.
struct TestFrame {
    var bytes: [UInt8]
    /// Where the IP header starts.
    var networkOffset: Int
    /// Where the transport header starts.
    var transportOffset: Int
    /// Where the transport header ends.
    var headerEnd: Int
    /// Where the IP packet ends.
    var end: Int

    static let source4: [UInt8] = [198, 18, 0, 2]
    static let destination4: [UInt8] = [198, 18, 0, 1]
    static let source6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2]
    static let destination6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]

    /// `vlan`: the tag protocol (0x8100 or 0x88A8) or nil; `extensions`: IPv6 extension
    /// headers as (type, length in bytes, a multiple of 8); `tcpOptionWords`: 32-bit words
    /// of TCP options; `padding`: bytes after the IP packet.
    init(vlan: UInt16? = nil, ipv6: Bool = false, extensions: [(UInt8, Int)] = [], transport: NetifTransportProtocol,
         payload: [UInt8], tcpOptionWords: Int = 0, padding: Int = 0) {
        var l4: [UInt8]
        switch transport {
        case .tcp:
            l4 = [0x30, 0x39, 0x01, 0xBB, 0, 0, 0, 1, 0, 0, 0, 0, UInt8((5 + tcpOptionWords) << 4), 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
            l4 += [UInt8](repeating: 1, count: tcpOptionWords * 4) // NOPs
        case .udp:
            let length = 8 + payload.count
            l4 = [0x30, 0x39, 0x00, 0x35, UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), 0, 0]
        }
        let headerLength = l4.count
        l4 += payload

        var frame: [UInt8] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]
        if let vlan { frame += [UInt8(vlan >> 8), UInt8(vlan & 0xFF), 0x00, 0x05] }
        frame += ipv6 ? [0x86, 0xDD] : [0x08, 0x00]
        let networkOffset = frame.count
        if ipv6 {
            var chain: [UInt8] = []
            var types = extensions.map(\.0) + [transport.rawValue]
            for (_, length) in extensions {
                types.removeFirst()
                var header = [types[0], UInt8(length / 8 - 1)] + [UInt8](repeating: 0, count: length - 2)
                if length >= 8 { header[2] = 1; header[3] = UInt8(length - 4) } // a PadN option
                chain += header
            }
            let payloadLength = chain.count + l4.count
            frame += [0x60, 0, 0, 0, UInt8(payloadLength >> 8), UInt8(payloadLength & 0xFF),
                      extensions.first?.0 ?? transport.rawValue, 64] + Self.source6 + Self.destination6 + chain
        } else {
            let total = 20 + l4.count
            frame += [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, transport.rawValue, 0, 0]
                + Self.source4 + Self.destination4
        }
        let transportOffset = frame.count
        frame += l4
        bytes = frame + [UInt8](repeating: 0, count: padding)
        self.networkOffset = networkOffset
        self.transportOffset = transportOffset
        self.headerEnd = transportOffset + headerLength
        self.end = frame.count
    }

    /// A 16-bit big-endian field.
    mutating func set16(_ offset: Int, _ value: UInt16) {
        bytes[offset] = UInt8(value >> 8)
        bytes[offset + 1] = UInt8(value & 0xFF)
    }

    func get16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }

    /// The pseudo-header as RFC 768/793 (IPv4) and RFC 8200 section 8.1 (IPv6) lay it out.
    func pseudoHeader(ipv6: Bool, transport: NetifTransportProtocol) -> [UInt8] {
        let length = end - transportOffset
        if ipv6 {
            return Array(bytes[(networkOffset + 8)..<(networkOffset + 40)])
                + [UInt8(length >> 24 & 0xFF), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF),
                   0, 0, 0, transport.rawValue]
        }
        return Array(bytes[(networkOffset + 12)..<(networkOffset + 20)])
            + [0, transport.rawValue, UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
    }
}

/// RFC 1071 word by word, independent of InternetChecksum: the folded sum.
func scratchSum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i < bytes.count {
        sum += UInt32(bytes[i]) << 8 | (i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0)
        sum = (sum & 0xFFFF) + (sum >> 16)
        i += 2
    }
    return UInt16(sum)
}

@Suite struct NetifChecksumOffloadTests {
    func locate(_ frame: TestFrame) throws(NetifError) -> NetifChecksumLocation {
        try NetifChecksumOffload.locate(in: frame.bytes)
    }

    func expectError(_ frame: TestFrame, _ expected: NetifError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: expected, sourceLocation: sourceLocation) { _ = try locate(frame) }
    }

    @Test func ipv4TCP() throws {
        let frame = TestFrame(transport: .tcp, payload: Array(repeating: 0xAB, count: 100), tcpOptionWords: 3)
        let location = try locate(frame)
        #expect(location == NetifChecksumLocation(network: .ipv4, networkOffset: 14, transport: .tcp, csumStart: 34,
                                                  csumOffset: 16, headerLength: 34 + 32, end: 34 + 32 + 100))
        #expect(location.checksumField == 50)
        #expect(location.transportLength == 132)
    }

    @Test func ipv4UDPWithEthernetPadding() throws {
        let frame = TestFrame(transport: .udp, payload: [1, 2, 3], padding: 15)
        let location = try locate(frame)
        #expect(location == NetifChecksumLocation(network: .ipv4, networkOffset: 14, transport: .udp, csumStart: 34,
                                                  csumOffset: 6, headerLength: 42, end: 45))
        #expect(frame.bytes.count == 60)
    }

    @Test(arguments: [UInt16(0x8100), 0x88A8])
    func oneVLANTag(tpid: UInt16) throws {
        let frame = TestFrame(vlan: tpid, transport: .udp, payload: [9])
        let location = try locate(frame)
        #expect(location.networkOffset == 18)
        #expect(location.csumStart == 38)
        #expect(location.headerLength == 46)
    }

    @Test func secondVLANTagIsRefused() {
        var frame = TestFrame(vlan: 0x88A8, transport: .udp, payload: [9])
        frame.set16(16, 0x8100)
        expectError(frame, .unsupportedEtherType(0x8100))
    }

    @Test func ipv6WithHopByHopAndDestinationOptions() throws {
        let frame = TestFrame(ipv6: true, extensions: [(0, 8), (60, 16)], transport: .tcp, payload: [1, 2, 3, 4])
        let location = try locate(frame)
        #expect(location == NetifChecksumLocation(network: .ipv6, networkOffset: 14, transport: .tcp,
                                                  csumStart: 14 + 40 + 24, csumOffset: 16,
                                                  headerLength: 14 + 40 + 24 + 20, end: 14 + 40 + 24 + 24))
    }

    @Test func ipv6RoutingHeaderIsWalked() throws {
        let frame = TestFrame(ipv6: true, extensions: [(43, 24)], transport: .udp, payload: [])
        #expect(try locate(frame).csumStart == 14 + 40 + 24)
    }

    @Test func ipv4TruncatedAtEachLayer() throws {
        let full = TestFrame(vlan: 0x8100, transport: .tcp, payload: [1, 2, 3, 4])
        for cut in 0..<full.end {
            var frame = full
            frame.bytes = Array(full.bytes[..<cut])
            let layer: NetifPacketLayer = cut < 14 ? .ethernet : cut < 18 ? .vlan : cut < 38 ? .ipv4 : .ipv4Payload
            let needed = cut < 14 ? 14 : cut < 18 ? 18 : cut < 38 ? 38 : full.end
            expectError(frame, .packetTruncated(layer: layer, needed: needed, available: cut))
        }
    }

    @Test func ipv6TruncatedAtEachLayer() throws {
        let full = TestFrame(ipv6: true, extensions: [(0, 8)], transport: .udp, payload: [1])
        for cut in 14..<full.end {
            var frame = full
            frame.bytes = Array(full.bytes[..<cut])
            let expected: NetifError = cut < 54 ? .packetTruncated(layer: .ipv6, needed: 54, available: cut)
                : .packetTruncated(layer: .ipv6Payload, needed: full.end, available: cut)
            expectError(frame, expected)
        }
    }

    @Test func transportHeadersCutByTheIPLength() {
        // The IP length ends inside the transport header, though the frame goes on.
        var tcp = TestFrame(transport: .tcp, payload: Array(repeating: 0, count: 40))
        tcp.set16(16, 20 + 10)
        expectError(tcp, .packetTruncated(layer: .tcp, needed: 54, available: 44))

        var options = TestFrame(transport: .tcp, payload: Array(repeating: 0, count: 40))
        options.bytes[34 + 12] = 0xF0 // 60-byte header in a 20 + 40-byte segment: fits
        #expect(throws: Never.self) { _ = try locate(options) }
        options.set16(16, 20 + 59)
        expectError(options, .packetTruncated(layer: .tcp, needed: 94, available: 93))

        var udp = TestFrame(transport: .udp, payload: [1, 2, 3])
        udp.set16(16, 20 + 4)
        expectError(udp, .packetTruncated(layer: .udp, needed: 42, available: 38))

        var v6 = TestFrame(ipv6: true, extensions: [(60, 16)], transport: .udp, payload: Array(repeating: 0, count: 20))
        v6.set16(18, 12) // the payload ends inside the destination-options header
        expectError(v6, .packetTruncated(layer: .ipv6ExtensionHeader, needed: 70, available: 66))
    }

    @Test func fragmentsAreRefused() {
        var moreFragments = TestFrame(transport: .udp, payload: [1])
        moreFragments.set16(20, 0x2000)
        expectError(moreFragments, .ipFragment(.ipv4))
        var later = TestFrame(transport: .udp, payload: [1])
        later.set16(20, 0x0004)
        expectError(later, .ipFragment(.ipv4))
        var dontFragment = TestFrame(transport: .udp, payload: [1])
        dontFragment.set16(20, 0x4000)
        #expect(throws: Never.self) { _ = try locate(dontFragment) }

        let v6 = TestFrame(ipv6: true, extensions: [(0, 8), (44, 8)], transport: .udp, payload: [1])
        expectError(v6, .ipFragment(.ipv6))
    }

    @Test func malformedIPv4Headers() {
        var shortIHL = TestFrame(transport: .udp, payload: [1])
        shortIHL.bytes[14] = 0x44
        expectError(shortIHL, .ipv4HeaderLength(ihl: 4))
        var longIHL = TestFrame(transport: .udp, payload: [1])
        longIHL.bytes[14] = 0x4F // 60 bytes of header in a 43-byte frame
        expectError(longIHL, .packetTruncated(layer: .ipv4, needed: 74, available: 43))
        var shortTotal = TestFrame(transport: .udp, payload: [1])
        shortTotal.set16(16, 19)
        expectError(shortTotal, .ipv4TotalLength(total: 19, headerLength: 20))
        var version = TestFrame(transport: .udp, payload: [1])
        version.bytes[14] = 0x65
        expectError(version, .ipVersion(found: 6, expected: 4))
        var v6Version = TestFrame(ipv6: true, transport: .udp, payload: [1])
        v6Version.bytes[14] = 0x40
        expectError(v6Version, .ipVersion(found: 4, expected: 6))
    }

    @Test func badTCPDataOffset() {
        var frame = TestFrame(transport: .tcp, payload: [1])
        frame.bytes[34 + 12] = 0x40
        expectError(frame, .tcpDataOffset(4))
    }

    @Test func unsupportedProtocols() {
        var arp = TestFrame(transport: .udp, payload: [1])
        arp.set16(12, 0x0806)
        expectError(arp, .unsupportedEtherType(0x0806))
        var icmp = TestFrame(transport: .udp, payload: [1])
        icmp.bytes[14 + 9] = 1
        expectError(icmp, .unsupportedTransportProtocol(1))
        var authentication = TestFrame(ipv6: true, extensions: [(0, 8)], transport: .udp, payload: [1])
        authentication.bytes[54] = 51
        expectError(authentication, .unsupportedIPv6ExtensionHeader(51))
        var jumbo = TestFrame(ipv6: true, transport: .udp, payload: [1])
        jumbo.set16(18, 0)
        expectError(jumbo, .ipv6Jumbogram)
    }

    @Test func completionRefusesRangesOutsideTheFrame() {
        var bytes = [UInt8](repeating: 0, count: 40)
        for (start, offset, end) in [(-1, 6, 40), (34, 6, 41), (34, 5, 40), (38, 0, 39), (20, 0, 10)] {
            #expect(throws: NetifError.checksumOutOfBounds(start: start, offset: offset, end: end, length: 40)) {
                try bytes.withUnsafeMutableBytes { buffer in
                    try NetifChecksumOffload.completePartialChecksum(in: buffer, start: start, offset: offset, end: end)
                }
            }
        }
        #expect(throws: Never.self) {
            try bytes.withUnsafeMutableBytes { buffer in
                try NetifChecksumOffload.completePartialChecksum(in: buffer, start: 34, offset: 4, end: 40)
            }
        }
    }

    /// Random TCP and UDP segments over IPv4 and IPv6 (with extension headers and a VLAN
    /// tag at times): the pseudo-header sum written where a frontend leaves it, then the
    /// checksum finished at csumStart/csumOffset, must equal a from-scratch checksum and
    /// verify.
    @Test func completingAPartialChecksumMatchesFromScratch() throws {
        var random = SeededGenerator(seed: 0xC5_0FF1_0AD)
        for _ in 0..<400 {
            let ipv6 = random.next() % 2 == 0
            let transport: NetifTransportProtocol = random.next() % 2 == 0 ? .tcp : .udp
            let extensionTypes: [UInt8] = [0, 43, 60]
            let extensions: [(UInt8, Int)] = ipv6 ? (0..<Int(random.next() % 3)).map { _ in
                (extensionTypes[Int(random.next() % 3)], 8 * Int(1 + random.next() % 3))
            } : []
            let payload = (0..<Int(random.next() % 1500)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            var frame = TestFrame(vlan: random.next() % 4 == 0 ? 0x8100 : nil, ipv6: ipv6, extensions: extensions,
                                  transport: transport, payload: payload, tcpOptionWords: Int(random.next() % 11),
                                  padding: Int(random.next() % 3))

            let location = try locate(frame)
            #expect(location.csumStart == frame.transportOffset)
            #expect(location.headerLength == frame.headerEnd)
            #expect(location.end == frame.end)

            let pseudo = frame.pseudoHeader(ipv6: ipv6, transport: transport)
            let segment = Array(frame.bytes[frame.transportOffset..<frame.end])
            let scratch = ~scratchSum(pseudo + segment)

            frame.bytes.withUnsafeMutableBytes { NetifChecksumOffload.writePseudoHeaderSum(into: $0, at: location) }
            #expect(frame.get16(location.checksumField) == scratchSum(pseudo))
            try frame.bytes.withUnsafeMutableBytes { buffer in
                try NetifChecksumOffload.completePartialChecksum(in: buffer, at: location)
            }
            let field = frame.get16(location.checksumField)
            #expect(field == (scratch == 0 ? 0xFFFF : scratch))
            let finished = Array(frame.bytes[frame.transportOffset..<frame.end])
            #expect(scratchSum(pseudo + finished) == 0xFFFF, "the finished checksum verifies")
            #expect(InternetChecksum.checksum(of: pseudo + finished) == 0)
        }
    }
}

@Suite struct InternetChecksumTests {
    /// RFC 1071 section 3's example: the words sum to 0xddf2.
    @Test func rfc1071Example() {
        var sum = InternetChecksum()
        sum.add([0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7])
        #expect(sum.sum16 == 0xDDF2)
        #expect(sum.checksum == 0x220D)
    }

    @Test func piecesOfAnyLengthSumAsTheWhole() {
        var random = SeededGenerator(seed: 1071)
        for _ in 0..<200 {
            let bytes = (0..<Int(random.next() % 300)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            var pieces = InternetChecksum()
            var index = 0
            while index < bytes.count {
                let length = min(Int(random.next() % 9), bytes.count - index)
                pieces.add(Array(bytes[index..<(index + length)]))
                index += length
            }
            #expect(pieces.sum16 == scratchSum(bytes))
            #expect(InternetChecksum.checksum(of: bytes) == ~scratchSum(bytes))
        }
    }

    @Test func wordsAfterAnOddPieceKeepTheirPlace() {
        var sum = InternetChecksum()
        sum.add([0x12])
        sum.add(word: 0x3456)
        // 0x12 then 0x34 0x56: words 0x1234, 0x5600.
        #expect(sum.sum16 == scratchSum([0x12, 0x34, 0x56]))
    }
}
