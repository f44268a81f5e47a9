/// The status of a response (`io/blkif.h: BLKIF_RSP_*`).
public enum BlkifStatus: Int16, Sendable, Hashable, CaseIterable {
    /// `io/blkif.h: BLKIF_RSP_OKAY`.
    case okay = 0
    /// `io/blkif.h: BLKIF_RSP_ERROR`: the operation failed (-EIO).
    case error = -1
    /// `io/blkif.h: BLKIF_RSP_EOPNOTSUPP`: the operation is not supported.
    case notSupported = -2

    /// Validates a peer's status field.
    @inlinable
    public init(validating raw: Int16) throws(BlkifError) {
        guard let status = BlkifStatus(rawValue: raw) else { throw .unknownStatus(raw) }
        self = status
    }
}
