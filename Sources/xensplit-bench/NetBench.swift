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
import XenTesting

/// `xensplit-bench net [--runs N] [--quick] [--only NAME-PART] [--verbose]`: our net pair
/// against a veth pair, iperf3 on both, alternating.
///
/// Ours: a guest namespace whose eth0 is our netfront's TAP device, and dom0's namespace
/// with netback's vif on a bridge holding dom0's address; the local hypervisor, netback
/// and netfront all run in this process. The reference: a veth pair between two other
/// namespaces, the same addresses' shape, the same iperf3 commands. Both sides run iperf3
/// for the same time: TCP single stream and 4 streams, guest to dom0 and dom0 to guest
/// (`-R`), and 64-byte UDP datagrams as fast as iperf3 sends them (received packets per
/// second), over a one-queue vif; and TCP 4 streams each way over a second guest's 4-queue
/// vif (4 netif queue pairs, a multi-queue TAP device at each end) against a veth pair with
/// 4 queues each way (`-4q` in the names). Beside them, with no reference: the CPU time of netback's workers and of the
/// hypervisor's thread (which serves every grant copy) per packet received by UDP and per
/// MiB by TCP; the same threads' CPU over 5 s while 64 vifs are connected and idle; and
/// the process's resident memory per connected vif.
func runNetBench(arguments: [String]) async throws {
    let options = try BlockBenchOptions(arguments: arguments, suite: "net")
    var logger = Logger(label: "xensplit.bench.net")
    logger.logLevel = .error
    let seconds = options.quick ? 2 : 5
    let world = try await NetBenchWorld(logger: logger)
    do {
        try await world.run(options: options, seconds: seconds)
    } catch {
        await world.stop()
        throw error
    }
    await world.stop()
}

/// One iperf3 workload, run the same way on both sides.
struct NetBenchWorkload {
    let name: String
    let arguments: [String]
    let udp: Bool
    /// Queue pairs of the vif (1 or ``NetBenchWorld/multiQueues``), and queues each way of
    /// the veth pair it is compared with.
    var queues = 1
}

final class NetBenchWorld: @unchecked Sendable {
    // @unchecked: used from the suite's one task at a time.
    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack
    let dom0Side: TestNamespace
    let guestSide: TestNamespace
    /// The guest whose vif has ``multiQueues`` queue pairs.
    let multiQueueGuestSide: TestNamespace
    let referenceDom0: TestNamespace
    let referenceGuest: TestNamespace
    let daemon: NetbackDaemon
    let daemonTask: Task<Void, any Error>
    let backendThreads: Set<Int32>
    let hypervisorThreads: Set<Int32>
    let logger: Logger
    var frontends: [(NetFrontend, TapDevice?)] = []
    var domains: [String] = []

    static let dom0Address = "198.18.9.1"
    static let guestAddress = "198.18.9.2"
    static let referenceDom0Address = "198.18.10.1"
    static let referenceGuestAddress = "198.18.10.2"
    static let multiQueueGuestAddress = "198.18.9.3"
    static let multiQueueReferenceDom0Address = "198.18.11.1"
    static let multiQueueReferenceGuestAddress = "198.18.11.2"
    /// Queue pairs of the multi-queue vif (and queues of its veth reference).
    static let multiQueues = 4

    init(logger: Logger) async throws {
        self.logger = logger
        var template = Array("/tmp/xensplit-bench-net-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw BlockBenchError.setup("mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        BenchCleanup.add(path: directory)
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 262_144
        configuration.grantEntries = 16_384
        hypervisor = try LocalHypervisor(configuration: configuration, logger: logger)
        let beforeHypervisor = ThreadCPU.threads()
        hypervisor.start()
        hypervisorThreads = ThreadCPU.threads().subtracting(beforeHypervisor)
        dom0 = try LocalPlatform(stateDirectory: directory)
        toolstack = LocalToolstack(platform: dom0)
        dom0Side = try TestNamespace(prefix: "xsbench-d")
        guestSide = try TestNamespace(prefix: "xsbench-g")
        multiQueueGuestSide = try TestNamespace(prefix: "xsbench-q")
        referenceDom0 = try TestNamespace(prefix: "xsbench-rd")
        referenceGuest = try TestNamespace(prefix: "xsbench-rg")
        try dom0Side.ip("link", "add", "xsbr0", "type", "bridge")
        try dom0Side.ip("addr", "add", Self.dom0Address + "/24", "dev", "xsbr0")
        try dom0Side.ip("link", "set", "dev", "xsbr0", "up")
        for side in [dom0Side, guestSide, multiQueueGuestSide, referenceDom0, referenceGuest] {
            try side.ip("link", "set", "dev", "lo", "up")
            // No IPv6: its autoconfiguration chatter (router and neighbour solicitations,
            // MLD reports) would reach every vif on the bridge and make idle vifs busy.
            for key in ["all", "default"] {
                _ = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", side.name, "sysctl", "-qw",
                                                         "net.ipv6.conf.\(key).disable_ipv6=1"])
            }
        }
        // The reference: a veth pair between the two reference namespaces.
        try referenceDom0.ip("link", "add", "xsv0", "type", "veth", "peer", "name", "xsv1", "netns", referenceGuest.name)
        try referenceDom0.ip("addr", "add", Self.referenceDom0Address + "/24", "dev", "xsv0")
        try referenceDom0.ip("link", "set", "dev", "xsv0", "up")
        try referenceGuest.ip("addr", "add", Self.referenceGuestAddress + "/24", "dev", "xsv1")
        try referenceGuest.ip("link", "set", "dev", "xsv1", "up")
        // The multi-queue reference: a veth pair with as many queues each way as the vif.
        let queues = String(Self.multiQueues)
        try referenceDom0.ip("link", "add", "xsv2", "numtxqueues", queues, "numrxqueues", queues, "type", "veth",
                             "peer", "name", "xsv3", "numtxqueues", queues, "numrxqueues", queues, "netns", referenceGuest.name)
        try referenceDom0.ip("addr", "add", Self.multiQueueReferenceDom0Address + "/24", "dev", "xsv2")
        try referenceDom0.ip("link", "set", "dev", "xsv2", "up")
        try referenceGuest.ip("addr", "add", Self.multiQueueReferenceGuestAddress + "/24", "dev", "xsv3")
        try referenceGuest.ip("link", "set", "dev", "xsv3", "up")
        var limits = NetbackDeviceLimits()
        limits.namespace = dom0Side.namespace
        limits.maxQueues = UInt32(Self.multiQueues)
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 256, capacity: 4096), logger: logger)
        let before = ThreadCPU.threads()
        daemon = try NetbackDaemon(platform: dom0, configuration: .init(limits: limits), factory: factory, logger: logger)
        // The workers, by name: a thread of the concurrency pool may appear meanwhile too.
        backendThreads = ThreadCPU.threads().subtracting(before).filter { ThreadCPU.name($0) == "netback-worker" }
        let daemon = self.daemon
        daemonTask = Task { try await daemon.run() }
    }

    /// Creates guest `name` with one vif, plugs it into dom0's bridge as the vif script
    /// would, and connects a netfront with `queues` queue pairs; with `tap`, its TAP device
    /// `eth0` (multi-queue for several pairs) in `side` carries `address`.
    func addGuest(_ name: String, index: Int, tap: Bool, queues: Int = 1, side: TestNamespace? = nil,
                  address: String = NetBenchWorld.guestAddress) async throws -> NetFrontend {
        let side = side ?? guestSide
        let mac = String(format: "00:16:3e:42:%02x:%02x", index >> 8, index & 0xFF)
        let domain = try await toolstack.createDomain(name: name, disks: [], nics: [try VifSpec(parsing: "mac=\(mac),bridge=xsbr0")],
                                                      hotplug: .none)
        domains.append(name)
        let backend = LocalToolstack.backendPath(kind: "vif", frontend: domain, device: 0)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let deadline = ContinuousClock.now + .seconds(30)
        while (try? await store.readString(backend + "/state")) != "2" {
            guard ContinuousClock.now < deadline else { throw BlockBenchError.setup("\(backend) never reached InitWait") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let vif = "vif\(domain).0"
        try dom0Side.ip("link", "set", "dev", vif, "master", "xsbr0")
        try dom0Side.ip("link", "set", "dev", vif, "up")
        try await store.write(backend + "/" + NetifToolstackKeys.hotplugStatus, NetifToolstackKeys.hotplugConnected)
        let guest = try LocalPlatform(stateDirectory: directory, domain: name)
        let frontend = try NetFrontend(platform: guest, devid: 0, queues: queues, logger: logger)
        var device: TapDevice?
        if tap {
            let made = try TapDevice(name: "eth0", multiQueue: queues > 1, in: side.namespace)
            try made.setHardwareAddress(EthernetAddress(0x00, 0x16, 0x3E, 0x42, UInt8(index >> 8), UInt8(index & 0xFF)))
            try made.setUp(true)
            try frontend.attachTap(made)
            device = made
        }
        frontends.append((frontend, device))
        _ = try await frontend.connected()
        if tap { try side.ip("addr", "add", address + "/24", "dev", "eth0") }
        return frontend
    }

    func run(options: BlockBenchOptions, seconds: Int) async throws {
        _ = try await addGuest("bench-net-0", index: 0, tap: true)
        // Every path carries traffic once before timing (ARP, the bridge's learning).
        try Self.command(guestSide, ["ping", "-c", "2", "-W", "2", Self.dom0Address])
        try Self.command(referenceGuest, ["ping", "-c", "2", "-W", "2", Self.referenceDom0Address])
        let time = String(seconds)
        let workloads = [
            NetBenchWorkload(name: "net-tcp-1-guest-to-dom0", arguments: ["-t", time], udp: false),
            NetBenchWorkload(name: "net-tcp-1-dom0-to-guest", arguments: ["-t", time, "-R"], udp: false),
            NetBenchWorkload(name: "net-tcp-4-guest-to-dom0", arguments: ["-t", time, "-P", "4"], udp: false),
            NetBenchWorkload(name: "net-tcp-4-dom0-to-guest", arguments: ["-t", time, "-P", "4", "-R"], udp: false),
            NetBenchWorkload(name: "net-udp-64-guest-to-dom0", arguments: ["-t", time, "-u", "-l", "64", "-b", "0"], udp: true),
            NetBenchWorkload(name: "net-udp-64-dom0-to-guest", arguments: ["-t", time, "-u", "-l", "64", "-b", "0", "-R"], udp: true),
            NetBenchWorkload(name: "net-tcp-4-4q-guest-to-dom0", arguments: ["-t", time, "-P", "4"], udp: false,
                             queues: Self.multiQueues),
            NetBenchWorkload(name: "net-tcp-4-4q-dom0-to-guest", arguments: ["-t", time, "-P", "4", "-R"], udp: false,
                             queues: Self.multiQueues),
        ]
        if workloads.contains(where: { $0.queues > 1 && options.selected($0.name) }) {
            let multiQueue = try await addGuest("bench-net-mq", index: 255, tap: true, queues: Self.multiQueues,
                                                side: multiQueueGuestSide, address: Self.multiQueueGuestAddress)
            guard let link = multiQueue.link, link.queues == Self.multiQueues else {
                throw BlockBenchError.setup("the multi-queue vif connected with \(multiQueue.link?.queues ?? 0) queue pairs, not \(Self.multiQueues)")
            }
            try Self.command(multiQueueGuestSide, ["ping", "-c", "2", "-W", "2", Self.dom0Address])
            try Self.command(referenceGuest, ["ping", "-c", "2", "-W", "2", Self.multiQueueReferenceDom0Address])
        }
        for workload in workloads where options.selected(workload.name) {
            var comparison = BenchComparison(name: workload.name, unit: workload.udp ? "packets/s" : "Mbit/s")
            var cpu = BenchComparison(name: workload.name.replacingOccurrences(of: "net-", with: "net-cpu-per-")
                                        + (workload.udp ? "-packet" : "-mib"), unit: "us")
            let multiQueue = workload.queues > 1
            try await alternateAsync(&comparison, runs: options.runs, ours: {
                let before = self.cpuSample()
                let result = try await Self.iperf(server: self.dom0Side, client: multiQueue ? self.multiQueueGuestSide : self.guestSide,
                                                  address: Self.dom0Address, workload: workload)
                let used = Double(ThreadCPU.elapsed(from: before, to: self.cpuSample())) / 1000
                cpu.ours.append(used / max(1, workload.udp ? result.packets : result.bytes / Double(1 << 20)))
                options.log("\(workload.name) ours: \(result)")
                return workload.udp ? result.packetsPerSecond : result.megabitsPerSecond
            }, reference: {
                let result = try await Self.iperf(server: self.referenceDom0, client: self.referenceGuest,
                                                  address: multiQueue ? Self.multiQueueReferenceDom0Address : Self.referenceDom0Address,
                                                  workload: workload)
                options.log("\(workload.name) veth: \(result)")
                return workload.udp ? result.packetsPerSecond : result.megabitsPerSecond
            })
            printComparison(comparison, options: options)
            printComparison(cpu, options: options)
        }
        if options.selected("net-idle") || options.selected("net-rss") { try await idle(options: options) }
    }

    /// 64 connected, idle vifs: the backend's and hypervisor's CPU over 5 s, and the
    /// process's resident memory per vif.
    func idle(options: BlockBenchOptions) async throws {
        let count = options.quick ? 16 : 64
        let rssBefore = Self.residentBytes()
        for index in 1...count { _ = try await addGuest("bench-idle-\(index)", index: index, tap: false) }
        try await Task.sleep(for: .seconds(2))
        let rssAfter = Self.residentBytes()
        var idle = BenchComparison(name: "net-idle-cpu-\(count)-vifs", unit: "ms")
        for _ in 0..<options.runs {
            let before = cpuSample()
            try await Task.sleep(for: .seconds(5))
            let after = cpuSample()
            idle.ours.append(Double(ThreadCPU.elapsed(from: before, to: after)) / 1e6)
            for (tid, time) in after where time > (before[tid] ?? 0) {
                options.log("idle: thread \(tid) \(ThreadCPU.name(tid)) ran \(Double(time - (before[tid] ?? 0)) / 1e6) ms")
            }
        }
        printComparison(idle, options: options)
        var rss = BenchComparison(name: "net-rss-per-vif", unit: "KiB")
        rss.ours.append(Double(max(0, rssAfter - rssBefore)) / Double(count) / 1024)
        printComparison(rss, options: options)
    }

    func cpuSample() -> [Int32: UInt64] {
        ThreadCPU.sample(backendThreads.union(hypervisorThreads))
    }

    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    struct IperfResult: CustomStringConvertible {
        var bytes: Double
        var packets: Double
        var seconds: Double
        var megabitsPerSecond: Double { bytes * 8 / seconds / 1e6 }
        var packetsPerSecond: Double { packets / seconds }
        var description: String { String(format: "%.0f bytes %.0f packets in %.2f s", bytes, packets, seconds) }
    }

    /// One iperf3 run: a one-off server in `server`'s namespace, the client in `client`'s;
    /// the figures are what the receiving end counted.
    static func iperf(server: TestNamespace, client: TestNamespace, address: String,
                      workload: NetBenchWorkload) async throws -> IperfResult {
        let serverProcess = try ChildProcess("/usr/sbin/ip", ["netns", "exec", server.name, "iperf3", "-s", "-1", "-B", address],
                                             standardOutput: .null, standardError: .null)
        BenchCleanup.add(pid: serverProcess.pid)
        defer {
            serverProcess.signal(SIGTERM)
            serverProcess.wait()
            BenchCleanup.remove(pid: serverProcess.pid)
        }
        try await Task.sleep(for: .milliseconds(300))
        let arguments = ["netns", "exec", client.name, "iperf3", "-c", address, "-J"] + workload.arguments
        let output = try await offThePool { try TestCommand.run("/usr/sbin/ip", arguments) }
        guard output.status == 0, let data = output.stdout.data(using: .utf8),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let end = json["end"] as? [String: Any] else {
            throw BlockBenchError.io("iperf3 \(workload.arguments.joined(separator: " ")) failed: \(output.stderr) \(output.stdout.suffix(300))")
        }
        if workload.udp {
            guard let sum = end["sum"] as? [String: Any], let packets = sum["packets"] as? Double,
                  let lost = sum["lost_packets"] as? Double, let seconds = sum["seconds"] as? Double,
                  let bytes = sum["bytes"] as? Double else {
                throw BlockBenchError.io("iperf3 UDP output without end.sum")
            }
            return IperfResult(bytes: bytes, packets: packets - lost, seconds: seconds)
        }
        guard let received = end["sum_received"] as? [String: Any], let bytes = received["bytes"] as? Double,
              let seconds = received["seconds"] as? Double else {
            throw BlockBenchError.io("iperf3 TCP output without end.sum_received")
        }
        return IperfResult(bytes: bytes, packets: 0, seconds: seconds)
    }

    static func command(_ namespace: TestNamespace, _ arguments: [String]) throws {
        let result = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", namespace.name] + arguments)
        guard result.status == 0 else {
            throw BlockBenchError.setup("\(arguments.joined(separator: " ")) in \(namespace.name): \(result.stdout) \(result.stderr)")
        }
    }

    func stop() async {
        for (frontend, tap) in frontends {
            _ = await frontend.close()
            tap?.close()
        }
        frontends = []
        for name in domains { try? await toolstack.destroy(name: name, hotplug: .none) }
        daemon.stop()
        _ = await daemonTask.result
        hypervisor.stopAndWait()
        for side in [dom0Side, guestSide, multiQueueGuestSide, referenceDom0, referenceGuest] { side.delete() }
        BenchCleanup.removeNow(path: directory)
    }
}
