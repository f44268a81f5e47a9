import Glibc
import SharedMemory
import XenPlatform
import XenRing

/// A blkif-shaped frontend and backend pair driven over a ``SharedRing``, the Swift twin of
/// the C reference loops: used to test interop with Xen's macros and to benchmark.
///
/// Requests carry only operation, id and sector (io/blkif.h native layout); the backend
/// echoes id and operation with status OKAY. Either side busy-polls when its file
/// descriptors are -1, or kicks the peer through an eventfd and sleeps on its own.
public enum RingExchange {
    /// Errors a side reports about its peer.
    public enum Failure: Error, Equatable, Sendable {
        /// A response carried an id not outstanding (unknown or duplicate).
        case unexpectedResponseID(UInt64)
        /// The peer broke the ring's index rules.
        case ring(RingError)
    }

    // io/blkif.h native offsets: request operation@0, id@8, sector_number@16;
    // response id@0, operation@8, status@10.
    @usableFromInline static let requestOperation = 0
    @usableFromInline static let requestSegments = 1
    @usableFromInline static let requestID = 8
    @usableFromInline static let requestSector = 16
    @usableFromInline static let responseID = 0
    @usableFromInline static let responseOperation = 8
    @usableFromInline static let responseStatus = 10
    /// io/blkif.h: sizeof(union blkif_sring_entry) on x86_64.
    public static let blkifEntrySize = 112

    /// Issues `count` requests with at most `depth` in flight and checks every response
    /// against the outstanding set. Returns the responses seen.
    public static func blkifFrontend(ring shared: SharedRing, count: UInt64, depth: UInt32,
                                     notifyFD: Int32 = -1, waitFD: Int32 = -1) throws(Failure) -> UInt64 {
        if waitFD < 0 { return try blkifFrontend(ring: shared, count: count, depth: depth, signal: BusyPoll()) }
        return try blkifFrontend(ring: shared, count: count, depth: depth,
                                 signal: EventFDSignal(notifyFD: notifyFD, waitFD: waitFD))
    }

    /// The frontend over any way of signalling the peer.
    public static func blkifFrontend<S: RingSignal>(ring shared: SharedRing, count: UInt64, depth: UInt32,
                                                    signal: S) throws(Failure) -> UInt64 {
        var front = FrontRing(attaching: shared, at: 0)
        let outstanding = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: Int(count / 8) + 1)
        outstanding.initialize(repeating: 0)
        defer { outstanding.deallocate() }
        var issued: UInt64 = 0
        var completed: UInt64 = 0
        while completed < count {
            var produced = false
            while issued < count, issued &- completed < UInt64(depth), !front.isFull {
                let slot = front.requestSlot(front.requestProducerPrivate)
                slot.store(UInt8(0), at: requestOperation)   // BLKIF_OP_READ
                slot.store(UInt8(0), at: requestSegments)
                slot.store(issued, at: requestID)
                slot.store(issued, at: requestSector)
                outstanding[Int(issued >> 3)] |= UInt8(1) << UInt8(issued & 7)
                front.requestProducerPrivate &+= 1
                issued &+= 1
                produced = true
            }
            if produced, front.pushRequestsAndCheckNotify() { signal.notify() }
            let producer: RingIndex
            do { producer = try front.checkedResponseProducer() } catch { throw .ring(error) }
            var consumed = false
            while front.responseConsumer != producer {
                let id = front.responseSlot(front.responseConsumer).load(UInt64.self, at: responseID)
                front.responseConsumer &+= 1
                let bit = UInt8(1) << UInt8(id & 7)
                guard id < count, outstanding[Int(id >> 3)] & bit != 0 else { throw .unexpectedResponseID(id) }
                outstanding[Int(id >> 3)] &= ~bit
                completed &+= 1
                consumed = true
            }
            if !consumed, !produced, S.sleeps {
                let more: Bool
                do { more = try front.finalCheckForResponses() } catch { throw .ring(error) }
                if !more { signal.wait() }
            }
        }
        return completed
    }

    /// Writes one OKAY response echoing id and operation.
    @inline(__always) @usableFromInline
    static func respond(_ back: inout BackRing, _ request: (UInt64, UInt8)) {
        let slot = back.responseSlot(back.responseProducerPrivate)
        slot.store(request.0, at: responseID)
        slot.store(request.1, at: responseOperation)
        slot.store(Int16(0), at: responseStatus)   // BLKIF_RSP_OKAY
        back.responseProducerPrivate &+= 1
    }

    /// Answers `count` requests. With `reverseBatches`, each batch is answered last-first,
    /// which the protocol allows and which exercises out-of-order completion.
    public static func blkifBackend(ring shared: SharedRing, count: UInt64, notifyFD: Int32 = -1,
                                    waitFD: Int32 = -1, reverseBatches: Bool = false) throws(Failure) -> UInt64 {
        if waitFD < 0 { return try blkifBackend(ring: shared, count: count, signal: BusyPoll(), reverseBatches: reverseBatches) }
        return try blkifBackend(ring: shared, count: count, signal: EventFDSignal(notifyFD: notifyFD, waitFD: waitFD),
                                reverseBatches: reverseBatches)
    }

    /// The backend over any way of signalling the peer.
    public static func blkifBackend<S: RingSignal>(ring shared: SharedRing, count: UInt64, signal: S,
                                                   reverseBatches: Bool = false) throws(Failure) -> UInt64 {
        var back = BackRing(attaching: shared, at: 0)
        var done: UInt64 = 0
        let batch = UnsafeMutableBufferPointer<(UInt64, UInt8)>.allocate(capacity: Int(shared.size))
        defer { batch.deallocate() }
        while done < count {
            let producer: RingIndex
            do { producer = try back.checkedRequestProducer() } catch { throw .ring(error) }
            var taken = 0
            while back.requestConsumer != producer, !back.requestConsumerOverflow(back.requestConsumer) {
                let slot = back.requestSlot(back.requestConsumer)
                let request = (slot.load(UInt64.self, at: requestID), slot.load(UInt8.self, at: requestOperation))
                back.requestConsumer &+= 1
                taken += 1
                if reverseBatches {
                    batch[taken - 1] = request
                } else {
                    respond(&back, request)
                }
            }
            if reverseBatches {
                for i in stride(from: taken - 1, through: 0, by: -1) { respond(&back, batch[i]) }
            }
            done &+= UInt64(taken)
            if taken > 0 {
                if back.pushResponsesAndCheckNotify() { signal.notify() }
            } else if S.sleeps {
                let more: Bool
                do { more = try back.finalCheckForRequests() } catch { throw .ring(error) }
                if !more { signal.wait() }
            }
        }
        return done
    }
}

/// How one side of a ring exchange kicks its peer and sleeps until kicked.
public protocol RingSignal {
    /// False for busy polling: the side never sleeps and never needs a final check.
    static var sleeps: Bool { get }
    func notify()
    func wait()
}

/// Busy polling: no notifications at all.
public struct BusyPoll: RingSignal, Sendable {
    public static var sleeps: Bool { false }
    public init() {}
    public func notify() {}
    public func wait() {}
}

/// A pair of eventfds: kick the peer's, sleep on ours (blocking read).
public struct EventFDSignal: RingSignal, Sendable {
    public static var sleeps: Bool { true }
    let notifyFD: Int32
    let waitFD: Int32
    public init(notifyFD: Int32, waitFD: Int32) {
        self.notifyFD = notifyFD
        self.waitFD = waitFD
    }

    // An eventfd takes and gives 8-byte counters; a read blocks until the count is non-zero.
    @inline(__always) public func notify() {
        var one: UInt64 = 1
        while write(notifyFD, &one, 8) < 0, errno == EINTR {}
    }

    @inline(__always) public func wait() {
        var value: UInt64 = 0
        while read(waitFD, &value, 8) < 0, errno == EINTR {}
    }
}

/// An event-channel port of a platform: notify through it, sleep in poll() on the
/// handle's descriptor until the port is pending.
public struct EventChannelSignal: RingSignal, Sendable {
    public static var sleeps: Bool { true }
    let channel: any EventChannel
    let port: EventPort
    public init(channel: any EventChannel, port: EventPort) {
        self.channel = channel
        self.port = port
    }

    public func notify() { try? channel.notify(port) }

    public func wait() {
        while true {
            if let p = try? channel.pending() {
                try? channel.unmask(p)
                return
            }
            var fds = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&fds, 1, -1)
        }
    }
}
