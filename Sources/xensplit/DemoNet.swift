import Foundation
import Glibc
import Logging
import NetBackend
import NetFrontend
import Netif
import SystemCalls
import Tap
import URing
import XenLocal
import XenPlatform

/// The demo's net step: dom0's network side in a namespace of its own (a bridge with an
/// address, and the net backend's TAP devices), one vif for the guest put on the bridge by
/// the toolstack's vif-bridge script, the guest's netfront as TAP device `eth0` in a second
/// namespace; then ping and a checksummed TCP transfer both ways. Teardown removes both
/// namespaces.
final class DemoNet: @unchecked Sendable {
    // @unchecked: used from one task at a time (the demo's run, then its teardown).
    static let bridge = "xsdemobr0"
    static let dom0Address = "198.18.100.1"
    static let guestAddress = "198.18.100.2"
    static let port: UInt16 = 5201

    let logger: Logger
    let say: (String) -> Void
    private var namespaces: [String] = []
    private var daemon: NetbackDaemon?
    private var daemonTask: Task<Void, any Error>?
    private var frontend: NetFrontend?
    private var tap: TapDevice?
    /// The backend's interface for the guest's vif, once attached.
    private var vif: String?

    init(logger: Logger, say: @escaping (String) -> Void) {
        self.logger = logger
        self.say = say
    }

    /// The namespaces' names: unique to this process.
    var dom0Namespace: String { "xsdemo-\(getpid())-dom0" }
    var guestNamespace: String { "xsdemo-\(getpid())-guest" }

    /// Makes dom0's namespace and bridge and starts the net backend there; returns the
    /// toolstack, set to run hotplug scripts in that namespace.
    func startBackend(dom0: LocalPlatform, toolstack: LocalToolstack, factory: BlockIOEngineFactory) throws -> LocalToolstack {
        try Self.ip(["netns", "add", dom0Namespace])
        namespaces.append(dom0Namespace)
        try Self.ip(["-n", dom0Namespace, "link", "set", "dev", "lo", "up"])
        try Self.ip(["-n", dom0Namespace, "link", "add", Self.bridge, "type", "bridge"])
        try Self.ip(["-n", dom0Namespace, "addr", "add", Self.dom0Address + "/24", "dev", Self.bridge])
        try Self.ip(["-n", dom0Namespace, "link", "set", "dev", Self.bridge, "up"])
        var limits = NetbackDeviceLimits()
        limits.namespace = try NetworkNamespace(dom0Namespace)
        let daemon = try NetbackDaemon(platform: dom0, configuration: .init(workers: 1, limits: limits), factory: factory,
                                       logger: logger)
        self.daemon = daemon
        daemonTask = Task { try await daemon.run() }
        var toolstack = toolstack
        toolstack.scriptNetworkNamespace = NetworkNamespace.directory + "/" + dom0Namespace
        say("net backend started in network namespace \(dom0Namespace), bridge \(Self.bridge) \(Self.dom0Address)/24")
        return toolstack
    }

    /// Fails unless the backend's interface `vif` is a port of the bridge.
    func checkBridged(_ vif: String) throws {
        self.vif = vif
        let result = try Self.run(Self.ipPath, ["-n", dom0Namespace, "-o", "link", "show", "dev", vif])
        guard result.status == 0, result.output.contains(" master \(Self.bridge) ") else {
            throw CommandFailure("\(vif) is not on bridge \(Self.bridge): \(result.output)")
        }
    }

    /// Starts the guest's netfront on TAP device `eth0` in a namespace of its own and waits
    /// for the backend to connect it.
    func startFrontend(guest: LocalPlatform, devid: UInt32) async throws {
        try Self.ip(["netns", "add", guestNamespace])
        namespaces.append(guestNamespace)
        let namespace = try NetworkNamespace(guestNamespace)
        let frontend = try NetFrontend(platform: guest, devid: devid, logger: logger)
        self.frontend = frontend
        let vif = try await frontend.vifSettings()
        let tap = try TapDevice(name: "eth0", in: namespace)
        self.tap = tap
        try tap.setHardwareAddress(EthernetAddress(vif.mac[0], vif.mac[1], vif.mac[2], vif.mac[3], vif.mac[4], vif.mac[5]))
        try tap.setMTU(Int(vif.mtu))
        try tap.setCarrier(false)
        try tap.setUp(true)
        try frontend.attachTap(tap)
        let link = try await frontend.connected()
        try Self.ip(["-n", guestNamespace, "link", "set", "dev", "lo", "up"])
        try Self.ip(["-n", guestNamespace, "addr", "add", Self.guestAddress + "/24", "dev", "eth0"])
        say("vif \(devid) connected: netfront eth0 in namespace \(guestNamespace) (\(Self.guestAddress)/24), "
            + "mac \(link.macAddress), mtu \(link.mtu), sg \(link.backend.scatterGather)")
    }

    /// Pings each way, then sends `bytes` of a seeded pattern over TCP each way and compares
    /// checksums of what was sent and what arrived.
    func exercise(bytes: Int, seed: UInt64) async throws {
        for (from, to, label) in [(guestNamespace, Self.dom0Address, "guest to dom0"), (dom0Namespace, Self.guestAddress, "dom0 to guest")] {
            let arguments = ["netns", "exec", from, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "5", to]
            let result = try await Self.onThread { try Self.run(Self.ipPath, arguments) }
            guard result.status == 0 else { throw CommandFailure("ping \(label) (\(to)) failed: \(result.output)") }
            let summary = result.output.split(separator: "\n").first { $0.contains("packets transmitted") } ?? ""
            say("ping \(label): \(summary)")
        }
        var generator = SplitMix64(seed: seed)
        var pattern = [UInt8](repeating: 0, count: bytes)
        pattern.withUnsafeMutableBytes { raw in
            for i in stride(from: 0, to: bytes - 7, by: 8) { raw.storeBytes(of: generator.next(), toByteOffset: i, as: UInt64.self) }
        }
        let expected = fnv1a(pattern[...])
        let mib = bytes >> 20
        for (from, to, address, label) in [(guestNamespace, dom0Namespace, Self.dom0Address, "guest to dom0"),
                                           (dom0Namespace, guestNamespace, Self.guestAddress, "dom0 to guest")] {
            let start = ContinuousClock.now
            let received = try await Self.transfer(pattern, from: try NetworkNamespace(from), to: try NetworkNamespace(to),
                                                   address: address, port: Self.port)
            let time = ContinuousClock.now - start
            guard received.count == bytes, fnv1a(received[...]) == expected else {
                throw CommandFailure("TCP \(label): \(received.count) of \(bytes) bytes arrived, checksum "
                                     + (fnv1a(received[...]) == expected ? "matches" : "differs"))
            }
            say(String(format: "TCP \(label): sent \(mib) MiB, received \(mib) MiB, checksums match (%.0f Mbit/s)",
                       Double(bytes) * 8 / 1e6 / time.seconds))
        }
    }

    /// Closes the netfront and its TAP device: before the domain is destroyed.
    func closeFrontend(fail: (String) -> Void) async {
        if let frontend {
            let left = await frontend.close()
            if left > 0 { fail("the netfront left \(left) granted page sets mapped") }
        }
        frontend = nil
        tap?.close()
        tap = nil
    }

    /// Stops the net backend and removes the namespaces: after the domain is destroyed.
    /// Returns whether anything was set up.
    @discardableResult
    func stop(fail: (String) -> Void) async -> Bool {
        let any = daemon != nil || !namespaces.isEmpty
        if let daemon, let daemonTask {
            daemon.stop()
            do { try await daemonTask.value } catch { fail("the net backend stopped with: \(error)") }
        }
        daemon = nil
        daemonTask = nil
        // The domain is destroyed by now, so the backend has removed its interface.
        if let vif, namespaces.contains(dom0Namespace),
           (try? Self.run(Self.ipPath, ["-n", dom0Namespace, "link", "show", "dev", vif]).status) == 0 {
            fail("\(vif) is still in namespace \(dom0Namespace)")
        }
        for name in namespaces.reversed() {
            do { try Self.ip(["netns", "del", name]) } catch { fail("removing network namespace \(name): \(error)") }
        }
        namespaces = []
        return any
    }

    // MARK: - Helpers

    static let ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { (path: String) in access(path, X_OK) == 0 }
        ?? "/usr/sbin/ip"

    static func ip(_ arguments: [String]) throws {
        let result = try run(ipPath, arguments)
        guard result.status == 0 else {
            throw CommandFailure("ip \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)")
        }
    }

    /// Runs a program to its end; its standard output and error together.
    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = try ChildProcess(path, arguments, standardOutput: .pipe, standardError: .standardOutput)
        let output = try process.collectOutput().standardOutput
        return (process.wait().code, String(decoding: output, as: UTF8.self))
    }

    /// Sends `data` from a TCP socket made in `from` to a listener made in `to`, each side on
    /// a thread of its own (a socket stays in the namespace it was made in), and returns what
    /// the listener read. Every blocking call is bounded by a 30 s socket timeout.
    static func transfer(_ data: [UInt8], from: NetworkNamespace, to: NetworkNamespace, address: String,
                         port: UInt16) async throws -> [UInt8] {
        let listener = try socket(in: to, type: SOCK_STREAM)
        defer { close(listener) }
        var on: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        try check(withAddress(address, port) { bind(listener, $0, $1) }, "bind \(address):\(port)")
        try check(listen(listener, 1), "listen")
        let sender = try socket(in: from, type: SOCK_STREAM)
        async let received = onThread { () throws -> [UInt8] in
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 30_000) == 1 else { throw CommandFailure("no TCP connection within 30 s") }
            let fd = accept(listener, nil, nil)
            try check(fd, "accept")
            defer { close(fd) }
            setTimeout(fd)
            var out: [UInt8] = []
            out.reserveCapacity(data.count)
            var buffer = [UInt8](repeating: 0, count: 256 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if n == 0 { return out }
                try check(n < 0 ? -1 : 0, "recv after \(out.count) bytes")
                out += buffer[0..<n]
            }
        }
        try await onThread {
            defer { close(sender) }
            setTimeout(sender)
            try check(withAddress(address, port) { connect(sender, $0, $1) }, "connect \(address):\(port)")
            var sent = 0
            while sent < data.count {
                let n = data.withUnsafeBytes { send(sender, $0.baseAddress! + sent, min(64 << 10, data.count - sent), Int32(MSG_NOSIGNAL)) }
                try check(n < 0 ? -1 : 0, "send after \(sent) bytes")
                sent += n
            }
            shutdown(sender, Int32(SHUT_WR))
        }
        return try await received
    }

    static func socket(in namespace: NetworkNamespace, type: __socket_type) throws -> Int32 {
        let fd = try namespace.run { Glibc.socket(AF_INET, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }.get()
        try check(fd, "socket in namespace \(namespace.name)")
        return fd
    }

    static func setTimeout(_ fd: Int32) {
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    static func withAddress(_ ip: String, _ port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &a.sin_addr)
        return withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    static func check(_ result: Int32, _ what: String) throws {
        guard result >= 0 else { throw CommandFailure("\(what): \(String(cString: strerror(errno)))") }
    }

    /// Runs blocking `body` on a thread of its own, so no task's thread waits on a socket.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }
}
