import SharedMemory

/// One page of a transfer: a granted frame and the inclusive range of 512-byte sectors
/// in it (`io/blkif.h: struct blkif_request_segment`, 8 bytes in every ABI).
public struct BlkifSegment: Sendable, Hashable {
    /// Grant reference of the data page (`gref`).
    public var gref: UInt32
    /// First sector in the page to transfer, inclusive (`first_sect`).
    public var firstSector: UInt8
    /// Last sector in the page to transfer, inclusive (`last_sect`).
    public var lastSector: UInt8

    /// Bytes per encoded segment.
    public static let size = 8
    /// Offset of `gref`.
    public static let grefOffset = 0
    /// Offset of `first_sect`.
    public static let firstSectorOffset = 4
    /// Offset of `last_sect`.
    public static let lastSectorOffset = 5
    /// `first_sect`/`last_sect` count 512-byte sectors of a 4 KiB page, so the last valid
    /// value is 7. (With `feature-large-sector-size` io/blkif.h counts them in the disk's
    /// sector size instead; like Linux blkback, this module does not offer that feature.)
    public static let lastSectorLimit: UInt8 = UInt8(pageSize / 512 - 1)

    @inlinable
    public init(gref: UInt32, firstSector: UInt8, lastSector: UInt8) {
        self.gref = gref
        self.firstSector = firstSector
        self.lastSector = lastSector
    }

    /// Number of 512-byte sectors this segment moves (valid segments only).
    @inlinable
    public var sectorCount: Int { Int(lastSector) - Int(firstSector) + 1 }

    /// Checks `first <= last <= 7`; `index` is the segment's position, for the error.
    @inlinable
    public static func validateSectors(first: UInt8, last: UInt8, index: Int) throws(BlkifError) {
        guard first <= last, last <= lastSectorLimit else {
            throw .segmentSectors(index: index, first: first, last: last, limit: lastSectorLimit)
        }
    }

    /// Reads a segment at `offset` (each field once) and validates its sectors.
    @inlinable
    static func decode(from view: SharedView, at offset: Int, index: Int) throws(BlkifError) -> BlkifSegment {
        let gref = view.load(UInt32.self, at: offset + grefOffset)
        let first = view.load(UInt8.self, at: offset + firstSectorOffset)
        let last = view.load(UInt8.self, at: offset + lastSectorOffset)
        try validateSectors(first: first, last: last, index: index)
        return BlkifSegment(gref: gref, firstSector: first, lastSector: last)
    }

    /// Writes the segment and its two padding bytes at `offset`.
    @inlinable
    func encode(into view: SharedView, at offset: Int) {
        view.store(gref, at: offset + Self.grefOffset)
        view.store(firstSector, at: offset + Self.firstSectorOffset)
        view.store(lastSector, at: offset + Self.lastSectorOffset)
        view.store(UInt16(0), at: offset + 6)
    }
}

