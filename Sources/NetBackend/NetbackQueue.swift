import Glibc
import Logging
import Netif
import SharedMemory
import Synchronization
import URing
import XenDevice
import XenPlatform
import XenRing

/// What the frontend of one vif takes, from its keys (io/netif.h), as the queue uses it.
public struct NetbackGuestFeatures: Sendable, Equatable {
    /// feature-sg: packets over several rx buffers.
    public var scatterGather: Bool
    /// Checksum offload towards the guest (feature-no-csum-offload is 0): NETRXF_csum_blank.
    public var checksumOffload: Bool
    /// feature-ipv6-csum-offload.
    public var ipv6ChecksumOffload: Bool
    /// feature-gso-tcpv4 and -tcpv6: GSO packets with an extra-info slot.
    public var gsoTCPv4: Bool
    public var gsoTCPv6: Bool

    public init(scatterGather: Bool = true, checksumOffload: Bool = true, ipv6ChecksumOffload: Bool = true,
                gsoTCPv4: Bool = true, gsoTCPv6: Bool = true) {
        self.scatterGather = scatterGather
        self.checksumOffload = checksumOffload
        self.ipv6ChecksumOffload = ipv6ChecksumOffload
        self.gsoTCPv4 = gsoTCPv4
        self.gsoTCPv6 = gsoTCPv6
    }

    /// As the frontend's keys say; GSO only with scatter-gather, as Linux's netback takes it.
    public init(_ features: NetifFrontendFeatures) {
        self.init(scatterGather: features.scatterGather, checksumOffload: !features.noChecksumOffload,
                  ipv6ChecksumOffload: features.ipv6ChecksumOffload,
                  gsoTCPv4: features.scatterGather && features.gsoTCPv4,
                  gsoTCPv6: features.scatterGather && features.gsoTCPv6)
    }
}

/// How many packets a queue holds in its own buffers, each direction.
public struct NetbackQueueConfiguration: Sendable, Equatable {
    /// Guest packets copied out and being written to the TAP device at once.
    public var txBuffers: Int
    /// TAP reads outstanding, and packets held for a guest short of rx buffers.
    public var rxBuffers: Int
    /// The guest's transmit credit (the backend's `rate` key); nil: unlimited.
    public var rate: NetifRate?

    public init(txBuffers: Int = 16, rxBuffers: Int = 8, rate: NetifRate? = nil) {
        self.txBuffers = txBuffers
        self.rxBuffers = rxBuffers
        self.rate = rate
    }
}

/// One netif queue pair of a vif: its tx and rx rings, served on a ``BackendWorker``.
///
/// TX (guest to host): each chain is parsed once from the ring (``NetifTxChainParser``),
/// its fragments grant-copied into one of the queue's own buffers behind a virtio-net
/// header built from the chain's flags and GSO extra, the slots answered, and the buffer
/// written to the TAP device by the engine. RX (host to guest): the queue polls its TAP
/// queue and reads it, in order, into its idle buffers; each packet is planned over the guest's posted buffers
/// (``NetifRxPlan``), grant-copied into them and answered slot by slot; while the frontend
/// hashes (``NetbackHashing``) each carries its hash extra, and a packet its mapping table
/// gives another queue is handed to that queue's ``NetbackInbox``. A guest that posts
/// no rx buffers holds at most ``NetbackQueueConfiguration/rxBuffers`` packets here; the
/// rest wait in the kernel's TAP queue, which drops past its length: memory stays bounded.
public final class NetbackQueue: @unchecked Sendable {
    // SAFETY (@unchecked): used by one worker thread while on it, by its owner otherwise.

    public let name: String
    public let frontendDomain: DomainID
    public let eventChannel: any EventChannel
    public let txPort: EventPort
    public let rxPort: EventPort
    public let features: NetbackGuestFeatures
    /// The vif's multicast filter, shared with its other queues.
    public let multicast: NetbackMulticastFilter
    /// The vif's receive hashing (set over its control ring), shared with its other queues.
    public let hashing: NetbackHashing?
    /// ``hashing`` as last read: refreshed when it changes.
    var hashSnapshot = NetbackHashing.Snapshot()
    /// Per held packet, its hash if steering computed it (nil: not computed; `.some(nil)`:
    /// the frame has no hash input).
    var rxHashes: [(type: NetifHashType, value: UInt32)??] = []
    /// This queue's position among the vif's queues (its netif queue number).
    public let index: Int
    /// Every queue's inbox, by queue number, when the vif has several queues: where a
    /// packet the mapping table gives another queue is handed over.
    public let inboxes: [NetbackInbox]
    /// Whether this queue's inbox descriptor is being polled.
    var inboxPolled = false
    /// Whether the TAP queue is being polled for readability (``readTap()`` reads it).
    var tapPolled = false
    /// The TAP queue failed a read with something other than EAGAIN: it is not polled
    /// again (a descriptor in error would complete every poll at once).
    var tapFailed = false
    public let configuration: NetbackQueueConfiguration
    /// Why the queue stopped serving; nil while it serves.
    public private(set) var disconnectReason: NetbackError?
    public internal(set) var statistics = NetifCounters()
    /// How the queue was woken and what it asked of the guest, logged when it retires:
    /// beside the packet counts, they tell a backend that waits from one that computes.
    struct Activity: CustomStringConvertible {
        var tapPolls = 0
        var tapReadPasses = 0
        var rxWaits = 0
        var txNotifies = 0
        var rxNotifies = 0
        var description: String {
            "tap-polls=\(tapPolls) tap-read-passes=\(tapReadPasses) rx-waits=\(rxWaits) "
                + "tx-notifies=\(txNotifies) rx-notifies=\(rxNotifies)"
        }
    }
    var activity = Activity()

    var txRing: BackRing
    var rxRing: BackRing
    let mapper: any GrantMapper
    let logger: Logger
    let guestLog: GuestLog
    let tapDescriptor: Int32
    var tap: FileReference
    let parser = NetifTxChainParser()

    /// Bytes per buffer: a virtio-net header and the largest packet, in whole pages.
    static let stride = 17 * 4096
    static let headerSize = 10
    let txBuffer: CopyBuffer
    let rxBuffer: CopyBuffer
    /// Free tx buffers, by index.
    var txFree: [Int]
    let txVectors: UnsafeMutableBufferPointer<iovec>
    var txWriting = 0
    /// What each rx buffer holds: nothing, or a packet of that many bytes (header
    /// included) waiting for the guest's buffers. Indices from `configuration.rxBuffers`
    /// on are this queue's inbox slots (idle: the inbox's).
    enum RxBufferState: Equatable { case idle, held(Int) }
    var rxState: [RxBufferState]
    /// Held rx buffers, oldest first.
    var rxHeld: [Int]
    var rxHeldHead = 0
    /// Since when the oldest held packet waits for the guest's buffers; nil: none waits.
    var rxWaitingSince: ContinuousClock.Instant?
    /// Since when packets wait for a guest with no rx buffer posted (drops included);
    /// nil once it posts again.
    var rxStarvedSince: ContinuousClock.Instant?
    /// The guest left packets waiting past the stall timeout (carrier off).
    var stalled = false
    /// Whether packets wait for the guest or it is stalled: the device's housekeeping asks
    /// the worker about this queue only then, so idle vifs cost no wake-up.
    let watchesStall = Atomic<Bool>(false)
    var cancels = 0
    /// The transmit credit under a `rate`, and whether its renewal timer is being polled.
    let credit: NetbackCredit?
    var creditTimerArmed = false
    /// A chain waited for credit in this pass: the timer is to be armed.
    var creditExhausted = false
    var leaving = false
    var closed = false
    let copies: UnsafeMutableBufferPointer<GrantCopySegment>
    var userDataBase: UInt64 = 0
    var txUnpushed = false
    /// A pass's parsed packets and placed packets, kept (empty) between passes.
    var txPending: [PendingTransmit] = []
    var rxPlaced: [PlacedReceive] = []
    var rxUnpushed = false

    /// User data below bit 32: tx buffer i is i, the TAP queue's poll `tapPollTag`, a
    /// cancel has `cancelTag` set.
    static let tapPollTag = 1 << 20
    static let cancelTag = 1 << 21
    static let creditTimerTag = 1 << 22
    static let inboxTag = 1 << 23

    /// A queue over mapped rings `txRing` and `rxRing` of `frontendDomain`, notified on
    /// `txPort` and `rxPort` (the same port for a shared channel) of `eventChannel`,
    /// moving packets to and from the TAP queue `tapDescriptor` (non-blocking: the queue
    /// polls it through the engine and reads it itself). With several queues, `index` is this one's place and `inboxes` every
    /// queue's inbox (empty: no steering).
    public init(name: String, frontendDomain: DomainID, txRing: BackRing, rxRing: BackRing,
                eventChannel: any EventChannel, txPort: EventPort, rxPort: EventPort, mapper: any GrantMapper,
                tapDescriptor: Int32, features: NetbackGuestFeatures,
                configuration: NetbackQueueConfiguration = NetbackQueueConfiguration(),
                multicast: NetbackMulticastFilter = NetbackMulticastFilter(), hashing: NetbackHashing? = nil,
                index: Int = 0, inboxes: [NetbackInbox] = [], logger: Logger = Logger(label: "xensplit.netback"),
                guestLog: GuestLog? = nil) throws(NetbackError) {
        guard (1...256).contains(configuration.txBuffers) else {
            throw .configuration(name: "tx buffers", value: configuration.txBuffers, limit: 1...256)
        }
        guard (1...256).contains(configuration.rxBuffers) else {
            throw .configuration(name: "rx buffers", value: configuration.rxBuffers, limit: 1...256)
        }
        guard inboxes.isEmpty || inboxes.indices.contains(index) else {
            throw .configuration(name: "queue index", value: index, limit: 0...(inboxes.count - 1))
        }
        self.name = name
        self.frontendDomain = frontendDomain
        self.txRing = txRing
        self.rxRing = rxRing
        self.eventChannel = eventChannel
        self.txPort = txPort
        self.rxPort = rxPort
        self.mapper = mapper
        self.tapDescriptor = tapDescriptor
        self.tap = .descriptor(tapDescriptor)
        self.features = features
        self.multicast = multicast
        self.hashing = hashing
        self.index = index
        self.inboxes = inboxes
        self.configuration = configuration
        self.logger = logger
        self.guestLog = guestLog ?? GuestLog(logger: logger)
        let pages = Self.stride / 4096
        do {
            txBuffer = try mapper.registerCopyBuffer(pages: pages * configuration.txBuffers)
        } catch { throw .platform(error) }
        do {
            rxBuffer = try mapper.registerCopyBuffer(pages: pages * configuration.rxBuffers)
        } catch {
            try? mapper.unregisterCopyBuffer(txBuffer)
            throw .platform(error)
        }
        do {
            credit = try configuration.rate.map { rate throws(NetbackError) in try NetbackCredit(rate: rate) }
        } catch {
            try? mapper.unregisterCopyBuffer(txBuffer)
            try? mapper.unregisterCopyBuffer(rxBuffer)
            throw error
        }
        txFree = Array((0..<configuration.txBuffers).reversed())
        txVectors = .allocate(capacity: configuration.txBuffers)
        txVectors.initialize(repeating: iovec())
        rxState = Array(repeating: .idle, count: configuration.rxBuffers + (inboxes.isEmpty ? 0 : inboxes[index].capacity))
        rxHashes = Array(repeating: nil, count: rxState.count)
        rxHeld = []
        rxHeld.reserveCapacity(configuration.rxBuffers)
        txPending.reserveCapacity(configuration.txBuffers)
        rxPlaced.reserveCapacity(configuration.rxBuffers)
        // A pass's copies: a piece per data slot for every tx buffer, or one rx packet's
        // pieces (at most 17 pages).
        copies = .allocate(capacity: max(NetifLimits.minimumSlotsPerPacket * configuration.txBuffers, 2 * 17))
        copies.initialize(repeating: GrantCopySegment(source: .local(buffer: 0, offset: 0),
                                                      destination: .local(buffer: 0, offset: 0), length: 0))
    }

    deinit {
        txVectors.deallocate()
        copies.deallocate()
    }

    /// The start of buffer `index` of `buffer`.
    func base(_ buffer: CopyBuffer, _ index: Int) -> UnsafeMutableRawPointer {
        buffer.view.baseAddress + index * Self.stride
    }

    /// Engine operations in flight: TAP writes, polls and cancels.
    public var inFlight: Int {
        txWriting + cancels + (tapPolled ? 1 : 0) + (creditTimerArmed ? 1 : 0) + (inboxPolled ? 1 : 0)
    }

    /// Stops serving for `reason`, once, with a log line; in-flight operations still
    /// complete (the buffers are ours) but nothing more is written to the rings.
    func disconnect(_ reason: NetbackError) {
        guard disconnectReason == nil else { return }
        disconnectReason = reason
        guestLog.log(.error, "netback queue disconnected", metadata: [
            "queue": "\(name)", "frontend": "d\(frontendDomain)", "reason": "\(reason)"])
    }

    /// Releases the copy buffers. Only once nothing is in flight.
    public func close() throws(NetbackError) {
        guard !closed else { return }
        guard inFlight == 0 else {
            throw .configuration(name: "operations in flight at close", value: inFlight, limit: 0...0)
        }
        closed = true
        var failure: PlatformError?
        for buffer in [txBuffer, rxBuffer] {
            do { try mapper.unregisterCopyBuffer(buffer) } catch { failure = failure ?? error }
        }
        if let failure { throw .platform(failure) }
    }

    /// Publishes both rings' responses and notifies where io/ring.h says the guest waits.
    public func pushResponses() {
        guard disconnectReason == nil else { return }
        var notifyTx = false, notifyRx = false
        if txUnpushed {
            txUnpushed = false
            notifyTx = txRing.pushResponsesAndCheckNotify()
        }
        if rxUnpushed {
            rxUnpushed = false
            notifyRx = rxRing.pushResponsesAndCheckNotify()
        }
        do throws(PlatformError) {
            if notifyTx {
                activity.txNotifies += 1
                try eventChannel.notify(txPort)
            }
            if notifyRx, !(notifyTx && rxPort == txPort) {
                activity.rxNotifies += 1
                try eventChannel.notify(rxPort)
            }
        } catch {
            disconnect(.platform(error))
        }
    }
}

/// What the device-neutral worker loop asks of a netif queue pair.
extension NetbackQueue: BackendQueue {
    public func handles(port: EventPort) -> Bool { port == txPort || port == rxPort }

    /// A write per tx buffer; the TAP queue's, the credit timer's and the inbox's polls
    /// and their cancels.
    public var engineReservation: Int { configuration.txBuffers + 6 }

    public var isDisconnected: Bool { disconnectReason != nil }

    public var registrableDescriptor: Int32? { tapDescriptor }

    public func attach(userDataBase: UInt64, registeredFile: UInt32?) {
        self.userDataBase = userDataBase
        tap = registeredFile.map { .registered($0) } ?? .descriptor(tapDescriptor)
    }

    public func service<Engine: BlockIOEngine>(engine: Engine) -> Bool {
        guard disconnectReason == nil, !closed, !leaving else { return false }
        let more = transmit(engine: engine)
        if disconnectReason == nil { receive(engine: engine) }
        return more
    }

    public func complete<Engine: BlockIOEngine>(slot: Int, result: Int32, engine: Engine) {
        if slot & Self.cancelTag != 0 {
            cancels -= 1
        } else if slot & Self.creditTimerTag != 0 {
            // The credit is renewed: the worker services the queue after this completion.
            creditTimerArmed = false
            credit?.timer.drain()
        } else if slot & Self.inboxTag != 0 {
            // Packets from the vif's other queues: the worker services the queue next.
            inboxPolled = false
            takeInbox()
        } else if slot & Self.tapPollTag != 0 {
            // The TAP queue has packets: the worker services the queue next, which reads them.
            tapPolled = false
            activity.tapPolls += 1
        } else {
            writeCompleted(slot, result: result)
        }
    }

    public func cancelWaits<Engine: BlockIOEngine>(engine: Engine) {
        leaving = true
        if creditTimerArmed, case .accepted = engine.enqueue(BlockRequest(
            .cancel(target: userDataBase | UInt64(Self.creditTimerTag)),
            userData: userDataBase | UInt64(Self.cancelTag | Self.creditTimerTag))) {
            cancels += 1
        }
        if inboxPolled, case .accepted = engine.enqueue(BlockRequest(
            .cancel(target: userDataBase | UInt64(Self.inboxTag)),
            userData: userDataBase | UInt64(Self.cancelTag | Self.inboxTag))) {
            cancels += 1
        }
        if tapPolled, case .accepted = engine.enqueue(BlockRequest(
            .cancel(target: userDataBase | UInt64(Self.tapPollTag)),
            userData: userDataBase | UInt64(Self.cancelTag | Self.tapPollTag))) {
            cancels += 1
        }
    }

    public func eventChannelFailed(_ error: PlatformError) {
        disconnect(.platform(error))
    }

    public func retire() {
        logger.info("netback queue statistics", metadata: [
            "queue": "\(name)", "statistics": "\(statistics)", "activity": "\(activity)"])
        do { try close() } catch {
            logger.error("netback queue: releasing its buffers failed", metadata: ["queue": "\(name)", "error": "\(error)"])
        }
    }
}
