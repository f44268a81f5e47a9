import SharedMemory

/// The backend's end of an io/ring.h ring: it consumes requests and produces responses.
///
/// Holds only its private indices. The frontend is untrusted: `req_prod` is read once per
/// check and refused when it claims more requests than the ring holds, as Linux blkback
/// does before it disconnects such a frontend.
public struct BackRing: Sendable {
    /// The shared ring.
    public let shared: SharedRing
    /// Responses produced but not yet necessarily pushed (io/ring.h: rsp_prod_pvt).
    public var responseProducerPrivate: RingIndex
    /// Next request to consume (io/ring.h: req_cons).
    public var requestConsumer: RingIndex

    /// Attaches at index 0 (io/ring.h: BACK_RING_INIT). The frontend initialised the page.
    public init(_ shared: SharedRing) {
        self.init(attaching: shared, at: 0)
    }

    /// Attaches at `index` (io/ring.h: BACK_RING_ATTACH), for reconnecting to a live ring.
    public init(attaching shared: SharedRing, at index: RingIndex) {
        self.shared = shared
        self.responseProducerPrivate = index
        self.requestConsumer = index
    }

    /// Slots in the ring (io/ring.h: RING_SIZE).
    @inlinable public var size: UInt32 { shared.size }

    /// The slot for request `index` (io/ring.h: RING_GET_REQUEST).
    @inlinable @inline(__always) public func requestSlot(_ index: RingIndex) -> SharedView { shared.slot(index) }

    /// The slot for response `index` (io/ring.h: RING_GET_RESPONSE).
    @inlinable @inline(__always) public func responseSlot(_ index: RingIndex) -> SharedView { shared.slot(index) }

    /// Reads req_prod once and refuses a value that claims more than a ring's worth of
    /// requests past our responses (io/ring.h: RING_REQUEST_PROD_OVERFLOW). Consume up to
    /// the returned index, stopping early if ``requestConsumerOverflow(_:)``.
    @inlinable @inline(__always) public func checkedRequestProducer() throws(RingError) -> RingIndex {
        let producer = shared.loadRequestProducer()
        guard producer &- responseProducerPrivate <= shared.size else {
            throw .requestProducerOverrun(producer: producer, responsePrivate: responseProducerPrivate, size: shared.size)
        }
        return producer
    }

    /// Requests waiting, bounded by the response slots we can still fill
    /// (io/ring.h: RING_HAS_UNCONSUMED_REQUESTS).
    @inlinable @inline(__always) public func unconsumedRequests() throws(RingError) -> UInt32 {
        let waiting = try checkedRequestProducer() &- requestConsumer
        let room = shared.size &- (requestConsumer &- responseProducerPrivate)
        return min(waiting, room)
    }

    /// Consuming `index` would take a slot whose response is not yet produced
    /// (io/ring.h: RING_REQUEST_CONS_OVERFLOW).
    @inlinable @inline(__always) public func requestConsumerOverflow(_ index: RingIndex) -> Bool {
        (index &- responseProducerPrivate) >= shared.size
    }

    /// Makes the produced responses visible (io/ring.h: RING_PUSH_RESPONSES).
    @inlinable @inline(__always) public func pushResponses() {
        shared.storeResponseProducer(responseProducerPrivate)
    }

    /// Publishes the produced responses and says whether the frontend asked to be notified
    /// (io/ring.h: RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
    @inlinable @inline(__always) public func pushResponsesAndCheckNotify() -> Bool {
        let old = shared.memory.atomicLoad32(at: SharedRing.Header.responseProducer, ordering: .relaxed)
        let new = responseProducerPrivate
        shared.storeResponseProducer(new)
        // Full fence: the frontend must see rsp_prod before we read its rsp_event
        // (pairs with the fence in the frontend's finalCheckForResponses).
        memoryFence(.sequentiallyConsistent)
        let event = shared.loadResponseEvent()
        return (new &- event) < (new &- old)
    }

    /// Says whether requests are waiting; if none, asks for a notification on the next one
    /// and checks again to close the race (io/ring.h: RING_FINAL_CHECK_FOR_REQUESTS).
    @inlinable @inline(__always) public func finalCheckForRequests() throws(RingError) -> Bool {
        if try unconsumedRequests() > 0 { return true }
        shared.storeRequestEvent(requestConsumer &+ 1)
        // Full fence: req_event is visible before we re-read req_prod (pairs with the
        // fence in the frontend's pushRequestsAndCheckNotify).
        memoryFence(.sequentiallyConsistent)
        return try unconsumedRequests() > 0
    }
}

extension BackRing {
    /// Asks the frontend to notify on its next push, whatever it published before
    /// (io/ring.h: req_event = req_prod + 1, as Linux's netback waits for more rx slots or
    /// the rest of a tx chain), and says whether more than `seen` requests are waiting
    /// after that. ``finalCheckForRequests()`` does not do for this: it asks only when
    /// nothing waits, so a backend short of slots it already sees would never hear of the
    /// frontend's next post.
    @inlinable public func awaitMoreRequests(than seen: UInt32) throws(RingError) -> Bool {
        shared.storeRequestEvent(try checkedRequestProducer() &+ 1)
        // Full fence: req_event is visible before we re-read req_prod (pairs with the
        // fence in the frontend's pushRequestsAndCheckNotify).
        memoryFence(.sequentiallyConsistent)
        return try unconsumedRequests() > seen
    }
}
