/// A discard (`io/blkif.h: struct blkif_request_discard`).
public struct BlkifDiscardRequest: Sendable, Hashable {
    /// `handle`.
    public var handle: UInt16
    /// `id`.
    public var id: UInt64
    /// `sector_number`: first sector to discard.
    public var sectorNumber: UInt64
    /// `nr_sectors`: how many contiguous sectors to discard.
    public var sectorCount: UInt64
    /// `flag & BLKIF_DISCARD_SECURE`: the data must become unrecoverable.
    public var secure: Bool

    /// `io/blkif.h: BLKIF_DISCARD_SECURE`.
    public static let secureFlag: UInt8 = 1

    @inlinable
    public init(handle: UInt16, id: UInt64, sectorNumber: UInt64, sectorCount: UInt64, secure: Bool) {
        self.handle = handle
        self.id = id
        self.sectorNumber = sectorNumber
        self.sectorCount = sectorCount
        self.secure = secure
    }

    /// Checks that the discarded range lies on a disk of `diskSectors` sectors, in whole
    /// sectors of `sectorSize` bytes.
    @inlinable
    public func validateSectors(diskSectors: UInt64, sectorSize: UInt32 = 512) throws(BlkifError) {
        try BlkifRequest.validateSectorRange(start: sectorNumber, count: sectorCount, diskSectors: diskSectors,
                                             sectorSize: sectorSize)
    }
}
