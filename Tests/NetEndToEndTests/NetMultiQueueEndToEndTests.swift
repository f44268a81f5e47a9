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

            let perQueue = guest.frontend.queueCounters
            #expect(perQueue.count == count)
            for (queue, counters) in perQueue.enumerated() {
                #expect(counters.txPackets > 0 && counters.rxPackets > 0, "queue pair \(queue) carried no traffic: \(counters)")
                #expect(counters.txErrors == 0 && counters.rxErrors == 0, "queue pair \(queue): \(counters)")
            }
            #expect(guest.frontend.violation == nil)
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
            // The refusal is the frontend's: it wrote no keys and went Closing, and no queue
            // was connected on the backend.
            try await eventually("frontend Closing") { frontend.state == .closing }
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
