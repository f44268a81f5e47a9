import SharedMemory

/// The grant references of the pages holding an indirect request's segments
/// (`indirect_grefs[]` of `io/blkif.h: struct blkif_request_indirect`), inline, up to
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST` (8).
public struct BlkifIndirectGrefs: Sendable, RandomAccessCollection, Equatable {
    /// `io/blkif.h: BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`.
    public static let capacity = 8

    @usableFromInline var storage: InlineArray<8, UInt32>
    @usableFromInline var length: Int

    @inlinable
    init(storage: InlineArray<8, UInt32>, length: Int) {
        self.storage = storage
        self.length = length
    }

    /// The given grant references; throws if there are more than 8.
    @inlinable
    public init(_ grefs: some Collection<UInt32>) throws(BlkifError) {
        guard grefs.count <= Self.capacity else {
            throw .segmentCount(value: grefs.count * BlkifIndirectPage.segmentsPerPage,
                                limit: 1...BlkifIndirectPage.maxSegments)
        }
        storage = InlineArray(repeating: 0)
        length = 0
        for gref in grefs {
            storage[length] = gref
            length += 1
        }
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { length }

    @inlinable
    public subscript(position: Int) -> UInt32 {
        precondition(position >= 0 && position < length, "indirect page index out of range")
        return storage[position]
    }

    @inlinable
    public static func == (lhs: BlkifIndirectGrefs, rhs: BlkifIndirectGrefs) -> Bool {
        guard lhs.length == rhs.length else { return false }
        for i in 0..<lhs.length where lhs.storage[i] != rhs.storage[i] { return false }
        return true
    }
}

/// The layout of an indirect segment page: a plain array of `blkif_request_segment`
/// filling a 4 KiB page (`io/blkif.h: BLKIF_OP_INDIRECT`).
public enum BlkifIndirectPage {
    /// Segments per page: 4096 / sizeof(struct blkif_request_segment).
    public static let segmentsPerPage = pageSize / BlkifSegment.size
    /// The most segments an indirect request can describe: 8 pages of 512.
    public static let maxSegments = BlkifIndirectGrefs.capacity * segmentsPerPage

    /// Pages needed for `segmentCount` segments (rounded up).
    @inlinable
    public static func pageCount(forSegments segmentCount: Int) -> Int {
        (segmentCount + segmentsPerPage - 1) / segmentsPerPage
    }

    /// The page (index into `indirect_grefs`) and byte offset in it of segment `index`.
    @inlinable
    public static func location(ofSegment index: Int) -> (page: Int, offset: Int) {
        (index / segmentsPerPage, (index % segmentsPerPage) * BlkifSegment.size)
    }

    /// Reads and validates segment `index` of a request from `page`, the mapped (or
    /// copied) indirect page that ``location(ofSegment:)`` names.
    @inlinable
    public static func decodeSegment(_ index: Int, from page: SharedView) throws(BlkifError) -> BlkifSegment {
        let offset = location(ofSegment: index).offset
        guard index >= 0, offset + BlkifSegment.size <= page.count else {
            throw .slotOutOfBounds(offset: offset, length: BlkifSegment.size, size: page.count)
        }
        return try BlkifSegment.decode(from: page, at: offset, index: index)
    }

    /// Writes segment `index` of a request into its indirect `page`.
    @inlinable
    public static func encodeSegment(_ segment: BlkifSegment, index: Int, into page: SharedView) {
        segment.encode(into: page, at: location(ofSegment: index).offset)
    }
}
