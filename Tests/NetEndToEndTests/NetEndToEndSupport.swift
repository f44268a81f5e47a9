import Foundation
import Glibc
import Logging
import NetBackend
import NetFrontend
import Netif
import SystemCalls
import Tap
import Testing
import URing
import XenBus
import XenLocal
import XenPlatform
import XenStore
import XenTesting

let e2eLogger: Logger = {
    var logger = Logger(label: "net-e2e-tests")
    logger.logLevel = getenv("NET_E2E_TEST_LOG") != nil ? .debug : .critical
    return logger
}()

/// Dom0's side of the net pair, in-process: a local hypervisor, dom0's network namespace
/// with a bridge holding ``bridgeAddress``, a net backend making its TAP devices there, and
/// the toolstack running the repository's `scripts/hotplug/vif-bridge` in that namespace
/// (``LocalToolstack/scriptNetworkNamespace``), as `xl create` would in dom0.
final class NetPair: @unchecked Sendable {
    static let bridge = "xsbr0"
    static let bridgeAddress = "198.19.64.1"

    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack
    let namespace: TestNamespace
    let daemon: NetbackDaemon
    let running: Task<Void, any Error>
    private(set) var guests: [Guest] = []

    /// A bridge of `bridgeMTU`; the backend offers `maxQueues` queue pairs per vif.
    init(bridgeMTU: Int = 1500, maxQueues: UInt32 = 1) throws {
        var template = Array("/tmp/xensplit-net-e2e-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: made)
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 8192
        configuration.grantEntries = 4096
        hypervisor = try LocalHypervisor(configuration: configuration, logger: e2eLogger)
        hypervisor.start()
        namespace = try TestNamespace(prefix: "xse2e")
        do {
            dom0 = try LocalPlatform(stateDirectory: directory)
            var toolstack = LocalToolstack(platform: dom0, timeouts: HotplugTimeouts(initWait: .seconds(30)), logger: e2eLogger)
            toolstack.scriptNetworkNamespace = namespace.namespace.path
            self.toolstack = toolstack
            try namespace.ip("link", "add", Self.bridge, "type", "bridge")
            try namespace.ip("link", "set", "dev", Self.bridge, "mtu", "\(bridgeMTU)")
            try namespace.ip("addr", "add", Self.bridgeAddress + "/24", "dev", Self.bridge)
            try namespace.ip("link", "set", "dev", Self.bridge, "up")
            try namespace.ip("link", "set", "dev", "lo", "up")
            var limits = NetbackDeviceLimits()
            limits.namespace = namespace.namespace
            limits.hotplugTimeout = .seconds(60)
            limits.maxQueues = maxQueues
            let factory = try BlockIOEngineFactory(kind: .uring, configuration: .init(queueDepth: 64, capacity: 1024, threads: 2))
            let daemon = try NetbackDaemon(platform: dom0, configuration: .init(workers: 2, limits: limits), factory: factory,
                                           logger: e2eLogger)
            self.daemon = daemon
            running = Task { try await daemon.run() }
        } catch {
            hypervisor.stopAndWait()
            namespace.delete()
            throw error
        }
    }

    /// Creates domain `name` with one vif on the bridge (`extra` more VIFSPEC settings) the
    /// way `xl create` does, hotplug script included, then starts its netfront with a TAP
    /// device `eth0` in a namespace of its own holding 198.19.64.`host`/24; with `queues`,
    /// the netfront asks for that many queue pairs and its TAP device is multi-queue.
    func guest(_ name: String, host: Int, extra: String = "", queues: Int? = nil) async throws -> Guest {
        let mac = String(format: "00:16:3e:40:00:%02x", host)
        let spec = try VifSpec(parsing: "bridge=\(Self.bridge),mac=\(mac)" + (extra.isEmpty ? "" : "," + extra))
        let id = try await toolstack.createDomain(name: name, disks: [], nics: [spec])
        let guest = try await Guest(name: name, id: id, host: host, queues: queues, pair: self)
        guests.append(guest)
        return guest
    }

    /// `ip netns exec NS ping` of `address`: `count` echoes, `size` payload bytes, never
    /// fragmented; true when every echo was answered. Waited for off the cooperative pool.
    static func ping(from ns: TestNamespace, _ address: String, size: Int = 56, count: Int = 3) async throws -> Bool {
        let arguments = ["netns", "exec", ns.name, "ping", "-n", "-q", "-c", "\(count)",
                         "-i", "0.2", "-W", "5", "-w", "30", "-M", "do", "-s", "\(size)", address]
        let result = try await offThePool { try TestCommand.run("/usr/sbin/ip", arguments) }
        if result.status != 0 { print("ping \(address) from \(ns.name): \(result.stdout) \(result.stderr)") }
        return result.status == 0
    }

    /// What the hypervisor counts for each domain now.
    func usage() throws -> [DomainID: DomainUsage] { try dom0.domainUsage() }

    /// Stops the hypervisor under everyone, as its death would: every connection closes.
    func loseHypervisor() {
        hypervisorGone = true
        hypervisor.stopAndWait()
    }

    private var hypervisorGone = false

    func stop() async {
        for guest in guests { await guest.stop() }
        daemon.stop()
        _ = await running.result
        if !hypervisorGone { hypervisor.stopAndWait() }
        namespace.delete()
        _ = try? FileManager.default.removeItem(atPath: directory)
    }
}

/// One guest: its domain, its netfront and the TAP device that is its `eth0`, in a
/// namespace of its own.
final class Guest: @unchecked Sendable {
    let name: String
    let id: DomainID
    let address: String
    let platform: LocalPlatform
    let namespace: TestNamespace
    private(set) var frontend: NetFrontend
    let tap: TapDevice
    private var stopped = false

    let queues: Int?

    init(name: String, id: DomainID, host: Int, queues: Int? = nil, pair: NetPair) async throws {
        self.name = name
        self.id = id
        self.queues = queues
        address = "198.19.64.\(host)"
        platform = try LocalPlatform(stateDirectory: pair.directory, domain: name)
        let namespace = try TestNamespace(prefix: "xse2g")
        self.namespace = namespace
        var made: (NetFrontend?, TapDevice?) = (nil, nil)
        do {
            let frontend = try NetFrontend(platform: platform, devid: 0, queues: queues, logger: e2eLogger)
            made.0 = frontend
            let vif = try await frontend.vifSettings()
            let tap = try TapDevice(name: "eth0", multiQueue: queues != nil, in: namespace.namespace)
            made.1 = tap
            try tap.setHardwareAddress(EthernetAddress(vif.mac[0], vif.mac[1], vif.mac[2], vif.mac[3], vif.mac[4], vif.mac[5]))
            try tap.setMTU(Int(vif.mtu))
            try tap.setCarrier(false)
            try tap.setUp(true)
            try frontend.attachTap(tap)
            _ = try await frontend.connected()
            try namespace.ip("link", "set", "dev", "lo", "up")
            try namespace.ip("addr", "add", address + "/24", "dev", "eth0")
            self.frontend = frontend
            self.tap = tap
        } catch {
            await made.0?.close(grantWaitSeconds: 1)
            made.1?.close()
            namespace.delete()
            throw error
        }
    }

    /// The backend's interface for this guest in dom0's namespace.
    var vif: String { "vif\(id).0" }

    /// Starts a new frontend on the same TAP device once the last one is closed, as a
    /// restarted netfront process does (asking for `queues` pairs, or as many as the last
    /// one); waits until it is connected.
    func startFrontend(queues: Int? = nil) async throws {
        frontend = try NetFrontend(platform: platform, devid: 0, queues: queues ?? self.queues, logger: e2eLogger)
        try frontend.attachTap(tap)
        _ = try await frontend.connected()
    }

    func stop() async {
        guard !stopped else { return }
        stopped = true
        await frontend.close(grantWaitSeconds: 1)
        tap.close()
        namespace.delete()
    }
}

/// Blocking socket helpers: a socket is made on a thread inside a namespace (it belongs to
/// that namespace for life) and then used from any thread.
enum Sockets {
    static func make(in ns: TestNamespace, type: Int32) throws -> Int32 {
        try ns.namespace.run { () throws(Errno) -> Int32 in
            let fd = socket(AF_INET, type | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw Errno.current }
            return fd
        }.get()
    }

    static func address(_ ip: String, _ port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &a.sin_addr)
        return a
    }

    static func bind(_ fd: Int32, _ ip: String, _ port: UInt16) throws {
        var a = address(ip, port)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw Errno.current }
    }

    static func connect(_ fd: Int32, _ ip: String, _ port: UInt16) throws {
        var a = address(ip, port)
        let rc = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw Errno.current }
    }

    /// Bounds every blocking receive and send on `fd`, so a lost peer fails the test
    /// instead of hanging it.
    static func setTimeout(_ fd: Int32, seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// A TCP listener on `ip`:`port` in `ns`.
    static func listener(in ns: TestNamespace, _ ip: String, _ port: UInt16) throws -> Int32 {
        let fd = try make(in: ns, type: Int32(SOCK_STREAM.rawValue))
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        do {
            try bind(fd, ip, port)
            guard listen(fd, 4) == 0 else { throw Errno.current }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection on `listener` (waiting up to 30 s) and reads it to its end;
    /// a receive that waits longer than `timeout` seconds fails.
    static func receiveAll(_ listener: Int32, timeout: Int = 30) throws -> [UInt8] {
        var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, 30_000) == 1 else { throw E2EError("no connection in 30 s") }
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { throw Errno.current }
        defer { close(fd) }
        setTimeout(fd, seconds: timeout)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return out }
            guard n > 0 else { throw E2EError("recv after \(out.count) bytes: \(Errno.current)") }
            out += buffer[0..<n]
        }
    }

    /// Connects from `ns` to `ip`:`port` and sends `data`, then closes; `progress` is told
    /// the bytes sent after each write. A send that waits longer than `timeout` seconds fails.
    static func sendAll(_ data: [UInt8], from ns: TestNamespace, to ip: String, _ port: UInt16, timeout: Int = 30,
                        progress: (Int) -> Void = { _ in }) throws {
        let fd = try make(in: ns, type: Int32(SOCK_STREAM.rawValue))
        defer { close(fd) }
        setTimeout(fd, seconds: timeout)
        try connect(fd, ip, port)
        var sent = 0
        while sent < data.count {
            let chunk = min(64 * 1024, data.count - sent)
            let n = data.withUnsafeBytes { send(fd, $0.baseAddress! + sent, chunk, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw E2EError("send after \(sent) bytes: \(Errno.current)") }
            sent += n
            progress(sent)
        }
        shutdown(fd, Int32(SHUT_WR))
        // The peer closes after reading everything: wait for that, so nothing is cut off.
        var byte: UInt8 = 0
        _ = recv(fd, &byte, 1, 0)
    }
}

/// `count` bytes from a seeded SplitMix64 stream.
func seededBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out = [UInt8](repeating: 0, count: count)
    out.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for i in 0..<words.count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            words[i] = (z ^ (z >> 31)).littleEndian
        }
    }
    return out
}

/// SHA-256 of `bytes` as `sha256sum` prints it, through a file; waited for off the
/// cooperative pool.
func sha256(_ bytes: [UInt8]) async throws -> String {
    try await offThePool { try sha256Blocking(bytes) }
}

private func sha256Blocking(_ bytes: [UInt8]) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("xensplit-e2e-\(UUID().uuidString)").path
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else { throw E2EError("cannot write \(path)") }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let result = try TestCommand.run("/usr/bin/sha256sum", [path])
    guard result.status == 0, let digest = result.stdout.split(separator: " ").first else {
        throw E2EError("sha256sum: \(result.stderr)")
    }
    return String(digest)
}

/// Sends `data` over TCP from `from` to a listener on `ip`:`port` in `to` and returns the
/// SHA-256 of what arrived.
func transfer(_ data: [UInt8], from: TestNamespace, to: TestNamespace, ip: String, port: UInt16,
              progress: @escaping @Sendable (Int) -> Void = { _ in }) async throws -> (count: Int, digest: String) {
    let listener = try Sockets.listener(in: to, ip, port)
    defer { close(listener) }
    async let received = offThePool { try Sockets.receiveAll(listener) }
    try await offThePool { try Sockets.sendAll(data, from: from, to: ip, port, progress: progress) }
    let bytes = try await received
    return (bytes.count, try await sha256(bytes))
}

/// XenTesting's bounded wait, with the longer bound these tests' namespaces and processes want.
func eventually(_ what: String, seconds: Int = 30, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    try await XenTesting.eventually(what, seconds: seconds, every: .milliseconds(20), condition)
}

struct E2EError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
