import Glibc
import Logging
import NetFrontend
import Netif
import SharedMemory
import XenPlatform
import XenRing
import XenTesting

/// A fuzz target: the bytes script a lying backend against one netfront queue pair
/// (``NetFrontendRingProbe``: the datapath's own send, post and response consumers). The
/// frontend sends frames and posts rx buffers; the backend takes the requests and answers
/// with plausible responses (a real id or any, any status, size, offset and flags, extra
/// slots), raw slot bytes and any rsp_prod. Netfront must never trap, never count more tx
/// pages in flight than it has, and once it closes, with the backend gone, give every
/// grant back.
public enum NetfrontFuzz {
    final class World: @unchecked Sendable {
        // SAFETY (@unchecked): libFuzzer calls the target from one thread.
        let hypervisor: InProcessHypervisor
        let domain: DomainID
        let guest: InProcessPlatform
        let dom0: InProcessPlatform
        /// Where delivered packets go: a sink that takes anything.
        let sink: Int32
        init() throws {
            var configuration = InProcessHypervisor.Configuration()
            configuration.poolPages = 8192
            configuration.grantEntries = 2048
            configuration.masksDeliveredPorts = true
            hypervisor = try InProcessHypervisor(configuration: configuration)
            domain = try hypervisor.createDomain(name: "fuzz")
            guest = try hypervisor.platform(for: domain)
            dom0 = try hypervisor.platform(for: .dom0)
            sink = open("/dev/null", O_WRONLY)
        }
    }

    nonisolated(unsafe) static var world: World?
    /// What the probes counted over every input so far, and how many inputs caught the
    /// backend lying, so a replay can check the scripts reach delivered packets too.
    public nonisolated(unsafe) static var reached = NetifCounters()
    public nonisolated(unsafe) static var violations = 0
    static let quiet = quietLogger("xensplit.fuzz.netfront")

    public static func run(_ input: UnsafeRawBufferPointer) {
        if world == nil {
            do { world = try World() } catch { fatalError("netfront fuzz world: \(error)") }
        }
        let w = world!
        var script = ByteScript(input)
        let bits = script.byte()
        var features = NetifBackendFeatures()
        features.scatterGather = bits & 1 != 0
        features.gsoTCPv4 = bits & 2 != 0
        features.gsoTCPv6 = bits & 4 != 0
        features.ipv6ChecksumOffload = bits & 8 != 0
        features.rxCopy = true
        let probe: NetFrontendRingProbe
        do {
            probe = try NetFrontendRingProbe(platform: w.guest, backendDomain: .dom0, backend: features,
                                             txBuffers: Int(script.byte() % 32) + 20, logger: quiet)
        } catch { fatalError("probe setup: \(error)") }
        let keys = probe.keys
        let port: EventPort
        switch keys.eventChannels {
        case let .shared(p): port = p
        case let .split(tx, _): port = tx
        }
        let tx: MockRingPeer.Backend
        let rxMapping: GrantMapping
        var rx: BackRing
        do {
            tx = try MockRingPeer.Backend(platform: w.dom0, connection: .init(frontendDomain: w.domain, refs: [keys.txRingRef], port: port),
                                          entrySize: NetifLayout.txSlotSize)
            rxMapping = try w.dom0.grantMapper.map([keys.rxRingRef], from: w.domain, writable: true)
            rx = BackRing(try SharedRing(memory: rxMapping.view, pages: 1, entrySize: NetifLayout.rxSlotSize))
        } catch { fatalError("backend ring setup: \(error)") }
        var txIDs: [UInt16] = []
        var rxIDs: [UInt16] = []
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 70 * 1024, alignment: 16)
        defer { frame.deallocate() }

        while !script.isEmpty {
            switch script.byte() % 13 {
            case 0: // a frame from the TAP device
                let length = TapEngine.frame(into: frame, script: &script)
                if length > 0 { _ = probe.send(UnsafeMutableRawBufferPointer(rebasing: frame[0..<Int(length)])) }
            case 1: probe.postRx()
            case 2: probe.push()
            case 3: probe.consumeTx()
            case 4: probe.consumeRx(tapFD: script.byte() & 1 == 0 ? -1 : w.sink)
            case 5: // the backend takes tx requests
                _ = try? tx.consumeRequests { slot in txIDs.append(slot.load(UInt16.self, at: 8)) }
            case 6: // a tx response
                let id = txIDs.isEmpty || script.byte() % 8 == 0 ? UInt16(script.byte()) : txIDs.removeFirst()
                let status = NetifStatus(rawValue: [0, 0, -1, -2, 1, -3][Int(script.byte() % 6)]) ?? .okay
                try? tx.produceResponse { NetifTxResponse(id: id, status: status).encode(into: $0, at: 0) }
            case 7: // the backend takes rx requests
                if let producer = try? rx.checkedRequestProducer() {
                    while rx.requestConsumer != producer, !rx.requestConsumerOverflow(rx.requestConsumer) {
                        rxIDs.append(rx.requestSlot(rx.requestConsumer).load(UInt16.self, at: 0))
                        rx.requestConsumer &+= 1
                    }
                }
            case 8: // an rx response: any offset, flags and size or error
                let id = rxIDs.isEmpty || script.byte() % 8 == 0 ? UInt16(script.byte()) : rxIDs.removeFirst()
                let status: Int16 = script.byte() % 8 == 0 ? Int16(bitPattern: UInt16(script.byte()) << 8 | 0xF0)
                    : Int16(script.byte()) * 16 + 14
                let offset = script.byte() % 4 == 0 ? UInt16(script.byte()) * 32 : 0
                let response = NetifRxResponse(id: id, offset: offset, flags: NetifRxFlags(rawValue: UInt16(script.byte() & 0x1F)),
                                               status: status)
                response.encode(into: rx.responseSlot(rx.responseProducerPrivate), at: 0)
                rx.responseProducerPrivate &+= 1
            case 9: // an rx extra-info slot
                let extra = NetifExtraInfo(.gso(size: UInt16(script.byte()) * 8, type: script.byte() & 1 == 0 ? .tcpv4 : .tcpv6,
                                                features: 0),
                                           flags: script.byte() & 1 == 0 ? [] : .more)
                extra.encode(into: rx.responseSlot(rx.responseProducerPrivate), at: 0)
                rx.responseProducerPrivate &+= 1
            case 10: // publish tx: honestly, or any rsp_prod
                if script.byte() & 1 == 0 { _ = try? tx.pushResponsesAndNotify() } else { tx.shared.storeResponseProducer(script.word()) }
            case 11: // publish rx
                if script.byte() & 1 == 0 { _ = rx.pushResponsesAndCheckNotify() } else { rx.shared.storeResponseProducer(script.word()) }
            default: // raw bytes into a slot of either ring
                let shared = script.byte() & 1 == 0 ? tx.shared : rx.shared
                shared.memory.store(script.word(), at: shared.slotOffset(script.word()) + Int(script.byte() % 2) * 4)
            }
            precondition(probe.txInFlight >= 0 && probe.txInFlight <= probe.txPages, "\(probe.txInFlight) tx pages of \(probe.txPages) in flight")
            let counters = probe.counters
            precondition(counters.rxPackets >= 0 && counters.rxBytes >= 0 && counters.txPackets >= 0, "counters went negative")
        }
        let counted = probe.counters
        reached.txPackets += counted.txPackets
        reached.txErrors += counted.txErrors
        reached.rxPackets += counted.rxPackets
        reached.rxDropped += counted.rxDropped
        if probe.broken != nil { violations += 1 }
        do {
            try tx.close()
            try w.dom0.grantMapper.unmap(rxMapping)
        } catch { fatalError("backend close: \(error)") }
        let held = probe.close()
        precondition(held == 0, "\(held) page sets still granted with the backend gone")
        precondition(w.hypervisor.liveMappings == 0, "mappings left: \(w.hypervisor.liveMappings)")
    }
}
