/// A request code (`io/blkif.h: BLKIF_OP_*`).
public enum BlkifOperation: UInt8, Sendable, Hashable, CaseIterable {
    /// `io/blkif.h: BLKIF_OP_READ`.
    case read = 0
    /// `io/blkif.h: BLKIF_OP_WRITE`.
    case write = 1
    /// `io/blkif.h: BLKIF_OP_WRITE_BARRIER`: earlier writes complete before it, later ones after.
    case writeBarrier = 2
    /// `io/blkif.h: BLKIF_OP_FLUSH_DISKCACHE`: commit the volatile cache to stable storage.
    case flushDiskCache = 3
    /// `io/blkif.h: BLKIF_OP_DISCARD`, laid out as `blkif_request_discard`.
    case discard = 5
    /// `io/blkif.h: BLKIF_OP_INDIRECT`, laid out as `blkif_request_indirect`.
    case indirect = 6

    /// The code reserved by `io/blkif.h` (BLKIF_OP_RESERVED_1); never accepted.
    public static let reserved1: UInt8 = 4

    /// Validates a peer's operation byte.
    @inlinable
    public init(validating raw: UInt8) throws(BlkifError) {
        guard let op = BlkifOperation(rawValue: raw) else { throw .unknownOperation(raw) }
        self = op
    }

    /// Whether the request carries `blkif_request_segment`s in the slot (`blkif_request`).
    @inlinable
    public var usesDirectSegments: Bool {
        switch self {
        case .read, .write, .writeBarrier, .flushDiskCache: return true
        case .discard, .indirect: return false
        }
    }

    /// The segment counts `io/blkif.h` and the reference backends accept in a
    /// `blkif_request` with this operation.
    ///
    /// Reads and writes move data, so they need 1...11 segments. A flush or barrier with
    /// no segments is a pure cache flush; with segments it also writes them (blkback and
    /// QEMU's xen-block treat it as a write with a preceding flush), so 0...11.
    @inlinable
    public var directSegmentLimit: ClosedRange<Int> {
        switch self {
        case .flushDiskCache, .writeBarrier: return 0...BlkifSegments.capacity
        default: return 1...BlkifSegments.capacity
        }
    }
}

/// The operations a `blkif_request` (segments in the slot) can carry.
public enum BlkifDirectOperation: UInt8, Sendable, Hashable, CaseIterable {
    /// `io/blkif.h: BLKIF_OP_READ`.
    case read = 0
    /// `io/blkif.h: BLKIF_OP_WRITE`.
    case write = 1
    /// `io/blkif.h: BLKIF_OP_WRITE_BARRIER`.
    case writeBarrier = 2
    /// `io/blkif.h: BLKIF_OP_FLUSH_DISKCACHE`.
    case flushDiskCache = 3

    /// The same code as a ``BlkifOperation``.
    @inlinable
    public var operation: BlkifOperation {
        switch self {
        case .read: return .read
        case .write: return .write
        case .writeBarrier: return .writeBarrier
        case .flushDiskCache: return .flushDiskCache
        }
    }
}

/// The operations an indirect request can wrap (`io/blkif.h`: `indirect_op` is
/// BLKIF_OP_READ or BLKIF_OP_WRITE).
public enum BlkifIndirectOperation: UInt8, Sendable, Hashable, CaseIterable {
    /// `io/blkif.h: BLKIF_OP_READ`.
    case read = 0
    /// `io/blkif.h: BLKIF_OP_WRITE`.
    case write = 1
}
