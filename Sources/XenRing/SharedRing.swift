import SharedMemory

/// The shared part of an io/ring.h ring: a 64-byte header (req_prod, req_event, rsp_prod,
/// rsp_event, private pad) followed by a power-of-two number of entry slots, each as large
/// as the bigger of the request and response (the C union).
///
/// The value holds no indices of either end; it only knows the geometry and where each
/// header field lives. Both ends read every field the peer writes exactly once per use.
public struct SharedRing: Sendable {
    /// Byte offsets of the header fields (io/ring.h: struct __name##_sring).
    public enum Header {
        public static let requestProducer = 0
        public static let requestEvent = 4
        public static let responseProducer = 8
        public static let responseEvent = 12
        public static let privateArea = 16
        /// The first entry slot.
        public static let size = 64
    }

    /// The ring's memory, one or more contiguous pages.
    public let memory: SharedView
    /// Bytes per slot: max(request size, response size) of the ABI in use.
    public let entrySize: Int
    /// Number of slots, a power of two (io/ring.h: RING_SIZE / __RING_SIZE).
    public let size: UInt32
    @usableFromInline let mask: UInt32

    /// Lays a ring of `entrySize`-byte slots over `memory`.
    public init(memory: SharedView, entrySize: Int) throws(RingError) {
        guard entrySize > 0 else { throw .badEntrySize(entrySize) }
        let slots = SharedRing.entryCount(bytes: memory.count, entrySize: entrySize)
        guard slots > 0 else { throw .memoryTooSmall(bytes: memory.count, needed: Header.size + entrySize) }
        self.memory = memory
        self.entrySize = entrySize
        self.size = slots
        self.mask = slots &- 1
    }

    /// Lays a ring over `pages` pages (1...16, i.e. ring-page-order 0...4) of `memory`.
    public init(memory: SharedView, pages: Int, entrySize: Int) throws(RingError) {
        guard (1...16).contains(pages) else { throw .badPageCount(pages) }
        let bytes = pages * pageSize
        guard memory.count >= bytes else { throw .memoryTooSmall(bytes: memory.count, needed: bytes) }
        let view: SharedView
        do { view = try memory.slice(offset: 0, length: bytes) } catch { throw .memoryTooSmall(bytes: memory.count, needed: bytes) }
        try self.init(memory: view, entrySize: entrySize)
    }

    /// Slots that fit in `bytes`, rounded down to a power of two (io/ring.h: __RING_SIZE).
    public static func entryCount(bytes: Int, entrySize: Int) -> UInt32 {
        guard entrySize > 0, bytes > Header.size else { return 0 }
        let fit = (bytes - Header.size) / entrySize
        guard fit > 0 else { return 0 }
        let clamped = UInt32(clamping: fit)
        return 1 << (31 - clamped.leadingZeroBitCount)
    }

    /// Resets the header: producers 0, event indices 1, padding zeroed
    /// (io/ring.h: SHARED_RING_INIT). Only the frontend does this.
    public func initialize() {
        memory.fill(0, at: 0, length: Header.size)
        memory.atomicStore32(1, at: Header.requestEvent, ordering: .relaxed)
        memory.atomicStore32(1, at: Header.responseEvent, ordering: .relaxed)
        // Pairs with the peer's first acquire load of a producer index.
        memoryFence(.releasing)
    }

    /// Byte offset of the slot for `index`, masked to the ring (io/ring.h: RING_GET_REQUEST).
    @inlinable
    public func slotOffset(_ index: RingIndex) -> Int {
        Header.size &+ Int(index & mask) &* entrySize
    }

    /// A view of the slot for `index`.
    @inlinable
    public func slot(_ index: RingIndex) -> SharedView {
        // Cannot fail: init proved size * entrySize fits after the header.
        SharedView(base: memory.baseAddress + slotOffset(index), count: entrySize)
    }

    // MARK: Header fields. Each load is one access; callers keep the value they read.

    /// req_prod, loaded with acquire: pairs with the frontend's release store when pushing,
    /// so the requests before it are visible.
    @inlinable public func loadRequestProducer() -> RingIndex {
        memory.atomicLoad32(at: Header.requestProducer, ordering: .acquiring)
    }
    /// rsp_prod, loaded with acquire: pairs with the backend's release store when pushing.
    @inlinable public func loadResponseProducer() -> RingIndex {
        memory.atomicLoad32(at: Header.responseProducer, ordering: .acquiring)
    }
    /// req_event; only ever read after a full fence, so relaxed.
    @inlinable public func loadRequestEvent() -> RingIndex {
        memory.atomicLoad32(at: Header.requestEvent, ordering: .relaxed)
    }
    /// rsp_event; only ever read after a full fence, so relaxed.
    @inlinable public func loadResponseEvent() -> RingIndex {
        memory.atomicLoad32(at: Header.responseEvent, ordering: .relaxed)
    }
    /// Publishes req_prod after the requests (release: the backend sees the slots first).
    @inlinable public func storeRequestProducer(_ value: RingIndex) {
        memory.atomicStore32(value, at: Header.requestProducer, ordering: .releasing)
    }
    /// Publishes rsp_prod after the responses (release: the frontend sees the slots first).
    @inlinable public func storeResponseProducer(_ value: RingIndex) {
        memory.atomicStore32(value, at: Header.responseProducer, ordering: .releasing)
    }
    /// Sets req_event; the caller follows it with a full fence before re-checking.
    @inlinable public func storeRequestEvent(_ value: RingIndex) {
        memory.atomicStore32(value, at: Header.requestEvent, ordering: .relaxed)
    }
    /// Sets rsp_event; the caller follows it with a full fence before re-checking.
    @inlinable public func storeResponseEvent(_ value: RingIndex) {
        memory.atomicStore32(value, at: Header.responseEvent, ordering: .relaxed)
    }
}
