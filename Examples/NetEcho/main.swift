// A guest's network interface from end to end with the public library API, no CLI: a
// local hypervisor, a domain with one vif, a tiny UDP echo service as its backend (built
// on the wire modules: xenbus hooks, the netif rings), and the NetFrontend surfacing the
// vif as TAP device "echo0" in a network namespace of its own. A datagram sent from the
// namespace to 198.18.0.2 port 7 comes back. Run as root: swift run net-echo-example
import Foundation
import Glibc
import Logging
import NetFrontend
import Netif
import SharedMemory
import Synchronization
import SystemCalls
import Tap
import XenBus
import XenLocal
import XenPlatform
import XenRing

var logger = Logger(label: "net-echo-example")
logger.logLevel = .warning

/// The echo service's end of one vif: it answers every tx slot, and sends each UDP/IPv4
/// datagram to port 7 back to where it came from, addresses and ports swapped (which
/// leaves every checksum valid, a partial one included).
final class EchoBackend: XenbusBackendHooks, @unchecked Sendable {
    let platform: any Platform
    let stopping = Atomic<Bool>(false)
    var thread: Thread?

    init(platform: any Platform) { self.platform = platform }

    func features(for paths: XenbusDevicePaths) async throws -> XenbusKeys {
        var offered = NetifBackendFeatures()
        offered.rxCopy = true
        offered.scatterGather = true
        var keys = XenbusKeys()
        for (key, value) in offered.xenstoreEntries.sorted(by: { $0.key < $1.key }) { keys.set(key, value) }
        return keys
    }

    func readFrontend(_ frontend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> NetifConnectionKeys {
        var entries: [String: String] = [:]
        for key in NetifConnectionKeys.keys(queueCount: 1) {
            if let value = try await frontend.optionalString(key) { entries[key] = value }
        }
        return try NetifConnectionKeys(xenstore: entries, queueCount: 1, splitEventChannels: false, controlRing: false)
    }

    func connect(_ keys: NetifConnectionKeys, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        let queue = keys.queues[0]
        guard case let .shared(remotePort) = queue.eventChannels else { throw XenbusError.missingKey(path: paths.frontend + "/event-channel") }
        let txMap = try platform.grantMapper.map([queue.txRingRef], from: paths.frontendID, writable: true)
        let rxMap = try platform.grantMapper.map([queue.rxRingRef], from: paths.frontendID, writable: true)
        let channel = try platform.openEventChannel()
        let port = try channel.bindInterdomain(remote: paths.frontendID, remotePort: remotePort)
        let echo = Echo(platform: platform, guest: paths.frontendID, channel: channel, port: port,
                        tx: BackRing(try SharedRing(memory: txMap.view, pages: 1, entrySize: NetifLayout.txSlotSize)),
                        rx: BackRing(try SharedRing(memory: rxMap.view, pages: 1, entrySize: NetifLayout.rxSlotSize)))
        stopping.store(false, ordering: .relaxed)
        let thread = Thread { [self] in
            var echo = echo
            while !stopping.load(ordering: .relaxed) { echo.serve() }
            channel.close()
            try? platform.grantMapper.unmap(txMap)
            try? platform.grantMapper.unmap(rxMap)
        }
        thread.start()
        self.thread = thread
        return XenbusKeys()
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        stopping.store(true, ordering: .relaxed)
        while thread?.isFinished == false { try? await Task.sleep(for: .milliseconds(5)) }
    }
}

/// The rings of one connection, on the echo thread.
struct Echo {
    let platform: any Platform
    let guest: DomainID
    let channel: any EventChannel
    let port: EventPort
    var tx: BackRing
    var rx: BackRing

    /// Waits (up to 100 ms, so a stop is seen) for a notification, then serves the tx ring.
    mutating func serve() {
        var poll = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
        if Glibc.poll(&poll, 1, 100) > 0 {
            try? channel.takePending(atMost: 1) { port throws(PlatformError) in try channel.unmask(port) }
        }
        repeat {
            while let frame = takeTx() {
                if let reply = Self.echoed(frame.data) { deliver(reply, checksumBlank: frame.flags.contains(.checksumBlank)) }
            }
        } while (try? tx.finalCheckForRequests()) == true
    }

    /// The next whole tx packet's data, every slot answered.
    mutating func takeTx() -> (data: [UInt8], flags: NetifTxFlags)? {
        guard let producer = try? tx.checkedRequestProducer() else { return nil }
        let start = tx.requestConsumer
        let ring = tx
        guard case let .packet(packet)? = try? NetifTxChainParser().parse(
            available: Int(producer &- start), slot: { ring.requestSlot(start &+ RingIndex($0)) }) else { return nil }
        var data: [UInt8] = []
        for fragment in packet.fragments {
            guard let page = try? platform.grantMapper.map([fragment.gref], from: guest, writable: false) else { continue }
            data += page.view.bytes(at: Int(fragment.offset), length: Int(fragment.size))
            try? platform.grantMapper.unmap(page)
        }
        tx.requestConsumer = start &+ RingIndex(packet.slotIDs.count)
        for id in packet.slotIDs {
            NetifTxResponse(id: id ?? 0, status: id == nil ? .null : .okay).encode(into: tx.responseSlot(tx.responseProducerPrivate), at: 0)
            tx.responseProducerPrivate &+= 1
        }
        if tx.pushResponsesAndCheckNotify() { try? channel.notify(port) }
        return (data, packet.flags)
    }

    /// `frame` with Ethernet and IPv4 addresses and UDP ports swapped, if it is a UDP/IPv4
    /// datagram to port 7.
    static func echoed(_ frame: [UInt8]) -> [UInt8]? {
        guard frame.count >= 42, frame[12] == 0x08, frame[13] == 0x00, frame[14] == 0x45, frame[23] == 17,
              frame[36] == 0, frame[37] == 7 else { return nil }
        var reply = frame
        reply.replaceSubrange(0 ..< 6, with: frame[6 ..< 12])
        reply.replaceSubrange(6 ..< 12, with: frame[0 ..< 6])
        reply.replaceSubrange(26 ..< 30, with: frame[30 ..< 34])
        reply.replaceSubrange(30 ..< 34, with: frame[26 ..< 30])
        reply.replaceSubrange(34 ..< 36, with: frame[36 ..< 38])
        reply.replaceSubrange(36 ..< 38, with: frame[34 ..< 36])
        return reply
    }

    /// Copies `frame` into the guest's posted rx pages, each answered in its own slot.
    mutating func deliver(_ frame: [UInt8], checksumBlank: Bool) {
        let flags: NetifRxFlags = checksumBlank ? [.checksumBlank, .dataValidated] : []
        guard let plan = try? NetifRxPlan(length: frame.count, flags: flags),
              let producer = try? rx.checkedRequestProducer(),
              Int(producer &- rx.requestConsumer) >= plan.requestsNeeded else { return }
        for case let .data(offset, length, slotFlags) in plan.slots {
            let index = rx.requestConsumer
            guard let request = try? NetifRxRequest.decode(from: rx.requestSlot(index), at: 0),
                  let page = try? platform.grantMapper.map([request.gref], from: guest, writable: true) else { return }
            frame[offset ..< offset + length].withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
            try? platform.grantMapper.unmap(page)
            NetifRxResponse(id: request.id, offset: 0, flags: slotFlags, size: UInt16(length)).encode(into: rx.responseSlot(index), at: 0)
            rx.requestConsumer = index &+ 1
            rx.responseProducerPrivate = index &+ 1
        }
        if rx.pushResponsesAndCheckNotify() { try? channel.notify(port) }
    }
}

/// `ip ARGS...`, stopping the example if it fails.
func ip(_ arguments: String...) {
    let status: ChildProcess.ExitStatus
    do { status = try ChildProcess("/usr/sbin/ip", arguments).wait() } catch { fatalError("ip \(arguments.joined(separator: " ")): \(error)") }
    guard status.succeeded else { fatalError("ip \(arguments.joined(separator: " ")) failed (\(status))") }
}

/// Sends `message` to the echo port from a UDP socket made inside `namespace` and returns
/// what came back (empty after 10 s without an answer). Not on the main actor: the body
/// runs on the namespace's own thread.
func roundTrip(_ message: [UInt8], in namespace: NetworkNamespace) throws -> [UInt8] {
    try namespace.run { () -> [UInt8] in
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var peer = sockaddr_in()
        peer.sin_family = sa_family_t(AF_INET)
        peer.sin_port = UInt16(7).bigEndian
        peer.sin_addr.s_addr = UInt32(198) | UInt32(18) << 8 | UInt32(0) << 16 | UInt32(2) << 24
        _ = withUnsafePointer(to: &peer) { to in
            to.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
        var buffer = [UInt8](repeating: 0, count: 2048)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return count > 0 ? Array(buffer[..<count]) : []
    }.get()
}

// The local hypervisor on a thread of this process, its sockets in a fresh directory.
var template = Array("/tmp/net-echo-example-XXXXXX".utf8CString)
guard let made = mkdtemp(&template) else { fatalError("mkdtemp: errno \(errno)") }
let directory = String(cString: made)
let hypervisor = try LocalHypervisor(configuration: .init(stateDirectory: directory), logger: logger)
hypervisor.start()
let dom0 = try LocalPlatform(stateDirectory: directory)

// A domain "guest" with one vif (xl's syntax); the echo service is its backend.
let toolstack = LocalToolstack(platform: dom0)
let nic = try VifSpec(parsing: "mac=00:16:3e:00:00:01, mtu=1500")
let guestID = try await toolstack.createDomain(name: "guest", disks: [], nics: [nic], hotplug: .none)
let paths = try XenbusDevicePaths(type: NetFrontend.deviceType, devid: "0", backendID: 0, frontendID: guestID)
let echo = EchoBackend(platform: dom0)
let backendStore = try dom0.connectXenStore()
let backend = XenbusBackendDevice(store: backendStore, backend: paths.backend, hooks: echo, logger: logger)

// Inside the guest: the vif's frontend, its guest side TAP device echo0 in namespace ns.
let namespaceName = "net-echo-example-\(getpid())"
ip("netns", "add", namespaceName)
let namespace = try NetworkNamespace(namespaceName)
let guest = try LocalPlatform(stateDirectory: directory, domain: "guest")
let frontend = try NetFrontend(platform: guest, devid: 0, logger: logger)
let tap = try TapDevice(name: "echo0", in: namespace)
try frontend.attachTap(tap)
let link = try await frontend.connected()
print("echo0: mac \(link.macAddress), mtu \(link.mtu), scatter-gather \(link.backend.scatterGather)")
ip("-n", namespaceName, "addr", "add", "198.18.0.1/24", "dev", "echo0")
ip("-n", namespaceName, "link", "set", "echo0", "up")
ip("-n", namespaceName, "neigh", "add", "198.18.0.2", "lladdr", EthernetAddress.netbackVif.description, "dev", "echo0")

// A datagram to the echo port, from a socket made inside the namespace.
let message = Array("hello through the rings".utf8)
let reply = try roundTrip(message, in: namespace)
print(reply == message ? "echoed: \(String(decoding: reply, as: UTF8.self))" : "no echo")
// Tear down in reverse: frontend (Closing, Closed, grants ended), TAP, namespace, backend,
// domain, hypervisor, files.
let stillMapped = await frontend.close()
let counters = frontend.counters
print("tx \(counters.txPackets) packets, rx \(counters.rxPackets) packets")
tap.close()
ip("netns", "del", namespaceName)
await backend.close()
backendStore.close()
try await toolstack.destroy(name: "guest", hotplug: .none)
hypervisor.stopAndWait()
try FileManager.default.removeItem(atPath: directory)
exit(reply == message && stillMapped == 0 ? 0 : 1)
