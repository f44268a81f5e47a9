import Blkif
import URing
import XenPlatform

/// Why a request was answered with an error status instead of being served: one case per
/// rule, so log lines and tests name the rule, not a sentence. The frontend sees only the
/// status (io/blkif.h: BLKIF_RSP_ERROR or BLKIF_RSP_EOPNOTSUPP).
public enum BlkbackRefusal: Equatable, Sendable, CustomStringConvertible {
    /// The request broke a rule of io/blkif.h (an unknown operation, a segment count or
    /// sector range out of bounds, ...).
    case invalid(BlkifError)
    /// Segment `index` of an indirect request's segment pages broke a rule.
    case invalidIndirectSegment(index: Int, BlkifError)
    /// A write (`operation` is the raw blkif operation) to a read-only disk.
    case readOnly(operation: UInt8)
    /// A discard the backend did not offer (`secure`: BLKIF_DISCARD_SECURE).
    case discardNotOffered(secure: Bool)
    /// Copying a frontend page failed as a whole (the platform refused the batch).
    case grantCopy(PlatformError)
    /// Copying frontend page `ref` failed with Xen's status (a revoked or bad gref).
    case grantCopyStatus(ref: GrantRef, GrantStatus)
    /// The I/O engine had no room for the request.
    case engineFull
    /// The backing store's `call` failed with `errno`.
    case storeFailed(call: String, Errno)
    /// The backing store's `call` moved `moved` of `expected` bytes.
    case shortTransfer(call: String, moved: Int, expected: Int)
    /// The backing store cannot discard.
    case storeCannotDiscard
    /// A secure discard on the store failed.
    case secureDiscard(BlockBackendError)

    /// The completion of `call` with `result` (bytes or -errno) when `expected` bytes were due.
    static func completion(_ call: String, result: Int32, expected: Int) -> BlkbackRefusal {
        result < 0 ? .storeFailed(call: call, Errno(code: -result))
                   : .shortTransfer(call: call, moved: Int(result), expected: expected)
    }

    public var description: String {
        switch self {
        case let .invalid(error): return "\(error)"
        case let .invalidIndirectSegment(index, error): return "indirect segment \(index): \(error)"
        case let .readOnly(operation): return "operation \(operation) writes to a read-only device"
        case let .discardNotOffered(secure): return secure ? "secure discard not offered" : "discard not offered"
        case let .grantCopy(error): return "grant copy: \(error)"
        case let .grantCopyStatus(ref, status): return "grant copy of gref \(ref): \(status)"
        case .engineFull: return "the I/O engine refused the request (queue full)"
        case let .storeFailed(call, errno): return "\(call) failed: \(errno)"
        case let .shortTransfer(call, moved, expected): return "\(call) moved \(moved) of \(expected) bytes"
        case .storeCannotDiscard: return "the backing store cannot discard"
        case let .secureDiscard(error): return "secure discard: \(error)"
        }
    }
}
