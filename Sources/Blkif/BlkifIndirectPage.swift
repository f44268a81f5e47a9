import SharedMemory

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
