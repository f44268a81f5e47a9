import Glibc
import Netif
import SharedMemory
import Synchronization
import Tap
import XenPlatform
import XenRing

/// One queue pair of a connection as its I/O thread drives it (`io/netif.h`): frames from
/// its TAP queue onto the tx ring, the rx ring kept full of posted pages, received packets
/// onto its TAP queue. Every response is read once, validated, then used; the first lie
/// stops the rings (``broken``) and is reported, and the xenbus driver disconnects.
final class NetFrontendDatapath: @unchecked Sendable {
    // SAFETY (@unchecked): the mutable state is the I/O thread's while it runs (the ring
    // service and the TAP source are both called on it, one at a time), the creator's
    // before start() and after stop() joined the thread.
    var txRing: FrontRing
    var rxRing: FrontRing
    /// Each tx buffer page, and its grant; a request's id is its page's index.
    let txPages: [SharedView]
    let txGrefs: [GrantRef]
    var txFree: [UInt16]
    /// Which tx pages wait for their response, and which of those began a frame.
    var txOutstanding: [Bool]
    var txFirst: [Bool]
    /// The rx page of each ring slot: a request's id is its slot.
    let rxPages: [SharedView]
    let rxGrefs: [GrantRef]
    var assembler: NetFrontendRxAssembler
    var txUnpushed = false
    var rxUnpushed = false
    /// The backend's lie that stopped the rings.
    private(set) var broken: NetFrontendError?
    let backend: NetifBackendFeatures
    let eventChannel: any EventChannel
    let txPort: EventPort
    let rxPort: EventPort
    let statistics: NetFrontendStatistics
    let notifyFailures = Atomic<Int>(0)
    /// Told of the first lie, from the I/O thread.
    let onViolation: @Sendable (NetFrontendError) -> Void
    /// The queue pair's index (its keys are under `queue-N`).
    let queue: Int
    /// The TAP queue packets received on this pair are written to, -1 while none: set by
    /// whoever wires the TAP device, read by the I/O thread.
    let tapFD = Atomic<Int32>(-1)

    init(queue: Int, txRing: FrontRing, rxRing: FrontRing, txBuffers: SharedPages, rxBuffers: SharedPages,
         backend: NetifBackendFeatures, eventChannel: any EventChannel, txPort: EventPort, rxPort: EventPort,
         statistics: NetFrontendStatistics, onViolation: @escaping @Sendable (NetFrontendError) -> Void) {
        self.queue = queue
        self.txRing = txRing
        self.rxRing = rxRing
        txPages = Self.pages(of: txBuffers)
        txGrefs = txBuffers.refs
        txFree = (0 ..< txBuffers.refs.count).reversed().map { UInt16($0) }
        txOutstanding = Array(repeating: false, count: txBuffers.refs.count)
        txFirst = txOutstanding
        rxPages = Self.pages(of: rxBuffers)
        rxGrefs = rxBuffers.refs
        assembler = NetFrontendRxAssembler(ringSize: rxRing.size)
        self.backend = backend
        self.eventChannel = eventChannel
        self.txPort = txPort
        self.rxPort = rxPort
        self.statistics = statistics
        self.onViolation = onViolation
    }

    private static func pages(of buffers: SharedPages) -> [SharedView] {
        // Cannot fail: the region holds one page per grant.
        (0 ..< buffers.refs.count).map { SharedView(base: buffers.view.baseAddress + $0 * pageSize, count: pageSize) }
    }

    /// Frames in flight on the tx ring, in pages.
    var txInFlight: Int { txPages.count - txFree.count }

    /// Whether a frame of any size fits now (ring slots and pages).
    var hasTxRoom: Bool {
        broken == nil && txRing.freeRequests >= UInt32(NetFrontendTxPlan.maxSlots)
            && txFree.count >= NetFrontendTxPlan.maxFragments
    }

    private func violated(_ error: NetFrontendError) {
        guard broken == nil else { return }
        broken = error
        onViolation(error)
    }

    // MARK: Transmit

    /// Puts one frame from the TAP device (its virtio-net header, then the frame) on the tx
    /// ring, unpublished; the caller checked ``hasTxRoom``. A frame that cannot go is counted
    /// as dropped.
    func send(_ packet: UnsafeMutableRawBufferPointer) {
        guard let header = VirtioNetHeader(decoding: UnsafeRawBufferPointer(packet)) else {
            statistics.txDropped.add(1, ordering: .relaxed)
            return
        }
        let frame = UnsafeMutableRawBufferPointer(rebasing: packet[VirtioNetHeader.size...])
        let plan: NetFrontendTxPlan
        do { plan = try NetFrontendTxPlan(header: header, frame: frame, backend: backend) } catch {
            statistics.txDropped.add(1, ordering: .relaxed)
            return
        }
        for index in 0 ..< plan.fragmentCount {
            let id = txFree.removeLast()
            let piece = plan.fragment(index)
            txPages[Int(id)].copyBytes(from: UnsafeRawBufferPointer(rebasing: frame[piece]), to: 0)
            txOutstanding[Int(id)] = true
            txFirst[Int(id)] = index == 0
            let request = plan.request(index, gref: txGrefs[Int(id)], id: id)
            request.encode(into: txRing.requestSlot(txRing.requestProducerPrivate), at: 0)
            txRing.requestProducerPrivate &+= 1
            if index == 0, let gso = plan.gso {
                gso.encode(into: txRing.requestSlot(txRing.requestProducerPrivate), at: 0)
                txRing.requestProducerPrivate &+= 1
            }
        }
        txUnpushed = true
        statistics.txPackets.add(1, ordering: .relaxed)
        statistics.txBytes.add(plan.length, ordering: .relaxed)
    }

    /// Takes the tx responses published: frees their pages, counts error answers.
    func consumeTx() -> Bool {
        guard broken == nil else { return false }
        let producer: RingIndex
        do { producer = try txRing.checkedResponseProducer() } catch {
            violated(.ringOverrun(ring: .tx, error))
            return false
        }
        var any = false
        while txRing.responseConsumer != producer {
            let slot = txRing.responseSlot(txRing.responseConsumer)
            txRing.responseConsumer &+= 1
            any = true
            let response: NetifTxResponse
            do { response = try NetifTxResponse.decode(from: slot, at: 0) } catch {
                violated(.malformedResponse(ring: .tx, error))
                return any
            }
            // An extra-info slot's answer: no request of ours to free.
            if response.status == .null { continue }
            let id = Int(response.id)
            guard id < txOutstanding.count, txOutstanding[id] else {
                violated(.txResponseID(response.id))
                return any
            }
            txOutstanding[id] = false
            txFree.append(response.id)
            if txFirst[id], response.status == .error || response.status == .dropped {
                statistics.txErrors.add(1, ordering: .relaxed)
            }
        }
        return any
    }

    // MARK: Receive

    /// Posts a request for every free rx slot (each slot's own page), unpublished.
    func postRx() -> Bool {
        guard broken == nil else { return false }
        var any = false
        while rxRing.freeRequests > 0 {
            let index = rxRing.requestProducerPrivate
            let slot = Int(index & (rxRing.size &- 1))
            NetifRxRequest(id: UInt16(slot), gref: rxGrefs[slot]).encode(into: rxRing.requestSlot(index), at: 0)
            rxRing.requestProducerPrivate = index &+ 1
            any = true
        }
        if any { rxUnpushed = true }
        return any
    }

    /// Takes the rx responses published, writing each whole packet to `tapFD` (or
    /// dropping it when there is none, -1).
    func consumeRx(tapFD: Int32) -> Bool {
        guard broken == nil else { return false }
        let producer: RingIndex
        do { producer = try rxRing.checkedResponseProducer() } catch {
            violated(.ringOverrun(ring: .rx, error))
            return false
        }
        var any = false
        while rxRing.responseConsumer != producer {
            let index = rxRing.responseConsumer
            let slot = rxRing.responseSlot(index)
            rxRing.responseConsumer = index &+ 1
            any = true
            let outcome: NetFrontendRxAssembler.Outcome
            do {
                outcome = try assembler.take(slot: slot, index: index, page: rxPages[Int(index & (rxRing.size &- 1))])
            } catch {
                violated(error)
                return any
            }
            switch outcome {
            case .more: break
            case .packet: deliver(tapFD: tapFD)
            case let .dropped(reason):
                if case .rxErrorStatus = reason {
                    statistics.rxErrors.add(1, ordering: .relaxed)
                } else {
                    statistics.rxDropped.add(1, ordering: .relaxed)
                }
            }
        }
        return any
    }

    private func deliver(tapFD: Int32) {
        guard tapFD >= 0 else {
            statistics.rxDropped.add(1, ordering: .relaxed)
            return
        }
        let length = assembler.packetLength
        let written = assembler.packet.withUnsafeBytes { write(tapFD, $0.baseAddress, length) }
        // A full TAP queue (EAGAIN) drops, as a NIC does; the guest side's TCP recovers.
        if written == length {
            statistics.rxPackets.add(1, ordering: .relaxed)
            statistics.rxBytes.add(length - VirtioNetHeader.size, ordering: .relaxed)
        } else {
            statistics.rxDropped.add(1, ordering: .relaxed)
        }
    }

    // MARK: Event suppression

    /// Publishes both rings' new requests, notifying where `io/ring.h`'s
    /// RING_PUSH_REQUESTS_AND_CHECK_NOTIFY says the backend waits for it.
    func push() {
        guard broken == nil else { return }
        if txUnpushed {
            txUnpushed = false
            if txRing.pushRequestsAndCheckNotify() { notify(txPort) }
        }
        if rxUnpushed {
            rxUnpushed = false
            if rxRing.pushRequestsAndCheckNotify() { notify(rxPort) }
        }
    }

    /// Whether either ring has responses; if neither has, each asks to be notified of the
    /// next (RING_FINAL_CHECK_FOR_RESPONSES).
    func finalCheck() -> Bool {
        guard broken == nil else { return false }
        do {
            if try txRing.finalCheckForResponses() { return true }
        } catch {
            violated(.ringOverrun(ring: .tx, error))
            return false
        }
        do {
            return try rxRing.finalCheckForResponses()
        } catch {
            violated(.ringOverrun(ring: .rx, error))
            return false
        }
    }

    private func notify(_ port: EventPort) {
        do { try eventChannel.notify(port) } catch {
            notifyFailures.add(1, ordering: .relaxed)
        }
    }
}
