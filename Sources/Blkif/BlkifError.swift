/// Errors of the Blkif module: a peer's request, response or xenstore value that breaks
/// `io/blkif.h`. Each case names the field, the value found and the limit it broke.
public enum BlkifError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A slot of `length` bytes at `offset` does not fit in a view of `size` bytes.
    case slotOutOfBounds(offset: Int, length: Int, size: Int)
    /// `operation` is not a request code of `io/blkif.h` (BLKIF_OP_RESERVED_1 included).
    case unknownOperation(UInt8)
    /// `indirect_op` of a BLKIF_OP_INDIRECT request is neither BLKIF_OP_READ nor BLKIF_OP_WRITE.
    case unknownIndirectOperation(UInt8)
    /// `nr_segments` is outside the range allowed for the operation.
    case segmentCount(value: Int, limit: ClosedRange<Int>)
    /// A BLKIF_OP_INDIRECT request arrived but `feature-max-indirect-segments` was not advertised.
    case indirectNotAdvertised
    /// Segment `index` has `first_sect > last_sect` or `last_sect` beyond the last
    /// 512-byte sector of its page (`limit`).
    case segmentSectors(index: Int, first: UInt8, last: UInt8, limit: UInt8)
    /// The discard `flag` byte has bits other than BLKIF_DISCARD_SECURE.
    case discardFlag(UInt8)
    /// Sectors `start ..< start + count` do not lie inside a disk of `diskSectors` sectors.
    case sectorRange(start: UInt64, count: UInt64, diskSectors: UInt64)
    /// Sectors `start ..< start + count` (512-byte units) split a logical sector of a disk
    /// whose `sector-size` is `sectorSize`.
    case sectorAlignment(start: UInt64, count: UInt64, sectorSize: UInt32)
    /// A response `status` that is not a BLKIF_RSP_* code.
    case unknownStatus(Int16)
    /// The frontend's `protocol` node names an ABI this host cannot serve.
    case unknownABI(String)
    /// A xenstore node holds a value that does not parse as the type `io/blkif.h` gives it.
    case featureValue(key: String, value: String, expected: String)
    /// A xenstore node holds a number outside the range `io/blkif.h` allows.
    case featureRange(key: String, value: UInt64, limit: ClosedRange<UInt64>)
    /// A xenstore node `io/blkif.h` requires (a ring reference, an event channel) is absent.
    case missingKey(String)
    /// A request failed validation; `id` and `operation` are what the peer wrote, so a
    /// backend can still answer it (with BLKIF_RSP_ERROR or BLKIF_RSP_EOPNOTSUPP).
    indirect case invalidRequest(id: UInt64, operation: UInt8, reason: BlkifError)

    public var description: String {
        switch self {
        case let .slotOutOfBounds(offset, length, size):
            return "blkif slot of \(length) bytes at offset \(offset) is outside the \(size)-byte view"
        case let .unknownOperation(op):
            return "blkif operation \(op) is not a known BLKIF_OP_* code"
        case let .unknownIndirectOperation(op):
            return "blkif indirect_op \(op) is not BLKIF_OP_READ (0) or BLKIF_OP_WRITE (1)"
        case let .segmentCount(value, limit):
            return "blkif nr_segments \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case .indirectNotAdvertised:
            return "blkif BLKIF_OP_INDIRECT request without feature-max-indirect-segments"
        case let .segmentSectors(index, first, last, limit):
            return "blkif segment \(index): first_sect \(first), last_sect \(last) break first <= last <= \(limit)"
        case let .discardFlag(flag):
            return "blkif discard flag \(flag) has bits other than BLKIF_DISCARD_SECURE (1)"
        case let .sectorRange(start, count, disk):
            return "blkif sectors \(start) + \(count) exceed the disk of \(disk) sectors"
        case let .sectorAlignment(start, count, size):
            return "blkif sectors \(start) + \(count) (512-byte units) are not whole \(size)-byte sectors of this disk"
        case let .unknownStatus(status):
            return "blkif response status \(status) is not a BLKIF_RSP_* code"
        case let .unknownABI(name):
            return "blkif protocol \"\(name)\" is not x86_32-abi or x86_64-abi"
        case let .featureValue(key, value, expected):
            return "xenstore \(key) = \"\(value)\": expected \(expected)"
        case let .featureRange(key, value, limit):
            return "xenstore \(key) = \(value) is outside \(limit.lowerBound)...\(limit.upperBound)"
        case let .missingKey(key):
            return "xenstore \(key) is missing"
        case let .invalidRequest(id, operation, reason):
            return "blkif request id \(id) operation \(operation): \(reason)"
        }
    }
}
