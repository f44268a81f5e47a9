import Foundation
import Logging
import Netif
import Synchronization
import SystemCalls
import Tap

/// Quiet unless something goes wrong.
let testLogger: Logger = {
    var logger = Logger(label: "netfront-tests")
    logger.logLevel = .error
    return logger
}()

/// Hand-built Ethernet frames with the checksums the wire wants.
enum Frames {
    static let guestMAC = EthernetAddress(0x00, 0x16, 0x3E, 0x12, 0x34, 0x56)
    static let peerMAC = EthernetAddress(0x02, 0x00, 0x00, 0x00, 0x00, 0x02)
    static let guestIP: [UInt8] = [198, 18, 0, 1]
    static let peerIP: [UInt8] = [198, 18, 0, 2]

    static func ethernet(to destination: EthernetAddress, from source: EthernetAddress, type: UInt16) -> [UInt8] {
        destination.octets + source.octets + [UInt8(type >> 8), UInt8(type & 0xFF)]
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

    /// An IPv6 header (40 bytes, hop limit 64) between two ULA addresses.
    static func ipv6(next: UInt8, payloadLength: Int) -> [UInt8] {
        [0x60, 0, 0, 0, UInt8(payloadLength >> 8), UInt8(payloadLength & 0xFF), next, 64]
            + [0xFD] + [UInt8](repeating: 0, count: 14) + [1] + [0xFD] + [UInt8](repeating: 0, count: 14) + [2]
    }

    static func udp(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF),
                UInt8(length >> 8), UInt8(length & 0xFF), 0, 0] + payload
    }

    /// A bare TCP header (data offset 5, ACK) and payload, checksum zero.
    static func tcp(payload: [UInt8]) -> [UInt8] {
        [0x9C, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xFF, 0xFF, 0, 0, 0, 0] + payload
    }

    static func payload(_ count: Int, seed: Int = 7) -> [UInt8] {
        (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &+ $0 / 251) }
    }

    /// A UDP/IPv4 frame from the peer to the guest, checksum zero (none).
    static func udp4(payload: [UInt8], port: UInt16 = 40_321) -> [UInt8] {
        let udp = udp(sourcePort: 5555, destinationPort: port, payload: payload)
        return ethernet(to: guestMAC, from: peerMAC, type: 0x0800)
            + ipv4(from: peerIP, to: guestIP, protocol: 17, payloadLength: udp.count) + udp
    }

    static func tcp4(payload: [UInt8]) -> [UInt8] {
        let tcp = tcp(payload: payload)
        return ethernet(to: guestMAC, from: peerMAC, type: 0x0800)
            + ipv4(from: peerIP, to: guestIP, protocol: 6, payloadLength: tcp.count) + tcp
    }

    static func tcp6(payload: [UInt8]) -> [UInt8] {
        let tcp = tcp(payload: payload)
        return ethernet(to: guestMAC, from: peerMAC, type: 0x86DD) + ipv6(next: 6, payloadLength: tcp.count) + tcp
    }

    /// Leaves the frame's transport checksum partial (the pseudo-header sum in its field),
    /// as a kernel hands it with NEEDS_CSUM; returns the virtio-net header saying so.
    static func makePartial(_ frame: inout [UInt8]) throws -> VirtioNetHeader {
        let location = try NetifChecksumOffload.locate(in: frame)
        frame.withUnsafeMutableBytes { NetifChecksumOffload.writePseudoHeaderSum(into: $0, at: location) }
        return VirtioNetHeader(flags: .needsChecksum, csumStart: UInt16(location.csumStart),
                               csumOffset: UInt16(location.csumOffset))
    }

    /// Whether the frame's finished transport checksum verifies (pseudo-header and segment
    /// sum to zero).
    static func checksumVerifies(_ frame: [UInt8]) throws -> Bool {
        let location = try NetifChecksumOffload.locate(in: frame)
        var copy = frame
        copy[location.checksumField] = 0
        copy[location.checksumField + 1] = 0
        let pseudo = copy.withUnsafeBytes { NetifChecksumOffload.pseudoHeaderSum(of: $0, at: location) }
        var sum = InternetChecksum()
        sum.add(word: pseudo)
        sum.add(Array(frame[location.csumStart ..< location.end]))
        return sum.checksum == 0
    }

    static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
}

/// A command's exit status and output.
enum Command {
    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = try ChildProcess(path, arguments, standardOutput: .pipe, standardError: .pipe)
        let (stdout, stderr) = try process.collectOutput()
        return (process.wait().code, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }
}

/// A network namespace made for one test (`ip netns add`), named uniquely for this
/// process, deleted by ``delete()`` on every path.
final class TestNamespace: Sendable {
    private static let counter = Atomic<Int>(0)
    let name: String
    let namespace: NetworkNamespace

    struct Failure: Error, CustomStringConvertible { let description: String }

    init() throws {
        name = "xensplit-nf-\(getpid())-\(Self.counter.add(1, ordering: .relaxed).newValue)"
        namespace = try NetworkNamespace(name)
        try Self.ip(["netns", "add", name])
    }

    /// `ip -n NAME ARGS...`, throwing with its stderr when it fails.
    func ip(_ arguments: String...) throws { try Self.ip(["-n", name] + arguments) }

    func delete() { _ = try? Command.run("/usr/sbin/ip", ["netns", "del", name]) }

    private static func ip(_ arguments: [String]) throws {
        let result = try Command.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw Failure(description: "ip \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
    }
}

/// A seeded generator (SplitMix64), so every run sees the same values.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
