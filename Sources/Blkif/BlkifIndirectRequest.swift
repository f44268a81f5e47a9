/// A read or write whose segments live in separate granted pages
/// (`io/blkif.h: struct blkif_request_indirect`); decode them with ``BlkifIndirectPage``.
public struct BlkifIndirectRequest: Sendable, Equatable {
    /// `indirect_op`.
    public let operation: BlkifIndirectOperation
    /// `nr_segments`: segments across all indirect pages.
    public let segmentCount: Int
    /// `handle`.
    public var handle: UInt16
    /// `id`.
    public var id: UInt64
    /// `sector_number`.
    public var sectorNumber: UInt64
    /// `indirect_grefs[0 ..< ceil(nr_segments / 512)]`.
    public let indirectGrefs: BlkifIndirectGrefs

    /// A request; throws unless `segmentCount` is in 1...`maxSegments` (at most 4096) and
    /// `indirectGrefs` has exactly the pages those segments need.
    @inlinable
    public init(operation: BlkifIndirectOperation, segmentCount: Int, handle: UInt16, id: UInt64,
                sectorNumber: UInt64, indirectGrefs: BlkifIndirectGrefs,
                maxSegments: Int = BlkifIndirectPage.maxSegments) throws(BlkifError) {
        try BlkifRequest.validateSegmentCount(segmentCount, operation: .indirect, maxIndirectSegments: maxSegments)
        let pages = BlkifIndirectPage.pageCount(forSegments: segmentCount)
        guard indirectGrefs.count == pages else {
            let perPage = BlkifIndirectPage.segmentsPerPage
            let limit = indirectGrefs.isEmpty
                ? 0...0 : ((indirectGrefs.count - 1) * perPage + 1)...(indirectGrefs.count * perPage)
            throw .segmentCount(value: segmentCount, limit: limit)
        }
        self.operation = operation
        self.segmentCount = segmentCount
        self.handle = handle
        self.id = id
        self.sectorNumber = sectorNumber
        self.indirectGrefs = indirectGrefs
    }
}

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

extension BlkifIndirectRequest {
    /// The `operation` byte a response to this request carries: `indirect_op`.
    @inlinable
    public var responseOperation: UInt8 { operation.rawValue }
}
