import Netif
import Tap

/// IPv4 frames built by hand for the TAP tests, with the checksums the wire wants.
enum Frames {
    static let etherTypeIPv4: [UInt8] = [0x08, 0x00]

    static func ethernet(to destination: EthernetAddress, from source: EthernetAddress) -> [UInt8] {
        destination.octets + source.octets + etherTypeIPv4
    }

    /// An IPv4 header (20 bytes, DF, TTL 64) with its header checksum.
    static func ipv4(from source: [UInt8], to destination: [UInt8], protocol value: UInt8, payloadLength: Int) -> [UInt8] {
        let total = 20 + payloadLength
        var header: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, value, 0, 0]
        header += source + destination
        let checksum = InternetChecksum.checksum(of: header)
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xFF)
        return header
    }

    /// An ICMP echo request (type 8) with its checksum.
    static func echoRequest(identifier: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var icmp: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF),
                             UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + payload
        let checksum = InternetChecksum.checksum(of: icmp)
        icmp[2] = UInt8(checksum >> 8)
        icmp[3] = UInt8(checksum & 0xFF)
        return icmp
    }

    /// A UDP header and payload with a zero checksum field.
    static func udp(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF),
                UInt8(length >> 8), UInt8(length & 0xFF), 0, 0] + payload
    }

    static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
}
