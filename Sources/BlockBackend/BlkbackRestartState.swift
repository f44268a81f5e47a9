import Blkif
import Glibc
import SharedMemory
import XenPlatform
import XenRing

/// One queue's persistent state for a backend restart (Protocols/blkback-restart.md): its
/// private ring indices and its one copy of every request taken and not yet published, in
/// a file on tmpfs mapped shared, so that a process killed at any instruction leaves a
/// state a new process recovers from with every request answered exactly once.
///
/// The step names (T1..T3, A1..A3, P1, P3) are the protocol file's; each method does its
/// steps in that order, and every store another step depends on is a release store, so
/// neither the compiler nor the CPU reorders them. Used by one thread at a time (the
/// queue's worker), like the queue.
public final class BlkbackRestartState: @unchecked Sendable {
    // SAFETY (@unchecked): owned by its queue, which one thread uses at a time.

    /// What ring the state belongs to: a file naming another ring is not taken over.
    public struct Identity: Equatable, Sendable {
        public var frontendDomain: DomainID
        public var abi: BlkifABI
        /// log2 of the ring's pages (`ring-page-order`).
        public var ringPageOrder: UInt8
        /// The frontend's port (`event-channel`).
        public var eventChannel: EventPort
        /// The ring's grant refs, at most ``BlkbackRestartState/maxRingRefs``.
        public var ringRefs: [GrantRef]

        public init(frontendDomain: DomainID, abi: BlkifABI, ringPageOrder: UInt8, eventChannel: EventPort,
                    ringRefs: [GrantRef]) {
            self.frontendDomain = frontendDomain
            self.abi = abi
            self.ringPageOrder = ringPageOrder
            self.eventChannel = eventChannel
            self.ringRefs = ringRefs
        }
    }

    /// Header offsets (Protocols/blkback-restart.md, "Layout").
    enum Header {
        static let magic = 0
        static let version = 8
        static let headerSize = 12
        static let records = 16
        static let recordSize = 20
        static let frontendDomain = 24
        static let abi = 26
        static let ringPageOrder = 27
        static let eventChannel = 28
        static let ringRefs = 32
        static let consumed = 96
        static let answered = 100
        static let published = 104
        static let size = 4096
    }

    /// Record offsets.
    enum Record {
        static let state = 0
        static let requestIndex = 4
        static let responseIndex = 8
        static let status = 12
        static let operation = 14
        static let id = 16
        static let request = 32
    }

    /// A record's state word.
    enum RecordState: UInt32 {
        case free = 0
        case taken = 1
        case answered = 2
    }

    /// `XSBKRST1` read as a little-endian u64.
    static let magic = UInt64(littleEndian: Array("XSBKRST1".utf8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    static let version: UInt32 = 1
    /// Ring pages the header has room to name (`max-ring-page-order` 4).
    public static let maxRingRefs = 16

    /// The file, or nil for state kept in anonymous memory (tests).
    public let path: String?
    let region: MemoryRegion
    let view: SharedView
    /// Records: the ring's size.
    public let recordCount: Int
    let recordSize: Int
    let slotSize: Int
    /// The ABI responses are written again in.
    let abi: BlkifABI
    /// Each record's request bytes, as a view the decoder reads.
    let requestViews: [SharedView]
    /// Free records (a stack) and the records answered but not yet published.
    var freeRecords: UnsafeMutableBufferPointer<Int32>
    var freeCount = 0
    var answeredRecords: UnsafeMutableBufferPointer<Int32>
    var answeredCount = 0

    /// The record size for requests of `slotSize` bytes.
    static func recordSize(slotSize: Int) -> Int { (Record.request + slotSize + 15) & ~15 }

    /// Bytes the state of a ring of `ringSize` slots of `slotSize` bytes takes.
    public static func fileSize(ringSize: UInt32, slotSize: Int) -> Int {
        let bytes = Header.size + Int(ringSize) * recordSize(slotSize: slotSize)
        return (bytes + pageSize - 1) / pageSize * pageSize
    }

    init(region: MemoryRegion, path: String?, ringSize: UInt32, abi: BlkifABI) {
        self.region = region
        self.path = path
        self.abi = abi
        view = region.view
        recordCount = Int(ringSize)
        let slotSize = abi.slotSize
        self.slotSize = slotSize
        recordSize = Self.recordSize(slotSize: slotSize)
        let view = region.view
        let size = recordSize
        requestViews = (0..<Int(ringSize)).map { r in
            // In bounds: the region holds fileSize(ringSize:slotSize:) bytes.
            try! view.slice(offset: Header.size + r * size + Record.request, length: slotSize)
        }
        freeRecords = .allocate(capacity: Int(ringSize))
        answeredRecords = .allocate(capacity: Int(ringSize))
    }

    deinit {
        freeRecords.deallocate()
        answeredRecords.deallocate()
    }

    // MARK: Making and opening

    /// A new state for a ring the queue attaches to at `index`, in `region` (which must
    /// hold ``fileSize(ringSize:slotSize:)`` bytes, zeroed). The magic is written last, so
    /// a state cut short by a crash reads as none.
    public static func create(in region: MemoryRegion, path: String? = nil, identity: Identity, ringSize: UInt32,
                              at index: RingIndex) throws(BlkbackRestartError) -> BlkbackRestartState {
        let slotSize = identity.abi.slotSize
        let needed = fileSize(ringSize: ringSize, slotSize: slotSize)
        guard region.length >= needed else { throw .truncated(path: path ?? "(memory)", size: region.length, needed: needed) }
        guard identity.ringRefs.count <= maxRingRefs else {
            throw .layout(field: "ring refs", found: UInt32(identity.ringRefs.count), expected: UInt32(maxRingRefs))
        }
        let state = BlkbackRestartState(region: region, path: path, ringSize: ringSize, abi: identity.abi)
        let v = state.view
        v.fill(0, at: 0, length: needed)
        v.store(version, at: Header.version)
        v.store(UInt32(Header.size), at: Header.headerSize)
        v.store(ringSize, at: Header.records)
        v.store(UInt32(state.recordSize), at: Header.recordSize)
        state.storeIdentity(identity)
        v.store(index, at: Header.consumed)
        v.store(index, at: Header.answered)
        v.store(index, at: Header.published)
        // Release: every field above is in place before the magic says the file is whole.
        memoryFence(.releasing)
        v.store(magic, at: Header.magic)
        state.rebuildFreeList()
        return state
    }

    /// Creates (or replaces) the state file at `path`, for a new handshake's ring.
    public static func create(path: String, identity: Identity, ringSize: UInt32,
                              at index: RingIndex) throws(BlkbackRestartError) -> BlkbackRestartState {
        let size = fileSize(ringSize: ringSize, slotSize: identity.abi.slotSize)
        let region = try mapFile(path, size: size, create: true)
        return try create(in: region, path: path, identity: identity, ringSize: ringSize, at: index)
    }

    /// Opens the state a previous process left at `path` for the ring `identity` names,
    /// checking its layout and identity; ``recover(ring:)`` then reads it.
    public static func open(path: String, identity: Identity, ringSize: UInt32) throws(BlkbackRestartError) -> BlkbackRestartState {
        let size = fileSize(ringSize: ringSize, slotSize: identity.abi.slotSize)
        let region = try mapFile(path, size: size, create: false)
        return try open(region, path: path, identity: identity, ringSize: ringSize)
    }

    /// Opens the state held in `region` (see ``open(path:identity:ringSize:)``).
    public static func open(_ region: MemoryRegion, path: String? = nil, identity: Identity,
                            ringSize: UInt32) throws(BlkbackRestartError) -> BlkbackRestartState {
        let slotSize = identity.abi.slotSize
        let needed = fileSize(ringSize: ringSize, slotSize: slotSize)
        guard region.length >= needed else { throw .truncated(path: path ?? "(memory)", size: region.length, needed: needed) }
        let v = region.view
        guard v.load(UInt64.self, at: Header.magic) == magic else { throw .badMagic }
        memoryFence(.acquiring)
        let expected: [(String, Int, UInt32)] = [
            ("version", Header.version, version), ("header size", Header.headerSize, UInt32(Header.size)),
            ("records", Header.records, ringSize), ("record size", Header.recordSize, UInt32(recordSize(slotSize: slotSize))),
        ]
        for (field, offset, value) in expected {
            let found = v.load(UInt32.self, at: offset)
            guard found == value else { throw .layout(field: field, found: found, expected: value) }
        }
        let state = BlkbackRestartState(region: region, path: path, ringSize: ringSize, abi: identity.abi)
        try state.checkIdentity(identity)
        return state
    }

    /// Removes the state file (its queue closed with its device): nothing is owed any more.
    public func remove() {
        if let path { unlink(path) }
    }

    static func mapFile(_ path: String, size: Int, create: Bool) throws(BlkbackRestartError) -> MemoryRegion {
        let fd = Glibc.open(path, create ? O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC : O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .file(path: path, call: "open", errno: errno) }
        defer { Glibc.close(fd) }
        if create {
            guard ftruncate(fd, off_t(size)) == 0 else { throw .file(path: path, call: "ftruncate", errno: errno) }
        } else {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw .file(path: path, call: "fstat", errno: errno) }
            guard Int(st.st_size) >= size else { throw .truncated(path: path, size: Int(st.st_size), needed: size) }
        }
        do {
            return try MemoryRegion.map(fileDescriptor: fd, length: size)
        } catch {
            throw .file(path: path, call: "mmap", errno: EIO)
        }
    }

    func storeIdentity(_ identity: Identity) {
        view.store(identity.frontendDomain, at: Header.frontendDomain)
        view.store(Self.abiCode(identity.abi), at: Header.abi)
        view.store(identity.ringPageOrder, at: Header.ringPageOrder)
        view.store(identity.eventChannel, at: Header.eventChannel)
        for k in 0..<Self.maxRingRefs {
            view.store(k < identity.ringRefs.count ? identity.ringRefs[k] : 0, at: Header.ringRefs + 4 * k)
        }
    }

    func checkIdentity(_ identity: Identity) throws(BlkbackRestartError) {
        func check<T: FixedWidthInteger>(_ field: String, _ offset: Int, _ expected: T) throws(BlkbackRestartError) {
            let found = view.load(T.self, at: offset)
            guard found == expected else { throw .otherRing(field: field, found: "\(found)", expected: "\(expected)") }
        }
        try check("frontend domain", Header.frontendDomain, identity.frontendDomain)
        try check("abi", Header.abi, Self.abiCode(identity.abi))
        try check("ring page order", Header.ringPageOrder, identity.ringPageOrder)
        try check("event channel", Header.eventChannel, identity.eventChannel)
        for k in 0..<Self.maxRingRefs {
            try check("ring ref \(k)", Header.ringRefs + 4 * k, k < identity.ringRefs.count ? identity.ringRefs[k] : 0)
        }
    }

    static func abiCode(_ abi: BlkifABI) -> UInt8 {
        switch abi {
        case .native: return 0
        case .x86_32: return 1
        case .x86_64: return 2
        }
    }

    // MARK: Indices

    /// The header's `consumed`, `answered` and `published`.
    public var consumed: RingIndex { view.atomicLoad32(at: Header.consumed, ordering: .relaxed) }
    public var answered: RingIndex { view.atomicLoad32(at: Header.answered, ordering: .relaxed) }
    public var published: RingIndex { view.atomicLoad32(at: Header.published, ordering: .relaxed) }

    func offset(_ record: Int32) -> Int { Header.size + Int(record) * recordSize }

    func recordState(_ record: Int32) -> RecordState? {
        RecordState(rawValue: view.atomicLoad32(at: offset(record) + Record.state, ordering: .relaxed))
    }

    /// The request bytes of `record`, for the decoder.
    func request(_ record: Int32) -> SharedView { requestViews[Int(record)] }

    /// The operation byte of `record`'s request (the first byte in every ABI).
    func requestOperation(_ record: Int32) -> UInt8 { requestViews[Int(record)].load(UInt8.self, at: 0) }

    func requestIndex(_ record: Int32) -> RingIndex {
        view.atomicLoad32(at: offset(record) + Record.requestIndex, ordering: .relaxed)
    }

    /// Puts every free record on the free stack.
    func rebuildFreeList() {
        freeCount = 0
        answeredCount = 0
        for r in stride(from: Int32(recordCount - 1), through: 0, by: -1) where recordState(r) == .free {
            freeRecords[freeCount] = r
            freeCount += 1
        }
    }

    // MARK: The hot path

    /// Whether a record is free to take a request.
    var canTake: Bool { freeCount > 0 }

    /// T1..T3: copies the request slot `slot`, taken at ring index `index`, into a free
    /// record, marks it taken, then advances `consumed`. Call only when ``canTake``.
    func take(_ slot: SharedView, at index: RingIndex) -> Int32 {
        freeCount -= 1
        let record = freeRecords[freeCount]
        let base = offset(record)
        // T1: the request's bytes, read from the ring once; decoded from here.
        SharedView.copy(from: slot, at: 0, to: view, at: base + Record.request, length: slotSize)
        view.atomicStore32(index, at: base + Record.requestIndex, ordering: .relaxed)
        // T2, release: the record's bytes before its state says taken (pairs with the
        // recovering process, which reads the state first).
        view.atomicStore32(RecordState.taken.rawValue, at: base + Record.state, ordering: .releasing)
        // T3, release: recorded before consumed passes it.
        view.atomicStore32(index &+ 1, at: Header.consumed, ordering: .releasing)
        return record
    }

    /// A1..A3: records `record`'s answer at response index `index` before the response is
    /// written into the ring (A4, the caller's).
    func answer(_ record: Int32, id: UInt64, operation: UInt8, status: BlkifStatus, at index: RingIndex) {
        let base = offset(record)
        // A1: the response, so a new process can write it again.
        view.store(id, at: base + Record.id)
        view.store(UInt16(bitPattern: status.rawValue), at: base + Record.status)
        view.store(operation, at: base + Record.operation)
        view.atomicStore32(index, at: base + Record.responseIndex, ordering: .relaxed)
        // A2, release: the answer's fields before its state.
        view.atomicStore32(RecordState.answered.rawValue, at: base + Record.state, ordering: .releasing)
        // A3, release: the record answered before answered passes it.
        view.atomicStore32(index &+ 1, at: Header.answered, ordering: .releasing)
        answeredRecords[answeredCount] = record
        answeredCount += 1
    }

    /// P1: records that the responses up to `index` are about to be made visible.
    func publish(upTo index: RingIndex) {
        // Release: after the responses' slots (A4) and their records.
        view.atomicStore32(index, at: Header.published, ordering: .releasing)
    }

    /// P3: frees the records answered and published (call after the push, P2).
    func freePublished() {
        for k in 0..<answeredCount {
            let record = answeredRecords[k]
            // Release: after P1, so a freed record's response is known published.
            view.atomicStore32(RecordState.free.rawValue, at: offset(record) + Record.state, ordering: .releasing)
            freeRecords[freeCount] = record
            freeCount += 1
        }
        answeredCount = 0
    }
}
