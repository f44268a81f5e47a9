/// Free-running ring index, as `RING_IDX` in io/ring.h. Compared with wrapping arithmetic
/// only, and masked only to address a slot.
public typealias RingIndex = UInt32

/// Errors of the XenRing module. Each names what the peer claimed and the limit it broke.
public enum RingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The shared memory cannot hold a ring: `bytes` available, `needed` for one entry.
    case memoryTooSmall(bytes: Int, needed: Int)
    /// An entry size of zero or less.
    case badEntrySize(Int)
    /// A page count outside 1...16 (ring-page-order 0...4).
    case badPageCount(Int)
    /// The peer's request producer claims more requests than the ring can hold
    /// (io/ring.h: RING_REQUEST_PROD_OVERFLOW).
    case requestProducerOverrun(producer: RingIndex, responsePrivate: RingIndex, size: UInt32)
    /// The peer's response producer claims more responses than requests outstanding
    /// (io/ring.h: RING_RESPONSE_PROD_OVERFLOW, tightened to the requests we pushed).
    case responseProducerOverrun(producer: RingIndex, consumer: RingIndex, outstanding: UInt32)
    /// A byte ring's indices claim more bytes than the ring holds.
    case byteRingOverrun(producer: RingIndex, consumer: RingIndex, size: UInt32)
    /// A byte ring's geometry does not fit the memory or is not a power of two.
    case badByteRingGeometry(dataOffset: Int, size: Int, memory: Int)

    public var description: String {
        switch self {
        case let .memoryTooSmall(bytes, needed):
            return "shared ring memory of \(bytes) bytes is smaller than the \(needed) bytes one entry needs"
        case let .badEntrySize(size):
            return "ring entry size \(size) is not positive"
        case let .badPageCount(pages):
            return "ring page count \(pages) is outside 1...16 (ring-page-order 0...4)"
        case let .requestProducerOverrun(producer, responsePrivate, size):
            return "peer req_prod \(producer) is \(producer &- responsePrivate) past rsp_prod_pvt \(responsePrivate), more than the ring size \(size)"
        case let .responseProducerOverrun(producer, consumer, outstanding):
            return "peer rsp_prod \(producer) is \(producer &- consumer) past rsp_cons \(consumer), more than the \(outstanding) requests outstanding"
        case let .byteRingOverrun(producer, consumer, size):
            return "byte ring prod \(producer) is \(producer &- consumer) past cons \(consumer), more than the ring size \(size)"
        case let .badByteRingGeometry(dataOffset, size, memory):
            return "byte ring of \(size) bytes at offset \(dataOffset) does not fit \(memory) bytes or is not a power of two"
        }
    }
}
