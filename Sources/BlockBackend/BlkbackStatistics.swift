import Blkif

/// What one queue has answered, by kind: the figures Linux blkback shows in sysfs
/// (`rd_req`, `wr_req`, `f_req`, `ds_req`, `rd_sect`, `wr_sect`), plus indirect requests
/// and refusals. Kept by the queue's worker; read once the queue is removed (its log line
/// at disconnect), which is how an operator or a test sees what a frontend took up.
public struct BlkbackStatistics: Equatable, Sendable, CustomStringConvertible {
    /// Reads answered (direct and indirect).
    public var reads = 0
    /// Writes answered (direct and indirect), without barriers and flushes.
    public var writes = 0
    /// Requests that came as BLKIF_OP_INDIRECT (also counted as the read or write they
    /// carry, which is the operation their response names).
    public var indirect = 0
    /// BLKIF_OP_WRITE_BARRIER requests.
    public var barriers = 0
    /// BLKIF_OP_FLUSH_DISKCACHE requests.
    public var flushes = 0
    /// BLKIF_OP_DISCARD requests.
    public var discards = 0
    /// Answered BLKIF_RSP_ERROR.
    public var errors = 0
    /// Answered BLKIF_RSP_EOPNOTSUPP.
    public var unsupported = 0
    /// 512-byte sectors read and written by successful requests.
    public var sectorsRead: UInt64 = 0
    public var sectorsWritten: UInt64 = 0

    public init() {}

    /// Counts one response.
    mutating func count(operation: UInt8, status: BlkifStatus) {
        switch BlkifOperation(rawValue: operation) {
        case .read?: reads += 1
        case .write?: writes += 1
        case .writeBarrier?: barriers += 1
        case .flushDiskCache?: flushes += 1
        case .discard?: discards += 1
        default: break
        }
        switch status {
        case .error: errors += 1
        case .notSupported: unsupported += 1
        default: break
        }
    }

    /// Counts the sectors of a request that completed.
    mutating func countData(isRead: Bool, bytes: Int) {
        if isRead { sectorsRead &+= UInt64(bytes / 512) } else { sectorsWritten &+= UInt64(bytes / 512) }
    }

    /// The sum of two queues' figures (a device's total).
    public static func + (a: BlkbackStatistics, b: BlkbackStatistics) -> BlkbackStatistics {
        var sum = a
        sum.reads += b.reads
        sum.writes += b.writes
        sum.indirect += b.indirect
        sum.barriers += b.barriers
        sum.flushes += b.flushes
        sum.discards += b.discards
        sum.errors += b.errors
        sum.unsupported += b.unsupported
        sum.sectorsRead &+= b.sectorsRead
        sum.sectorsWritten &+= b.sectorsWritten
        return sum
    }

    public var description: String {
        "reads=\(reads) writes=\(writes) indirect=\(indirect) barriers=\(barriers) flushes=\(flushes) "
            + "discards=\(discards) errors=\(errors) unsupported=\(unsupported) "
            + "sectors-read=\(sectorsRead) sectors-written=\(sectorsWritten)"
    }
}
