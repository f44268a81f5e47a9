/// A frontend device's rings as its ``FrontendIOThread`` serves them: the thread calls
/// these once per pass, in this order (responses, then the executor's tasks and the loop
/// sources those responses woke, then new requests, then the push), and sleeps only when
/// ``finalCheckForResponses()`` finds nothing and no work waits. The value lives in a local
/// of the thread while it runs, so a device keeps its per-request state here, as plain
/// stored properties, and reaches what does not change through a reference it holds.
///
/// A block frontend has one kind of ring (`io/blkif.h`); a net frontend a tx and an rx
/// ring per queue (`io/netif.h`), its posted rx buffers being the requests of the rx ring.
/// Each call serves every ring of the device; what a request costs is the device's own
/// code, called here once per pass, not once per request.
public protocol FrontendRingService {
    /// Consumes every response the backend published on each ring and completes what it
    /// answers (`io/ring.h: RING_GET_RESPONSE`, advancing `rsp_cons`); true if it took any.
    mutating func consumeResponses() -> Bool
    /// Writes requests for waiting work while slots and ring space allow, without
    /// publishing them (`io/ring.h: RING_GET_REQUEST` on `req_prod_pvt`); true if it wrote any.
    mutating func produceRequests() -> Bool
    /// Publishes the requests written on each ring and notifies the backend where
    /// `io/ring.h: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY` says so.
    mutating func pushRequests()
    /// Whether any ring has responses left; if none has, each asks to be notified of the
    /// next (`io/ring.h: RING_FINAL_CHECK_FOR_RESPONSES`).
    mutating func finalCheckForResponses() -> Bool
    /// Whether requests wait for their responses: once the event channel failed, the
    /// thread then looks at the rings on a timer, and only then.
    var awaitsResponses: Bool { get }
    /// The ports the rings use: the thread takes at most this many pending events per
    /// look at the event channel.
    var portCount: Int { get }
}
