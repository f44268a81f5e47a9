import Foundation
import Glibc
import NetFrontend
import SystemCalls
import Tap
import Testing
import XenLocal
import XenPlatform
import XenTesting

/// Runs `body` with a fresh pair and stops it on every path.
func withPair(bridgeMTU: Int = 1500, maxQueues: UInt32 = 1, _ body: (NetPair) async throws -> Void) async throws {
    let pair = try NetPair(bridgeMTU: bridgeMTU, maxQueues: maxQueues)
    do { try await body(pair) } catch {
        await pair.stop()
        throw error
    }
    await pair.stop()
}

@Suite("net end to end: NetFrontend against NetBackend through vif-bridge", .serialized)
struct NetEndToEndTests {
    @Test("ping both ways through the bridge", arguments: [1500, 9000])
    func pingBothWays(mtu: Int) async throws {
        try await withPair(bridgeMTU: mtu) { pair in
            let guest = try await pair.guest("g1", host: 10, extra: mtu == 1500 ? "" : "mtu=\(mtu)")
            // The script put the backend's TAP on the bridge; both TAPs have the vif's MTU.
            #expect(try pair.namespace.readSysfs("/sys/class/net/\(guest.vif)/master/uevent").contains("INTERFACE=\(NetPair.bridge)"))
            #expect(try pair.namespace.readSysfs("/sys/class/net/\(guest.vif)/mtu") == "\(mtu)")
            #expect(try guest.tap.mtu() == mtu)
            let largest = mtu - 28
            #expect(try await NetPair.ping(from: guest.namespace, NetPair.bridgeAddress))
            #expect(try await NetPair.ping(from: guest.namespace, NetPair.bridgeAddress, size: largest))
            #expect(try await NetPair.ping(from: pair.namespace, guest.address))
            #expect(try await NetPair.ping(from: pair.namespace, guest.address, size: largest))
        }
    }

    @Test("32 MiB over TCP both ways arrive intact, with the guest's offloads and without",
          arguments: [true, false])
    func tcpBothWays(offloads: Bool) async throws {
        try await withPair { pair in
            let guest = try await pair.guest("g1", host: 10)
            if !offloads {
                // What `ethtool -K eth0 tx off sg off tso off` does to a TAP device: the
                // guest kernel then hands netfront only whole, checksummed frames.
                try guest.tap.setOffloads([])
            }
            let size = 32 << 20
            let up = seededBytes(size, seed: 0x5EED_0001)
            let upResult = try await transfer(up, from: guest.namespace, to: pair.namespace, ip: NetPair.bridgeAddress, port: 5201)
            #expect(upResult.count == size)
            #expect(upResult.digest == (try await sha256(up)), "guest to dom0")
            // Whether the guest's frames were GSO (larger than an Ethernet frame) or not.
            let counters = guest.frontend.counters
            let averageFrame = counters.txBytes / max(1, counters.txPackets)
            #expect(offloads ? averageFrame > 1514 : averageFrame <= 1514, "\(counters)")
            let down = seededBytes(size, seed: 0x5EED_0002)
            let downResult = try await transfer(down, from: pair.namespace, to: guest.namespace, ip: guest.address, port: 5202)
            #expect(downResult.count == size)
            #expect(downResult.digest == (try await sha256(down)), "dom0 to guest")
        }
    }

    @Test("UDP datagrams of 64 B to 8 KiB, fragmented at MTU 1500, arrive intact both ways")
    func udpBothWays() async throws {
        try await withPair { pair in
            let guest = try await pair.guest("g1", host: 10)
            let sizes = [64, 512, 1472, 1473, 3000, 4096, 8192]
            try await Self.datagrams(sizes, from: guest.namespace, to: pair.namespace, ip: NetPair.bridgeAddress, port: 6001)
            try await Self.datagrams(sizes, from: pair.namespace, to: guest.namespace, ip: guest.address, port: 6002)
        }
    }

    static func datagrams(_ sizes: [Int], from: TestNamespace, to: TestNamespace, ip: String, port: UInt16) async throws {
        let receiver = try Sockets.make(in: to, type: Int32(SOCK_DGRAM.rawValue))
        defer { close(receiver) }
        try Sockets.bind(receiver, ip, port)
        Sockets.setTimeout(receiver, seconds: 20)
        let sender = try Sockets.make(in: from, type: Int32(SOCK_DGRAM.rawValue))
        defer { close(sender) }
        try Sockets.connect(sender, ip, port)
        for (index, size) in sizes.enumerated() {
            let payload = seededBytes((size + 7) & ~7, seed: UInt64(size))[..<size].map { $0 }
            // The first datagram may wait for ARP; the kernel queues a few, so one send each.
            let sent = payload.withUnsafeBytes { send(sender, $0.baseAddress, $0.count, 0) }
            #expect(sent == size)
            let got = try await offThePool { () throws -> [UInt8] in
                var buffer = [UInt8](repeating: 0, count: 65536)
                let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
                guard n >= 0 else { throw E2EError("datagram \(index) (\(size) B) not received: \(Errno.current)") }
                return Array(buffer[0..<n])
            }
            #expect(got == payload, "datagram of \(size) B to \(ip)")
        }
    }

    @Test("16 guests on one backend reach each other through the bridge")
    func sixteenGuests() async throws {
        try await withPair { pair in
            var guests: [Guest] = []
            for i in 0..<16 { guests.append(try await pair.guest("g\(i)", host: 10 + i)) }
            for (i, guest) in guests.enumerated() {
                for step in [1, 5] {
                    let other = guests[(i + step) % guests.count]
                    #expect(try await NetPair.ping(from: guest.namespace, other.address, count: 1), "\(guest.name) to \(other.name)")
                }
            }
            #expect(pair.daemon.connectedDevices.values.filter { $0 }.count == 16)
        }
    }

    @Test("a guest destroyed mid-transfer leaves nothing behind and the other guests' vifs unaffected")
    func destroyDuringTraffic() async throws {
        try await withPair { pair in
            let stay = try await pair.guest("stay", host: 10)
            let before = try pair.usage()[0]
            let doomed = try await pair.guest("doomed", host: 11)
            #expect(try pair.namespace.hasLink(doomed.vif))

            let listener = try Sockets.listener(in: pair.namespace, NetPair.bridgeAddress, 5301)
            defer { close(listener) }
            let sent = Counter()
            // Short socket timeouts: the stream is cut by the destroy and both ends give up.
            let receiving = Task { try? await offThePool { try Sockets.receiveAll(listener, timeout: 3) } }
            let sending = Task {
                try? await offThePool {
                    try Sockets.sendAll(seededBytes(256 << 20, seed: 7), from: doomed.namespace, to: NetPair.bridgeAddress, 5301,
                                        timeout: 3) {
                        sent.set($0)
                    }
                }
            }
            try await eventually("traffic flows") { sent.value > 4 << 20 }
            try await pair.toolstack.destroy(name: "doomed")
            await doomed.stop()
            _ = await sending.value
            _ = await receiving.value

            try await eventually("vif of the destroyed guest removed") { try !pair.namespace.hasLink(doomed.vif) }
            try await eventually("nothing of the destroyed guest held") {
                let usage = try pair.usage()
                guard usage[doomed.id] == nil, let now = usage[0], let before else { return false }
                return (now.mappingsHeld, now.ports, now.grantedPages, now.copyBufferPages)
                    == (before.mappingsHeld, before.ports, before.grantedPages, before.copyBufferPages)
            }
            #expect(try await NetPair.ping(from: stay.namespace, NetPair.bridgeAddress))
            #expect(try await NetPair.ping(from: pair.namespace, stay.address))
        }
    }

    @Test("a netfront closed and started again mid-transfer reconnects and the stream completes")
    func frontendRestartMidTransfer() async throws {
        try await withPair { pair in
            let guest = try await pair.guest("g1", host: 10)
            let data = seededBytes(32 << 20, seed: 0x5EED_0003)
            // The sender stops at 8 MiB until the frontend is closed, then sends on into
            // the vif while no frontend serves it, so the restart lands mid-stream.
            let paused = DispatchSemaphore(value: 0), resume = DispatchSemaphore(value: 0)
            let waited = Counter()
            let transferring = Task {
                try await transfer(data, from: guest.namespace, to: pair.namespace, ip: NetPair.bridgeAddress,
                                          port: 5401) { sent in
                    guard sent >= 8 << 20, waited.value == 0 else { return }
                    waited.set(1)
                    paused.signal()
                    resume.wait()
                }
            }
            try await offThePool { paused.wait() }
            let left = await guest.frontend.close()
            #expect(left == 0, "every granted page given back at close")
            resume.signal()
            try await Task.sleep(for: .milliseconds(200))
            try await guest.startFrontend()
            let result = try await transferring.value
            #expect(result.count == data.count)
            #expect(result.digest == (try await sha256(data)))
            #expect(try await NetPair.ping(from: guest.namespace, NetPair.bridgeAddress))
            #expect(try await NetPair.ping(from: pair.namespace, guest.address))
        }
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var stored = 0
    var value: Int { lock.withLock { stored } }
    func set(_ value: Int) { lock.withLock { stored = value } }
}
