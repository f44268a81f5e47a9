import SharedMemory

/// The frontend's end of an io/ring.h ring: it produces requests and consumes responses.
///
/// Holds only its private indices; the shared page is passed in as ``SharedRing``. Every
/// operation is named after its io/ring.h macro. The backend is untrusted: `rsp_prod` is
/// read once per check and refused if it claims responses to requests never made.
public struct FrontRing: Sendable {
    /// The shared ring.
    public let shared: SharedRing
    /// Requests produced but not yet necessarily pushed (io/ring.h: req_prod_pvt).
    public var requestProducerPrivate: RingIndex
    /// Next response to consume (io/ring.h: rsp_cons).
    public var responseConsumer: RingIndex

    /// Initialises the shared ring and attaches at index 0 (io/ring.h: XEN_FRONT_RING_INIT).
    public init(initializing shared: SharedRing) {
        shared.initialize()
        self.init(attaching: shared, at: 0)
    }

    /// Attaches to a live ring at `index` without touching it (io/ring.h: FRONT_RING_ATTACH).
    public init(attaching shared: SharedRing, at index: RingIndex) {
        self.shared = shared
        self.requestProducerPrivate = index
        self.responseConsumer = index
    }

    /// Slots in the ring (io/ring.h: RING_SIZE).
    @inlinable public var size: UInt32 { shared.size }

    /// Slots free for new requests (io/ring.h: RING_FREE_REQUESTS).
    @inlinable @inline(__always) public var freeRequests: UInt32 {
        shared.size &- (requestProducerPrivate &- responseConsumer)
    }

    /// No slot is free (io/ring.h: RING_FULL).
    @inlinable @inline(__always) public var isFull: Bool { freeRequests == 0 }

    /// The slot for request `index` (io/ring.h: RING_GET_REQUEST).
    @inlinable @inline(__always) public func requestSlot(_ index: RingIndex) -> SharedView { shared.slot(index) }

    /// The slot for response `index` (io/ring.h: RING_GET_RESPONSE).
    @inlinable @inline(__always) public func responseSlot(_ index: RingIndex) -> SharedView { shared.slot(index) }

    /// Makes the produced requests visible (io/ring.h: RING_PUSH_REQUESTS).
    @inlinable @inline(__always) public func pushRequests() {
        shared.storeRequestProducer(requestProducerPrivate)
    }

    /// Publishes the produced requests and says whether the backend asked to be notified
    /// of them (io/ring.h: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY).
    @inlinable @inline(__always) public func pushRequestsAndCheckNotify() -> Bool {
        // Our own req_prod as last published; the backend cannot move it, and if it
        // scribbled on it the worst outcome is a spurious or missed-but-harmless notify.
        let old = shared.memory.atomicLoad32(at: SharedRing.Header.requestProducer, ordering: .relaxed)
        let new = requestProducerPrivate
        shared.storeRequestProducer(new)
        // Full fence: the backend must see req_prod before we read its req_event
        // (pairs with the fence in the backend's finalCheckForRequests).
        memoryFence(.sequentiallyConsistent)
        let event = shared.loadRequestEvent()
        return (new &- event) < (new &- old)
    }

    /// Responses published but not consumed, after checking the backend's claim
    /// (io/ring.h: RING_HAS_UNCONSUMED_RESPONSES with RING_RESPONSE_PROD_OVERFLOW).
    @inlinable @inline(__always) public func unconsumedResponses() throws(RingError) -> UInt32 {
        try checkedResponseProducer() &- responseConsumer
    }

    /// Reads rsp_prod once and refuses it if it claims more responses than requests we
    /// have outstanding. Consume up to the returned index.
    @inlinable @inline(__always) public func checkedResponseProducer() throws(RingError) -> RingIndex {
        let producer = shared.loadResponseProducer()
        let outstanding = requestProducerPrivate &- responseConsumer
        guard producer &- responseConsumer <= outstanding else {
            throw .responseProducerOverrun(producer: producer, consumer: responseConsumer, outstanding: outstanding)
        }
        return producer
    }

    /// Says whether responses are waiting; if none, asks for a notification on the next one
    /// and checks again to close the race (io/ring.h: RING_FINAL_CHECK_FOR_RESPONSES).
    @inlinable @inline(__always) public func finalCheckForResponses() throws(RingError) -> Bool {
        if try unconsumedResponses() > 0 { return true }
        shared.storeResponseEvent(responseConsumer &+ 1)
        // Full fence: rsp_event is visible before we re-read rsp_prod (pairs with the
        // fence in the backend's pushResponsesAndCheckNotify).
        memoryFence(.sequentiallyConsistent)
        return try unconsumedResponses() > 0
    }
}
