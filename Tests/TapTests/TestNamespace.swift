import Foundation
import Tap

/// A network namespace made for one test (`ip netns add`) with a name unique to this
/// process, and deleted by ``delete()`` on every path (the tests `defer` it).
final class TestNamespace {
    private static let counter = Counter()

    let name: String
    let namespace: NetworkNamespace

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init() throws {
        name = "xensplit-tap-\(getpid())-\(Self.counter.next())"
        namespace = try NetworkNamespace(name)
        try Self.ip(["netns", "add", name])
    }

    /// `ip -n NAME ARGS...`, throwing with its stderr when it fails.
    func ip(_ arguments: String...) throws {
        try Self.ip(["-n", name] + arguments)
    }

    /// Whether `ip -n NAME link show dev DEVICE` finds the device.
    func hasLink(_ device: String) throws -> Bool {
        try Command.run("/usr/sbin/ip", ["-n", name, "link", "show", "dev", device]).status == 0
    }

    /// A sysfs file of the namespace, read where `ip netns exec` mounts the namespace's
    /// own sysfs (a thread that only entered the namespace still sees the host's).
    func readSysfs(_ path: String) throws -> String {
        let result = try Command.run("/usr/sbin/ip", ["netns", "exec", name, "cat", path])
        guard result.status == 0 else { throw Failure(description: "cat \(path) in \(name): \(result.stderr)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func delete() {
        _ = try? Command.run("/usr/sbin/ip", ["netns", "del", name])
    }

    private static func ip(_ arguments: [String]) throws {
        let result = try Command.run("/usr/sbin/ip", arguments)
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
