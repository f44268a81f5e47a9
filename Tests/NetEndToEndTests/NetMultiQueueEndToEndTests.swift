import Foundation
import Glibc
import NetFrontend
import Netif
import SystemCalls
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenTesting

@Suite("net end to end: multi-queue NetFrontend against NetBackend", .serialized)
struct NetMultiQueueEndToEndTests {
    @Test("1, 2 and 4 queue pairs: keys under queue-N/, a TAP queue per pair on both ends, every pair carries checksummed traffic both ways",
          arguments: [1, 2, 4])
    func queuePairs(count: Int) async throws {
        try await withPair(maxQueues: 4) { pair in
            let guest = try await pair.guest("g1", host: 10, queues: count)
            let link = try #require(guest.frontend.link)
            #expect(link.queues == count && link.offeredQueues == 4)
            #expect(pair.daemon.queuesPerWorker.reduce(0, +) == count)
            try await Self.checkKeys(pair, guest, count: count)
            // One TAP queue per pair on the guest's eth0 and on the backend's vif.
            #expect(guest.tap.queues.count == count)
            #expect(try Self.txQueues(guest.namespace, "eth0") == count)
            #expect(try Self.txQueues(pair.namespace, guest.vif) == count)

            // TCP streams both ways at once, each on its own port (its own flow, which the
            // kernels' TAP flow steering puts on a queue by its hash), each checksummed.
            let streams = 4
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in 0 ..< streams {
                    group.addTask {
                        let data = seededBytes(4 << 20, seed: 0x4D51_0000 + UInt64(stream))
                        let up = try await transfer(data, from: guest.namespace, to: pair.namespace, ip: NetPair.bridgeAddress,
                                                    port: UInt16(5500 + stream))
                        #expect(up.count == data.count)
                        #expect(up.digest == (try await sha256(data)), "stream \(stream) guest to dom0")
                    }
                    group.addTask {
                        let data = seededBytes(4 << 20, seed: 0x4D52_0000 + UInt64(stream))
                        let down = try await transfer(data, from: pair.namespace, to: guest.namespace, ip: guest.address,
                                                      port: UInt16(5600 + stream))
                        #expect(down.count == data.count)
                        #expect(down.digest == (try await sha256(data)), "stream \(stream) dom0 to guest")
                    }
                }
                try await group.waitForAll()
            }
            // Datagrams from 64 source ports each way, each compared byte for byte: with that
            // many flows every queue is picked (a queue of four missed by all 64 flows:
            // 4 * (3/4)^64, below 1e-7).
            try await Self.sweep(from: guest.namespace, fromIP: guest.address, to: pair.namespace, toIP: NetPair.bridgeAddress,
                                 port: 6100)
            try await Self.sweep(from: pair.namespace, fromIP: NetPair.bridgeAddress, to: guest.namespace, toIP: guest.address,
                                 port: 6200)

            // A packet is counted just after the write its receiver may already have seen.
            try? await eventually("every pair counted traffic both ways") {
                guest.frontend.queueCounters.allSatisfy { $0.txPackets > 0 && $0.rxPackets > 0 }
            }
            let perQueue = guest.frontend.queueCounters
            #expect(perQueue.count == count)
            for (queue, counters) in perQueue.enumerated() {
                #expect(counters.txPackets > 0 && counters.rxPackets > 0, "queue pair \(queue) carried no traffic: \(counters)")
                #expect(counters.txErrors == 0 && counters.rxErrors == 0, "queue pair \(queue): \(counters)")
            }
            #expect(guest.frontend.violation == nil)
        }
    }

    @Test("a netfront restarted on the same multi-queue TAP with 2 pairs instead of 4 closes the TAP queues left over; both pairs carry traffic")
    func restartWithFewerPairs() async throws {
        try await withPair(maxQueues: 4) { pair in
            let guest = try await pair.guest("g1", host: 10, queues: 4)
            #expect(guest.tap.queues.count == 4)
            #expect(await guest.frontend.close() == 0)
            try await guest.startFrontend(queues: 2)
            #expect(guest.frontend.link?.queues == 2)
            #expect(guest.tap.queues.count == 2)
            #expect(try Self.txQueues(guest.namespace, "eth0") == 2)
            try await eventually("the backend serves 2 pairs") { pair.daemon.queuesPerWorker.reduce(0, +) == 2 }
            let data = seededBytes(8 << 20, seed: 0x4D53_0000)
            let up = try await transfer(data, from: guest.namespace, to: pair.namespace, ip: NetPair.bridgeAddress, port: 5700)
            #expect(up.count == data.count)
            #expect(up.digest == (try await sha256(data)))
            try await Self.sweep(from: guest.namespace, fromIP: guest.address, to: pair.namespace, toIP: NetPair.bridgeAddress,
                                 port: 6300)
            try await Self.sweep(from: pair.namespace, fromIP: NetPair.bridgeAddress, to: guest.namespace, toIP: guest.address,
                                 port: 6400)
            try? await eventually("both pairs counted traffic both ways") {
                guest.frontend.queueCounters.allSatisfy { $0.txPackets > 0 && $0.rxPackets > 0 }
            }
            for (queue, counters) in guest.frontend.queueCounters.enumerated() {
                #expect(counters.txPackets > 0 && counters.rxPackets > 0, "queue pair \(queue) carried no traffic: \(counters)")
            }
        }
    }

    @Test("by default one pair per core up to the offer; a single-queue TAP device sends on pair 0 and takes every pair's packets")
    func defaultPairsOnASingleQueueTap() async throws {
        try await withPair(maxQueues: 4) { pair in
            // No queue count asked for, and a TAP device without IFF_MULTI_QUEUE.
            let guest = try await pair.guest("g1", host: 10)
            let cores = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
            let count = min(4, cores)
            #expect(guest.frontend.link?.queues == count)
            #expect(guest.tap.queues.count == 1)
            #expect(pair.daemon.queuesPerWorker.reduce(0, +) == count)
            let data = seededBytes(8 << 20, seed: 0x4D54_0000)
            let down = try await transfer(data, from: pair.namespace, to: guest.namespace, ip: guest.address, port: 5800)
            #expect(down.count == data.count)
            #expect(down.digest == (try await sha256(data)))
            try await Self.sweep(from: pair.namespace, fromIP: NetPair.bridgeAddress, to: guest.namespace, toIP: guest.address,
                                 port: 6500)
            try? await eventually("every pair counted what it received") {
                guest.frontend.queueCounters.allSatisfy { $0.rxPackets > 0 }
            }
            let perQueue = guest.frontend.queueCounters
            #expect(perQueue.first.map { $0.txPackets > 0 } == true, "\(perQueue)")
            for (queue, counters) in perQueue.enumerated() {
                #expect(counters.rxPackets > 0, "queue pair \(queue) received nothing: \(counters)")
                if queue > 0 { #expect(counters.txPackets == 0, "queue pair \(queue) sent without a TAP queue: \(counters)") }
            }
        }
    }

    @Test("asking for more queue pairs than the backend offers is refused with the offer named")
    func moreThanOffered() async throws {
        try await withPair(maxQueues: 2) { pair in
            let spec = try VifSpec(parsing: "bridge=\(NetPair.bridge),mac=00:16:3e:40:00:20")
            let id = try await pair.toolstack.createDomain(name: "greedy", disks: [], nics: [spec])
            let platform = try LocalPlatform(stateDirectory: pair.directory, domain: "greedy")
            let frontend = try NetFrontend(platform: platform, devid: 0, queues: 4, logger: e2eLogger)
            await #expect(throws: NetFrontendError.queuesNotOffered(requested: 4, offered: 2)) {
                try await frontend.connected()
            }
            #expect("\(NetFrontendError.queuesNotOffered(requested: 4, offered: 2))".contains("multi-queue-max-queues"))
            // The refusal is the frontend's: it wrote no keys and walked to Closed (not back
            // to the backend's next InitWait), and no queue was connected on the backend.
            try await eventually("frontend Closed") { frontend.state == .closed }
            await #expect(throws: NetFrontendError.queuesNotOffered(requested: 4, offered: 2)) {
                try await frontend.connected()
            }
            let store = try pair.dom0.connectXenStore()
            defer { store.close() }
            let node = XenbusNodeReader(store: store, path: LocalToolstack.frontendPath(kind: "vif", frontend: id, device: 0))
            #expect(try await node.optionalString(NetifFrontendFeatures.Key.queueCount) == nil)
            #expect(try await node.optionalString(NetifConnectionKeys.Key.txRingRef) == nil)
            #expect(pair.daemon.queuesPerWorker.reduce(0, +) == 0)
            #expect(await frontend.close() == 0)
            #expect(throws: NetFrontendError.queueCount(0)) { try NetFrontend(platform: platform, devid: 0, queues: 0) }
        }
    }

    @Test("xensplit netfront --queues 2 as a process: two pairs, a TAP queue each, ping both ways, SIGTERM exits 0")
    func commandWithTwoQueues() async throws {
        try await withPair(maxQueues: 4) { pair in
            let spec = try VifSpec(parsing: "bridge=\(NetPair.bridge),mac=00:16:3e:40:00:21")
            _ = try await pair.toolstack.createDomain(name: "cli", disks: [], nics: [spec])
            let ns = try TestNamespace(prefix: "xse2c")
            defer { ns.delete() }
            let netfront = try NetfrontProcess(["netfront", "cli", "0", "--tap", "eth0", "--netns", ns.name, "--queues", "2",
                                                "--platform", "local", "--state-dir", pair.directory])
            defer { netfront.stop() }
            try await eventually("two queue pairs connected on the backend") { pair.daemon.queuesPerWorker.reduce(0, +) == 2 }
            try await eventually("carrier on") { (try? ns.readSysfs("/sys/class/net/eth0/carrier")) == "1" }
            #expect(try Self.txQueues(ns, "eth0") == 2)
            try ns.ip("link", "set", "dev", "lo", "up")
            try ns.ip("addr", "add", "198.19.64.33/24", "dev", "eth0")
            #expect(try await NetPair.ping(from: ns, NetPair.bridgeAddress))
            #expect(try await NetPair.ping(from: pair.namespace, "198.19.64.33"))
            let (status, output) = try await netfront.terminate()
            #expect(status == 0, "\(output)")
            #expect(output.contains("connected with 2 queue pairs on"), "\(output)")
            #expect(output.contains("the backend offers 4"), "\(output)")
        }
    }

    @Test("xensplit netfront --queues above the backend's offer exits with an error naming multi-queue-max-queues")
    func commandRefusesMoreThanOffered() async throws {
        try await withPair(maxQueues: 2) { pair in
            let spec = try VifSpec(parsing: "bridge=\(NetPair.bridge),mac=00:16:3e:40:00:22")
            _ = try await pair.toolstack.createDomain(name: "cli", disks: [], nics: [spec])
            let ns = try TestNamespace(prefix: "xse2c")
            defer { ns.delete() }
            let netfront = try NetfrontProcess(["netfront", "cli", "0", "--tap", "eth0", "--netns", ns.name, "--queues", "3",
                                                "--platform", "local", "--state-dir", pair.directory])
            defer { netfront.stop() }
            let (status, output) = try await netfront.exit()
            #expect(status != 0)
            #expect(output.contains("--queues 3: 3 queue pairs asked for, but the backend offers at most 2 (multi-queue-max-queues)"),
                    "\(output)")
            // It took its TAP device with it.
            #expect(try !ns.hasLink("eth0"))
            let help = try TestCommand.run(TestCommand.xensplit, ["netfront", "--help"])
            #expect(help.stdout.contains("--queues"), "\(help.stdout)")
            let zero = try TestCommand.run(TestCommand.xensplit, ["netfront", "cli", "0", "--tap", "eth0", "--queues", "0",
                                                                  "--platform", "local", "--state-dir", pair.directory])
            #expect(zero.status != 0)
            #expect(zero.stderr.contains("--queues 0: a queue pair count is 1 to 256"), "\(zero.stderr)")
        }
    }

    /// Checks the frontend's keys as io/netif.h lays them out: one pair at the top level
    /// without `multi-queue-num-queues`, several under `queue-N/` with it.
    static func checkKeys(_ pair: NetPair, _ guest: Guest, count: Int) async throws {
        let store = try pair.dom0.connectXenStore()
        defer { store.close() }
        let node = XenbusNodeReader(store: store, path: guest.frontend.frontendPath)
        typealias Key = NetifConnectionKeys.Key
        let number = try await node.optionalString(NetifFrontendFeatures.Key.queueCount)
        #expect(number == (count > 1 ? "\(count)" : nil))
        #expect((try await node.optionalString(Key.txRingRef) != nil) == (count == 1))
        for queue in 0 ..< count where count > 1 {
            let prefix = Key.queue(queue) + "/"
            for key in [Key.txRingRef, Key.rxRingRef, Key.eventChannelTx, Key.eventChannelRx] {
                let value = try await node.optionalString(prefix + key)
                #expect(value.flatMap(UInt32.init) != nil, "\(prefix + key) = \(value ?? "absent")")
            }
        }
    }

    /// The TX queues sysfs lists for `device` in `ns`: the TAP queues attached.
    static func txQueues(_ ns: TestNamespace, _ device: String) throws -> Int {
        let result = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", ns.name, "ls", "/sys/class/net/\(device)/queues"])
        guard result.status == 0 else { throw E2EError("ls queues of \(device) in \(ns.name): \(result.stderr)") }
        return result.stdout.split(whereSeparator: \.isWhitespace).filter { $0.hasPrefix("tx-") }.count
    }

    /// One datagram from each of 64 source ports in `from` to `toIP`:`port` in `to`, sent
    /// one at a time and compared with what arrived.
    static func sweep(from: TestNamespace, fromIP: String, to: TestNamespace, toIP: String, port: UInt16) async throws {
        let receiver = try Sockets.make(in: to, type: Int32(SOCK_DGRAM.rawValue))
        defer { close(receiver) }
        try Sockets.bind(receiver, toIP, port)
        Sockets.setTimeout(receiver, seconds: 20)
        for flow in 0 ..< 64 {
            let sender = try Sockets.make(in: from, type: Int32(SOCK_DGRAM.rawValue))
            defer { close(sender) }
            try Sockets.bind(sender, fromIP, UInt16(30_000 + flow))
            try Sockets.connect(sender, toIP, port)
            let payload = seededBytes(1024, seed: UInt64(port) << 8 | UInt64(flow))
            let got = try await offThePool { () throws -> [UInt8] in
                // A datagram lost while the first ones wait for ARP is sent again.
                var buffer = [UInt8](repeating: 0, count: 65536)
                for _ in 0 ..< 3 {
                    _ = payload.withUnsafeBytes { send(sender, $0.baseAddress, $0.count, 0) }
                    var poller = pollfd(fd: receiver, events: Int16(POLLIN), revents: 0)
                    guard poll(&poller, 1, 5000) == 1 else { continue }
                    let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
                    guard n >= 0 else { throw E2EError("datagram of flow \(flow) not received: \(Errno.current)") }
                    return Array(buffer[0 ..< n])
                }
                throw E2EError("datagram of flow \(flow) to \(toIP):\(port) not received in 3 tries")
            }
            #expect(got == payload, "flow \(flow) to \(toIP):\(port)")
        }
    }
}

/// `xensplit netfront` run as a process, its output (both streams) collected in a file.
final class NetfrontProcess: @unchecked Sendable {
    let process: ChildProcess
    let log: URL

    init(_ arguments: [String]) throws {
        log = FileManager.default.temporaryDirectory.appendingPathComponent("xensplit-netfront-\(UUID().uuidString)")
        process = try ChildProcess(TestCommand.xensplit, arguments, standardOutput: .file(log.path), standardError: .standardOutput)
    }

    /// Waits for the process to end by itself; its status and output.
    func exit() async throws -> (Int32, String) {
        let process = self.process
        let status = await process.exited()
        return (status.code, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    /// SIGTERM, then as ``exit()``.
    func terminate() async throws -> (Int32, String) {
        process.signal(SIGTERM)
        return try await exit()
    }

    /// Ends it if it still runs (a failed test), and removes the log.
    func stop() {
        if process.signal(SIGKILL) { process.wait() }
        try? FileManager.default.removeItem(at: log)
    }
}
