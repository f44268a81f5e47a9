/// A read, write, barrier or flush with up to 11 segments in the slot
/// (`io/blkif.h: struct blkif_request`).
public struct BlkifDirectRequest: Sendable, Equatable {
    /// `operation`.
    public let operation: BlkifDirectOperation
    /// `handle`: the virtual device the frontend means.
    public var handle: UInt16
    /// `id`: the frontend's tag, echoed in the response.
    public var id: UInt64
    /// `sector_number`: first sector on the disk (reads and writes).
    public var sectorNumber: UInt64
    /// `seg[0 ..< nr_segments]`.
    public let segments: BlkifSegments

    /// A request; throws if the segment count does not suit the operation.
    @inlinable
    public init(operation: BlkifDirectOperation, handle: UInt16, id: UInt64, sectorNumber: UInt64,
                segments: BlkifSegments) throws(BlkifError) {
        try BlkifRequest.validateSegmentCount(segments.count, operation: operation.operation)
        self.operation = operation
        self.handle = handle
        self.id = id
        self.sectorNumber = sectorNumber
        self.segments = segments
    }

    /// Checks that the sectors the segments move lie on a disk of `diskSectors` 512-byte
    /// sectors, in whole sectors of `sectorSize` bytes. A request without segments (a pure
    /// flush or barrier) touches no sectors.
    @inlinable
    public func validateSectors(diskSectors: UInt64, sectorSize: UInt32 = 512) throws(BlkifError) {
        guard !segments.isEmpty else { return }
        try BlkifRequest.validateSectorRange(start: sectorNumber, count: UInt64(segments.sectorCount),
                                             diskSectors: diskSectors, sectorSize: sectorSize)
    }
}
