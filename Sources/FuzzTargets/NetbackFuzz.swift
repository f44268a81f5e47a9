import Glibc
import Logging
import NetBackend
import Netif
import SharedMemory
import URing
import XenPlatform
import XenRing
import XenTesting

/// A fuzz target: the bytes script a hostile frontend against one ``NetbackQueue`` on the
/// in-process hypervisor, both directions. On the tx ring the frontend writes raw slots,
/// plausible requests and extra-info slots (any flags, sizes, offsets, grants), lies about
/// req_prod and rewrites its data pages; on the rx ring it posts buffers (any id, any
/// grant) or raw slots. The TAP device is an engine that holds every write and read until
/// the script completes it, with frames the script writes (virtio-net header included).
/// The queue must never trap, never write a TAP frame larger than its buffer or smaller
/// than a header, never answer an honest frontend more than it asked, and once its waits
/// are cancelled and it is closed must hold no mapping, pinned grant or copy buffer.
public enum NetbackFuzz {
    final class World: @unchecked Sendable {
        // SAFETY (@unchecked): libFuzzer calls the target from one thread.
        let hypervisor: InProcessHypervisor
        let domain: DomainID
        let guest: InProcessPlatform
        let dom0: InProcessPlatform
        let data: SharedPages
        let readOnlyData: SharedPages
        static let dataPages = 8

        init() throws {
            var configuration = InProcessHypervisor.Configuration()
            configuration.poolPages = 8192
            configuration.grantEntries = 1024
            configuration.masksDeliveredPorts = true
            hypervisor = try InProcessHypervisor(configuration: configuration)
            domain = try hypervisor.createDomain(name: "fuzz")
            guest = try hypervisor.platform(for: domain)
            dom0 = try hypervisor.platform(for: .dom0)
            data = try guest.share(pages: Self.dataPages, with: .dom0, writable: true)
            readOnlyData = try guest.share(pages: 1, with: .dom0, writable: false)
        }

        /// A gref the script picks: granted writable, granted read-only, or anything.
        func gref(_ choice: UInt8, _ raw: UInt8) -> GrantRef {
            switch choice % 8 {
            case 0...5: return data.refs[Int(raw) % data.refs.count]
            case 6: return readOnlyData.refs[0]
            default: return UInt32(raw) * 5 % 1100
            }
        }
    }

    nonisolated(unsafe) static var world: World?
    /// What the queues counted over every input so far, so a replay can check the scripts
    /// reach packets delivered both ways and not only refusals.
    public nonisolated(unsafe) static var reached = NetifCounters()
    static let quiet = quietLogger("xensplit.fuzz.netback")

    /// Runs one input. Violated invariants trap, which the fuzzer reports as a crash.
    public static func run(_ input: UnsafeRawBufferPointer) {
        if world == nil {
            do { world = try World() } catch { fatalError("netback fuzz world: \(error)") }
        }
        let w = world!
        var script = ByteScript(input)
        let bits = script.byte()
        let features = NetbackGuestFeatures(scatterGather: bits & 1 != 0, checksumOffload: bits & 2 != 0,
                                            ipv6ChecksumOffload: bits & 4 != 0, gsoTCPv4: bits & 9 == 9,
                                            gsoTCPv6: bits & 17 == 17)
        let configuration = NetbackQueueConfiguration(txBuffers: Int(script.byte() % 8) + 1, rxBuffers: Int(script.byte() % 4) + 1)
        let txFront: MockRingPeer.Frontend, txBack: MockRingPeer.Backend
        let rxFront: MockRingPeer.Frontend, rxBack: MockRingPeer.Backend
        do {
            txFront = try MockRingPeer.Frontend(platform: w.guest, backendDomain: .dom0, entrySize: NetifLayout.txSlotSize)
            txBack = try MockRingPeer.Backend(platform: w.dom0, connection: txFront.connection, entrySize: NetifLayout.txSlotSize)
            rxFront = try MockRingPeer.Frontend(platform: w.guest, backendDomain: .dom0, entrySize: NetifLayout.rxSlotSize)
            rxBack = try MockRingPeer.Backend(platform: w.dom0, connection: rxFront.connection, entrySize: NetifLayout.rxSlotSize)
        } catch { fatalError("ring setup: \(error)") }
        // The TAP queue: a packet socket pair, so the queue's own non-blocking reads get one
        // frame each; the engine writes the script's frames into the other end.
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                         0, &pair) == 0 else { fatalError("socketpair: errno \(errno)") }
        defer { Glibc.close(pair[0]); Glibc.close(pair[1]) }
        let queue: NetbackQueue
        do {
            // One channel for both rings, as a frontend without feature-split-event-channels has.
            queue = try NetbackQueue(name: "fuzz", frontendDomain: w.domain, txRing: txBack.ring, rxRing: rxBack.ring,
                                     eventChannel: txBack.eventChannel, txPort: txBack.port, rxPort: txBack.port,
                                     mapper: w.dom0, tapDescriptor: pair[0], features: features, configuration: configuration,
                                     logger: quiet)
        } catch { fatalError("queue setup: \(error)") }
        let engine = TapEngine(tap: pair[0], peer: pair[1])
        var honest = true

        while !script.isEmpty {
            switch script.byte() % 12 {
            case 0: // raw bytes into a tx slot
                let slot = txFront.shared.slotOffset(script.word())
                for _ in 0..<Int(script.byte() % 12) {
                    txFront.shared.memory.store(script.byte(), at: slot + Int(script.byte()) % NetifLayout.txSlotSize)
                }
            case 1: // a plausible tx request
                let flags = NetifTxFlags(rawValue: UInt16(script.byte() & 0x1F))
                let offset = script.byte() % 4 == 0 ? UInt16(script.byte()) << 4 : UInt16(script.byte() % 64)
                let size = script.byte() % 4 == 0 ? UInt16(truncatingIfNeeded: script.word()) : UInt16(script.byte()) * 8 + 14
                let request = NetifTxRequest(gref: w.gref(script.byte(), script.byte()), offset: offset, flags: flags,
                                             id: UInt16(script.byte() % 64), size: size)
                try? txFront.produceRequest { request.encode(into: $0, at: 0) }
            case 2: // an extra-info slot
                let kinds: [NetifExtraInfo.Kind] = [
                    .gso(size: UInt16(script.byte()) * 8, type: script.byte() & 1 == 0 ? .tcpv4 : .tcpv6, features: 0),
                    .multicastAdd(NetifMACAddress(1, 0, 0x5e, 0, 0, script.byte())),
                    .multicastDelete(NetifMACAddress(1, 0, 0x5e, 0, 0, script.byte())),
                ]
                let extra = NetifExtraInfo(kinds[Int(script.byte()) % 3], flags: script.byte() & 1 == 0 ? [] : .more)
                try? txFront.produceRequest { extra.encode(into: $0, at: 0) }
            case 3: // publish tx: honestly, or any req_prod
                if script.byte() & 1 == 0 {
                    _ = try? txFront.pushRequestsAndNotify()
                } else {
                    honest = false
                    txFront.shared.storeRequestProducer(script.word())
                }
            case 4: // post an rx buffer
                let request = NetifRxRequest(id: UInt16(script.byte() % 64), gref: w.gref(script.byte(), script.byte()))
                try? rxFront.produceRequest { request.encode(into: $0, at: 0) }
            case 5: // publish rx
                if script.byte() & 1 == 0 {
                    _ = try? rxFront.pushRequestsAndNotify()
                } else {
                    honest = false
                    rxFront.shared.storeRequestProducer(script.word())
                }
            case 6:
                _ = queue.service(engine: engine)
            case 7: // some held TAP operations complete, in an order the script picks
                for _ in 0..<Int(script.byte() % 4) + 1 {
                    guard let (request, result) = engine.complete(pick: Int(script.byte()), script: &script) else { break }
                    queue.complete(slot: Int(request.userData & 0xFFFF_FFFF), result: result, engine: engine)
                }
            case 8:
                queue.pushResponses()
            case 9: // the frontend takes its responses
                check(consumed: Result { () throws(XenTestingError) in try txFront.consumeResponses { _ in } }, honest: honest)
                check(consumed: Result { () throws(XenTestingError) in try rxFront.consumeResponses { _ in } }, honest: honest)
            case 10: // raw bytes into an rx slot
                let slot = rxFront.shared.slotOffset(script.word())
                rxFront.shared.memory.store(script.word(), at: slot + Int(script.byte() % 2) * 4)
            default: // the frontend scribbles on its data
                w.data.view.store(script.word(), at: Int(script.word()) % (World.dataPages * pageSize - 4))
            }
        }
        // The queue leaves: its waits are cancelled, everything held completes.
        queue.cancelWaits(engine: engine)
        while let (request, _) = engine.complete(pick: 0, script: &script) {
            queue.complete(slot: Int(request.userData & 0xFFFF_FFFF), result: -ECANCELED, engine: engine)
        }
        precondition(queue.inFlight == 0, "operations in flight with none held: \(queue.inFlight)")
        let counted = queue.statistics
        reached.txPackets += counted.txPackets
        reached.txDropped += counted.txDropped
        reached.rxPackets += counted.rxPackets
        reached.rxDropped += counted.rxDropped
        do { try queue.close() } catch { fatalError("close: \(error)") }
        for back in [txBack, rxBack] {
            back.eventChannel.close()
            do { try w.dom0.unmap(back.mapping) } catch { fatalError("ring unmap: \(error)") }
        }
        precondition(w.hypervisor.liveMappings == 0, "mappings left after close: \(w.hypervisor.liveMappings)")
        precondition(w.hypervisor.pinnedRefs(of: w.domain).isEmpty, "grants still pinned after close")
        do { try txFront.close(); try rxFront.close() } catch { fatalError("frontend close: \(error)") }
    }

    /// An honest frontend (it never lied about req_prod) is never answered more than it asked.
    static func check(consumed: Result<Int, XenTestingError>, honest: Bool) {
        if honest, case let .failure(error) = consumed {
            fatalError("the backend answered an honest frontend out of bounds: \(error)")
        }
    }
}

/// The TAP device as an engine: every write and read is held until the script completes
/// it. A write's vectors are checked; a read is filled with a frame the script writes.
final class TapEngine: BlockIOEngine {
    /// The queue's TAP descriptor, and the other end, where a frame the script picks is
    /// written when the queue's poll of it completes.
    let tap: Int32
    let peer: Int32
    var held: [BlockRequest] = []

    init(tap: Int32, peer: Int32) {
        self.tap = tap
        self.peer = peer
    }

    var kind: BlockIOEngineKind { .threads }
    let capacity = 64
    var inFlight: Int { held.count }

    func registerFiles(_ descriptors: [Int32]) throws(URingError) {}
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {}
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {}
    func submit() throws(URingError) {}
    func wait(minimum: Int, timeout: Duration?) throws(URingError) {}
    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int { 0 }
    func close() {}

    func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        guard held.count < capacity else { return .queueFull(request) }
        if case let .cancel(target) = request.operation {
            // A cancel ends its target at once, as io_uring's does for a pending read.
            if let at = held.firstIndex(where: { $0.userData == target }) { cancelled.append(held.remove(at: at)) }
        }
        held.append(request)
        return .accepted
    }

    /// Requests a cancel ended, each to complete with -ECANCELED before its cancel.
    var cancelled: [BlockRequest] = []

    /// Completes the held operation at `pick` (modulo the count): its request and result.
    func complete(pick: Int, script: inout ByteScript) -> (BlockRequest, Int32)? {
        if !cancelled.isEmpty { return (cancelled.removeFirst(), -ECANCELED) }
        guard !held.isEmpty else { return nil }
        let request = held.remove(at: pick % held.count)
        switch request.operation {
        case let .streamWriteVector(_, vectors):
            let length = vectors.reduce(0) { $0 + $1.iov_len }
            precondition(length >= 10 && length <= 17 * 4096, "a TAP write of \(length) bytes")
            return (request, script.byte() % 8 == 0 ? -EIO : Int32(length))
        case let .streamRead(_, buffer):
            return (request, Self.frame(into: buffer, script: &script))
        case let .pollReadable(fd) where fd == tap:
            // The kernel's TAP queue gets a frame (or nothing, for a spurious wake-up).
            let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 72 << 10, alignment: 16)
            defer { frame.deallocate() }
            let length = Self.frame(into: frame, script: &script)
            if length >= 0 { _ = Glibc.write(peer, frame.baseAddress, Int(length)) }
            return (request, Int32(POLLIN))
        case .cancel:
            return (request, 0)
        default:
            return (request, -EINVAL)
        }
    }

    /// Writes a frame the script picks into `buffer`: a virtio-net header, then an IPv4 TCP
    /// or UDP frame (or IPv6) whose bytes the script may overwrite. Returns its length, or
    /// now and then an error or an empty read.
    static func frame(into buffer: UnsafeMutableRawBufferPointer, script: inout ByteScript) -> Int32 {
        let choice = script.byte()
        if choice % 16 == 0 { return [-EAGAIN, 0, 5, -EIO][Int(choice / 16 % 4)] }
        let payload = script.byte() % 4 == 0 ? Int(script.word() % 65600) : Int(script.byte()) * 6
        let ipv6 = choice & 0x20 != 0
        let header = 14 + (ipv6 ? 40 : 20) + 20
        let length = min(10 + header + payload, buffer.count)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        // virtio-net header: flags, GSO type, header length, GSO size, csum start and offset.
        let flags: UInt8 = choice & 0x40 != 0 ? 1 : (choice & 0x80 != 0 ? 2 : 0)
        buffer[0] = flags
        buffer[1] = script.byte() % 4 == 0 ? [1, 3, 4, 0x80][Int(script.byte() % 4)] : 0
        buffer.storeBytes(of: UInt16(header).littleEndian, toByteOffset: 2, as: UInt16.self)
        buffer.storeBytes(of: UInt16(script.byte()) * 8, toByteOffset: 4, as: UInt16.self)
        buffer.storeBytes(of: UInt16(14 + (ipv6 ? 40 : 20)), toByteOffset: 6, as: UInt16.self)
        buffer.storeBytes(of: UInt16(16), toByteOffset: 8, as: UInt16.self)
        let f = 10
        for i in 0..<6 { buffer[f + i] = i == 0 ? script.byte() & 1 : 0x02 }
        buffer[f + 12] = ipv6 ? 0x86 : 0x08
        buffer[f + 13] = ipv6 ? 0xdd : 0x00
        let ip = f + 14
        let transportLength = 20 + payload
        if ipv6 {
            buffer[ip] = 0x60
            buffer.storeBytes(of: UInt16(truncatingIfNeeded: transportLength).bigEndian, toByteOffset: ip + 4, as: UInt16.self)
            buffer[ip + 6] = script.byte() & 1 == 0 ? 6 : 17
            buffer[ip + 7] = 64
        } else {
            buffer[ip] = 0x45
            buffer.storeBytes(of: UInt16(truncatingIfNeeded: 20 + transportLength).bigEndian, toByteOffset: ip + 2, as: UInt16.self)
            buffer[ip + 8] = 64
            buffer[ip + 9] = script.byte() & 1 == 0 ? 6 : 17
        }
        buffer[ip + (ipv6 ? 40 : 20) + 12] = 0x50  // TCP data offset
        // The script overwrites a few bytes anywhere in the frame.
        for _ in 0..<Int(script.byte() % 4) {
            let at = Int(script.byte()) % max(1, length)
            buffer[at] = script.byte()
        }
        return Int32(length)
    }
}
