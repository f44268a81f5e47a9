import Foundation
import SystemCalls
import Netif
import Tap

/// IPv4 frames built by hand for the network tests, with the checksums the wire wants.
public enum TestFrames {
    public static let etherTypeIPv4: [UInt8] = [0x08, 0x00]

    public static func ethernet(to destination: EthernetAddress, from source: EthernetAddress) -> [UInt8] {
        destination.octets + source.octets + etherTypeIPv4
    }

    /// An IPv4 header (20 bytes, DF, TTL 64) with its header checksum.
    public static func ipv4(from source: [UInt8], to destination: [UInt8], protocol value: UInt8, payloadLength: Int) -> [UInt8] {
        let total = 20 + payloadLength
        var header: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, value, 0, 0]
        header += source + destination
        let checksum = InternetChecksum.checksum(of: header)
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xFF)
        return header
    }

    /// An ICMP echo request (type 8) with its checksum.
    public static func echoRequest(identifier: UInt16, sequence: UInt16, payload: [UInt8]) -> [UInt8] {
        var icmp: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF),
                             UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + payload
        let checksum = InternetChecksum.checksum(of: icmp)
        icmp[2] = UInt8(checksum >> 8)
        icmp[3] = UInt8(checksum & 0xFF)
        return icmp
    }

    /// A UDP header and payload with a zero checksum field.
    public static func udp(sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        let length = 8 + payload.count
        return [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8), UInt8(destinationPort & 0xFF),
                UInt8(length >> 8), UInt8(length & 0xFF), 0, 0] + payload
    }

    public static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
}

/// A network namespace made for one test (`ip netns add`) with a name unique to this
/// process, and deleted by ``delete()`` on every path (the tests `defer` it).
public final class TestNamespace: Sendable {
    private static let counter = Counter()

    public let name: String
    public let namespace: NetworkNamespace

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public init(prefix: String = "xensplit-tap") throws {
        name = "\(prefix)-\(getpid())-\(Self.counter.next())"
        namespace = try NetworkNamespace(name)
        try Self.ip(["netns", "add", name])
    }

    /// `ip -n NAME ARGS...`, throwing with its stderr when it fails.
    public func ip(_ arguments: String...) throws {
        try Self.ip(["-n", name] + arguments)
    }

    /// Whether `ip -n NAME link show dev DEVICE` finds the device.
    public func hasLink(_ device: String) throws -> Bool {
        try TestCommand.run("/usr/sbin/ip", ["-n", name, "link", "show", "dev", device]).status == 0
    }

    /// A sysfs file of the namespace, read where `ip netns exec` mounts the namespace's
    /// own sysfs (a thread that only entered the namespace still sees the host's).
    public func readSysfs(_ path: String) throws -> String {
        let result = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", name, "cat", path])
        guard result.status == 0 else { throw Failure(description: "cat \(path) in \(name): \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func delete() {
        _ = try? TestCommand.run("/usr/sbin/ip", ["netns", "del", name])
    }

    private static func ip(_ arguments: [String]) throws {
        let result = try TestCommand.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else {
            throw Failure(description: "ip \(arguments.joined(separator: " ")) exited \(result.status): \(result.stderr)")
        }
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int {
            lock.lock()
            defer { lock.unlock() }
            value += 1
            return value
        }
    }
}

/// A program run to its end, its output collected from files read after it exits (a
/// pipe could be held open by a daemon it started).
public enum TestCommand {
    /// Runs `path` to its end: its status (the exit code, or the signal that ended it) and
    /// its output and error.
    public static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xensplit-cmd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        let status = try ChildProcess(path, arguments, standardOutput: .file(outURL.path), standardError: .file(errURL.path)).wait()
        return (status.code, try String(contentsOf: outURL, encoding: .utf8), try String(contentsOf: errURL, encoding: .utf8))
    }
}

extension TestCommand {
    /// The `xensplit` built beside the running test bundle (the package's products share
    /// one directory).
    public static var xensplit: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit").path
    }

    /// Starts `path` with `arguments`, its output discarded; the caller waits or signals it.
    public static func spawn(_ path: String, _ arguments: [String]) throws -> ChildProcess {
        try ChildProcess(path, arguments, standardOutput: .null, standardError: .null)
    }
}
