import XenRing
/// Byte offsets and sizes of the `io/blkif.h` structs in one ABI.
///
/// Fields before the first 64-bit member sit at the same offsets in every ABI and are
/// constants here; the rest move with the alignment of `uint64_t`.
public struct BlkifLayout: Sendable, Hashable {
    /// `operation` of every request struct.
    public static let operationOffset = 0
    /// `nr_segments` of `blkif_request`, `flag` of `blkif_request_discard`,
    /// `indirect_op` of `blkif_request_indirect`.
    public static let secondByteOffset = 1
    /// `handle` of `blkif_request` and `blkif_request_discard`.
    public static let handleOffset = 2
    /// `nr_segments` (16 bits) of `blkif_request_indirect`.
    public static let indirectSegmentCountOffset = 2
    /// `id` of `blkif_response`.
    public static let responseIDOffset = 0
    /// `operation` of `blkif_response`.
    public static let responseOperationOffset = 8
    /// `status` of `blkif_response`.
    public static let responseStatusOffset = 10

    /// `id` of every request struct.
    public let idOffset: Int
    /// `sector_number` of every request struct.
    public let sectorNumberOffset: Int
    /// `seg[]` of `blkif_request`.
    public let segmentsOffset: Int
    /// `sizeof(struct blkif_request)`.
    public let requestSize: Int
    /// `nr_sectors` of `blkif_request_discard`.
    public let discardSectorCountOffset: Int
    /// `sizeof(struct blkif_request_discard)`.
    public let discardSize: Int
    /// `handle` of `blkif_request_indirect`.
    public let indirectHandleOffset: Int
    /// `indirect_grefs[]` of `blkif_request_indirect`.
    public let indirectGrefsOffset: Int
    /// `pad` of `blkif_request_indirect`, which only the i386 ABI declares (x86_64 gets the
    /// same tail padding from alignment).
    public let indirectPadOffset: Int?
    /// `sizeof(struct blkif_request_indirect)`.
    public let indirectSize: Int
    /// `sizeof(struct blkif_response)`.
    public let responseSize: Int

    /// Bytes per ring slot: the larger of request and response, as the C union has it.
    @inlinable
    public var slotSize: Int { Swift.max(requestSize, responseSize) }

    /// i386: `uint64_t` is 4-byte aligned, and `blkif_request_indirect` ends in explicit padding.
    public static let x86_32 = BlkifLayout(
        idOffset: 4, sectorNumberOffset: 12, segmentsOffset: 20, requestSize: 108,
        discardSectorCountOffset: 20, discardSize: 28,
        indirectHandleOffset: 20, indirectGrefsOffset: 24, indirectPadOffset: 56, indirectSize: 64,
        responseSize: 12)

    /// x86_64 (and arm): `uint64_t` is 8-byte aligned.
    public static let x86_64 = BlkifLayout(
        idOffset: 8, sectorNumberOffset: 16, segmentsOffset: 24, requestSize: 112,
        discardSectorCountOffset: 24, discardSize: 32,
        indirectHandleOffset: 24, indirectGrefsOffset: 28, indirectPadOffset: nil, indirectSize: 64,
        responseSize: 16)

    /// One row of the layout table (struct, field, offset, size).
    public typealias Field = WireField

    /// Every field the encoders and decoders use, named as in `io/blkif.h`, for checks
    /// against Protocols/blkif-layout.tsv and the C compiler.
    public var fields: [Field] {
        let seg = BlkifSegment.self
        var rows: [Field] = [
            Field("blkif_request_segment", "gref", seg.grefOffset, 4),
            Field("blkif_request_segment", "first_sect", seg.firstSectorOffset, 1),
            Field("blkif_request_segment", "last_sect", seg.lastSectorOffset, 1),
            Field("blkif_request_segment", "sizeof", 0, seg.size),

            Field("blkif_request", "operation", Self.operationOffset, 1),
            Field("blkif_request", "nr_segments", Self.secondByteOffset, 1),
            Field("blkif_request", "handle", Self.handleOffset, 2),
            Field("blkif_request", "id", idOffset, 8),
            Field("blkif_request", "sector_number", sectorNumberOffset, 8),
            Field("blkif_request", "seg", segmentsOffset, BlkifSegments.capacity * seg.size),
            Field("blkif_request", "sizeof", 0, requestSize),

            Field("blkif_request_discard", "operation", Self.operationOffset, 1),
            Field("blkif_request_discard", "flag", Self.secondByteOffset, 1),
            Field("blkif_request_discard", "handle", Self.handleOffset, 2),
            Field("blkif_request_discard", "id", idOffset, 8),
            Field("blkif_request_discard", "sector_number", sectorNumberOffset, 8),
            Field("blkif_request_discard", "nr_sectors", discardSectorCountOffset, 8),
            Field("blkif_request_discard", "sizeof", 0, discardSize),

            Field("blkif_request_indirect", "operation", Self.operationOffset, 1),
            Field("blkif_request_indirect", "indirect_op", Self.secondByteOffset, 1),
            Field("blkif_request_indirect", "nr_segments", Self.indirectSegmentCountOffset, 2),
            Field("blkif_request_indirect", "id", idOffset, 8),
            Field("blkif_request_indirect", "sector_number", sectorNumberOffset, 8),
            Field("blkif_request_indirect", "handle", indirectHandleOffset, 2),
            Field("blkif_request_indirect", "indirect_grefs", indirectGrefsOffset,
                  BlkifIndirectGrefs.capacity * 4),
        ]
        if let indirectPadOffset {
            rows.append(Field("blkif_request_indirect", "pad", indirectPadOffset, indirectSize - indirectPadOffset))
        }
        rows += [
            Field("blkif_request_indirect", "sizeof", 0, indirectSize),
            Field("blkif_response", "id", Self.responseIDOffset, 8),
            Field("blkif_response", "operation", Self.responseOperationOffset, 1),
            Field("blkif_response", "status", Self.responseStatusOffset, 2),
            Field("blkif_response", "sizeof", 0, responseSize),
            Field("blkif_sring_entry", "sizeof", 0, slotSize),
        ]
        return rows
    }
}
