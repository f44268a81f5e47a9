/// Up to `BLKIF_MAX_SEGMENTS_PER_REQUEST` (11) segments in fixed inline storage, so a
/// decoded request never allocates.
public struct BlkifSegments: Sendable, RandomAccessCollection, Equatable {
    /// `io/blkif.h: BLKIF_MAX_SEGMENTS_PER_REQUEST`.
    public static let capacity = 11

    @usableFromInline var storage: InlineArray<11, BlkifSegment>
    @usableFromInline var length: Int

    /// No segments.
    @inlinable
    public init() {
        storage = InlineArray(repeating: BlkifSegment(gref: 0, firstSector: 0, lastSector: 0))
        length = 0
    }

    /// The given segments; throws if there are more than 11 or one has bad sectors.
    @inlinable
    public init(_ segments: some Collection<BlkifSegment>) throws(BlkifError) {
        self.init()
        guard segments.count <= Self.capacity else {
            throw .segmentCount(value: segments.count, limit: 0...Self.capacity)
        }
        for segment in segments {
            try BlkifSegment.validateSectors(first: segment.firstSector, last: segment.lastSector, index: length)
            storage[length] = segment
            length += 1
        }
    }

    /// Appends a segment already validated by the caller; capacity is checked by the caller.
    @inlinable
    mutating func appendUnchecked(_ segment: BlkifSegment) {
        storage[length] = segment
        length += 1
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { length }

    @inlinable
    public subscript(position: Int) -> BlkifSegment {
        precondition(position >= 0 && position < length, "segment index out of range")
        return storage[position]
    }

    /// Total 512-byte sectors moved by all segments.
    @inlinable
    public var sectorCount: Int {
        var total = 0
        for i in 0..<length { total += storage[i].sectorCount }
        return total
    }

    @inlinable
    public static func == (lhs: BlkifSegments, rhs: BlkifSegments) -> Bool {
        guard lhs.length == rhs.length else { return false }
        for i in 0..<lhs.length where lhs.storage[i] != rhs.storage[i] { return false }
        return true
    }
}
