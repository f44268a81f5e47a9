import Blkif
import URing

/// Where a block device's data lives: what a ``BlkbackQueue`` reads, writes, flushes and
/// discards. Backing stores are opened and closed by the control path; a queue only issues
/// operations on ``fileDescriptor`` through its worker's I/O engine.
public protocol BlockBackingStore: AnyObject, Sendable {
    /// The path it was opened from, for log lines and errors.
    var path: String { get }
    /// The open descriptor operations name; valid until ``close()``.
    var fileDescriptor: Int32 { get }
    /// Opened read-only: the backend advertises `info` VDISK_READONLY and answers every
    /// write, barrier with data and discard with BLKIF_RSP_ERROR.
    var readOnly: Bool { get }
    /// The logical block size in bytes (`sector-size`).
    var logicalSectorSize: UInt32 { get }
    /// The physical block size in bytes (`physical-sector-size`).
    var physicalSectorSize: UInt32 { get }
    /// Whether BLKIF_OP_DISCARD can be honoured (`feature-discard`).
    var supportsDiscard: Bool { get }
    /// Whether BLKIF_DISCARD_SECURE can be honoured (`discard-secure`): only a block device
    /// whose queue does secure erase. A hole punched in a file is not secure.
    var supportsSecureDiscard: Bool { get }
    /// The size now, in 512-byte sectors (the unit of `sector_number`); read again after an
    /// online resize.
    func currentSectors() throws(BlockBackendError) -> UInt64
    /// The asynchronous operation that discards `length` bytes at `offset` (the range then
    /// reads as zeroes).
    func discardOperation(offset: UInt64, length: UInt64) -> BlockIOOperation
    /// Discards securely (BLKSECDISCARD), synchronously: io_uring has no such operation.
    func secureDiscard(offset: UInt64, length: UInt64) throws(BlockBackendError)
    /// Closes the descriptor. Call only after every operation on it completed.
    func close()
}

extension BlockBackingStore {
    /// The disk properties the backend publishes for `sectors512` 512-byte sectors.
    public func diskProperties(sectors512: UInt64) -> BlkifDiskProperties {
        BlkifDiskProperties(sectors512: sectors512,
                            sectorSize: logicalSectorSize,
                            physicalSectorSize: physicalSectorSize,
                            info: readOnly ? .readOnly : [])
    }

    /// The feature nodes this store supports, on top of `base`.
    public func backendFeatures(_ base: BlkifBackendFeatures = BlkifBackendFeatures()) -> BlkifBackendFeatures {
        var features = base
        features.flushCache = true
        features.barrier = true
        features.discard = supportsDiscard && !readOnly
        features.discardSecure = supportsSecureDiscard && !readOnly
        if features.discard {
            features.discardGranularity = physicalSectorSize
            features.discardAlignment = 0
        }
        return features
    }
}
