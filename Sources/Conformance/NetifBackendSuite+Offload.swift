import Netif
import SharedMemory

extension NetifBackendSuite {
    static let guestIP: [UInt8] = [198, 18, 99, 2]
    static let hostIP: [UInt8] = [198, 18, 99, 1]

    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

    /// An IPv4 packet from the guest to the vif, `transport` its payload (protocol
    /// `proto`), in an Ethernet frame; the IP header's checksum is set.
    static func ipv4Frame(_ peer: NetfrontPeer, proto: UInt8, transport: [UInt8]) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0] + u16(20 + transport.count) + [0x12, 0x34, 0x40, 0, 64, proto, 0, 0] + guestIP + hostIP
        let sum = InternetChecksum.checksum(of: ip)
        ip[10] = UInt8(sum >> 8)
        ip[11] = UInt8(sum & 0xFF)
        return [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + peer.mac + [0x08, 0x00] + ip + transport
    }

    /// The ones'-complement sum of the IPv4 pseudo-header for `length` bytes of `proto`,
    /// folded (what a frontend leaves in a blank checksum field).
    static func pseudoSum(proto: UInt8, length: Int) -> UInt16 {
        var sum = InternetChecksum()
        sum.add(guestIP + hostIP + [0, proto] + u16(length))
        return sum.sum16
    }

    /// Whether the transport checksum of an IPv4 `frame` (header at 14, 20 bytes) verifies.
    static func transportChecksumValid(_ frame: [UInt8], proto: UInt8) -> Bool {
        guard frame.count > 34 else { return false }
        var sum = InternetChecksum()
        sum.add(guestIP + hostIP + [0, proto] + u16(frame.count - 34))
        sum.add(Array(frame[34...]))
        return sum.sum16 == 0xFFFF
    }

    static func header(_ peer: NetfrontPeer) -> (flags: UInt8, gsoType: UInt8, gsoSize: UInt16, csumStart: UInt16, csumOffset: UInt16) {
        let h = peer.host.lastHeader
        guard h.count == 10 else { return (0, 0, 0, 0, 0) }
        func le(_ at: Int) -> UInt16 { UInt16(h[at]) | UInt16(h[at + 1]) << 8 }
        return (h[0], h[1], le(4), le(6), le(8))
    }

    static let offload: [Check] = [
        connected("NETIF-BE-014") { peer in
            let payload = pattern(200, seed: 0x0C5)
            var udp = u16(4000) + u16(9) + u16(8 + payload.count) + [0, 0] + payload
            let pseudo = pseudoSum(proto: 17, length: udp.count)
            udp[6] = UInt8(pseudo >> 8)
            udp[7] = UInt8(pseudo & 0xFF)
            let frame = ipv4Frame(peer, proto: 17, transport: udp)
            let id = try peer.sendFrame(frame, flags: [.checksumBlank])
            let responses = try peer.txResponses(1)
            guard let seen = try peer.host.receive(within: NetfrontPeer.crossing, matching: { $0.count == frame.count && $0[42...] == frame[42...] }) else {
                return .fail("answered \(describe(responses)); the datagram did not reach the host")
            }
            let h = header(peer)
            let complete = transportChecksumValid(seen, proto: 17)
            // NEEDS_CSUM with the UDP checksum's place: the offload handed on intact.
            let partial = h.flags & 1 != 0 && h.csumStart == 34 && h.csumOffset == 6
            return .expect(responses == [NetifTxResponse(id: id, status: .okay)] && (complete || partial),
                           "answered \(describe(responses)); on the host the UDP checksum \(complete ? "verifies" : "does not verify"), virtio-net flags \(h.flags) csum_start \(h.csumStart) csum_offset \(h.csumOffset)")
        },
        connected("NETIF-BE-015") { peer in
            let payload = pattern(3000 - 54, seed: 0x650)
            var tcp = u16(4000) + u16(9) + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18] + u16(0xFFFF) + [0, 0, 0, 0] + payload
            let pseudo = pseudoSum(proto: 6, length: tcp.count)
            tcp[16] = UInt8(pseudo >> 8)
            tcp[17] = UInt8(pseudo & 0xFF)
            let frame = ipv4Frame(peer, proto: 6, transport: tcp)
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [.checksumBlank, .extraInfo], id: id,
                                              size: UInt16(frame.count)), data: frame)
            try peer.produceExtra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))
            try peer.pushTx()
            let responses = try peer.txResponses(2)
            var bytes = 0
            var segments = 0
            var gso = ""
            // The host sees the packet whole (GSO) or already cut into segments.
            while bytes < payload.count, let seen = try peer.host.receive(within: NetfrontPeer.crossing, matching: { seen in
                seen.count > 54 && seen[12] == 0x08 && seen[23] == 6 && seen[26 ..< 34] == frame[26 ..< 34]
            }) {
                let h = header(peer)
                if h.gsoType != 0 { gso = " (GSO type \(h.gsoType), size \(h.gsoSize))" }
                let sequence = Int(seen[38]) << 24 | Int(seen[39]) << 16 | Int(seen[40]) << 8 | Int(seen[41])
                let part = Array(seen[54...])
                guard sequence >= 1, sequence - 1 + part.count <= payload.count,
                      part == Array(payload[(sequence - 1) ..< (sequence - 1 + part.count)]) else {
                    return .fail("answered \(describe(responses)); a segment at sequence \(sequence) does not carry the payload's bytes")
                }
                bytes += part.count
                segments += 1
            }
            return .expect(okayThenNull(responses, id: id) && bytes == payload.count,
                           "answered \(describe(responses)); the host got \(bytes) of \(payload.count) payload bytes in \(segments) frame(s)\(gso)")
        },
    ]
}

extension NetifBackendSuite {
    static let rate: [Check] = [
        connected("NETIF-BE-080") { peer in
            guard let text = peer.atConnected[NetifToolstackKeys.rate] else { return .notApplicable("no rate node") }
            let rate = try NetifRate(xenstore: text)
            // Past the burst and a few intervals' worth, in batches of 32 distinct frames
            // (the host side reads each batch before the next is sent).
            let frameSize = 1400
            let batches = max(2, Int((rate.burst + 4 * rate.bytesPerInterval) / UInt64(32 * frameSize)) + 1)
            var answered = 0, okay = 0, arrived = 0
            let clock = ContinuousClock()
            let start = clock.now
            for _ in 0 ..< batches {
                var sent: [[UInt8]] = []
                var ids: [UInt16] = []
                for slot in 0 ..< 32 {
                    let frame = peer.frame(size: frameSize)
                    let id = peer.takeTxID()
                    try peer.produceTx(NetifTxRequest(gref: peer.data.refs[slot / 2], offset: UInt16(slot % 2 * 2048), flags: [], id: id,
                                                      size: UInt16(frame.count)), data: frame)
                    sent.append(frame)
                    ids.append(id)
                }
                try peer.pushTx()
                let responses = try peer.txResponses(32, within: .seconds(60))
                answered += responses.count
                okay += zip(responses, ids).filter { $0.0 == NetifTxResponse(id: $0.1, status: .okay) }.count
                for frame in sent where try peer.seenOnHost(frame) != nil { arrived += 1 }
            }
            let total = batches * 32
            let elapsed = clock.now - start
            return .expect(answered == total && okay == total && arrived == total,
                           "rate \(text): \(total) frames of \(frameSize) bytes (\(total * frameSize) bytes, burst \(rate.burst)): \(okay) answered OKAY in order, \(arrived) on the host, over \(elapsed)")
        },
    ]
}
