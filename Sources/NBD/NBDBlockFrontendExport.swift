import BlockFrontend
import Dispatch
import Glibc
import Logging

/// A connected ``BlockFrontend`` disk served over NBD.
///
/// The export's shape is fixed from the disk the backend described when it connected:
/// size from `sectors` x `sector-size`, the minimum block size from `sector-size` (so
/// every request the server passes on is aligned as `io/blkif.h` requires), the preferred
/// one from `physical-sector-size` (at least 4 KiB), read-only from VDISK_READONLY or
/// VDISK_CDROM in `info`. Flush and FUA are offered when the backend offers
/// `feature-flush-cache` or `feature-barrier` (a FUA write is the write, then a flush);
/// trim when it offers `feature-discard`. Write-zeroes always writes zero bytes: blkif
/// promises nothing about what a discarded range reads as, so discard cannot stand in.
/// Every connection goes through the one frontend, so a flush covers all of them
/// (`NBD_FLAG_CAN_MULTI_CONN`).
///
/// The server's client threads block here while the frontend's async calls run.
public final class NBDBlockFrontendExport: NBDExport {
    /// The frontend this export reads and writes through.
    public let frontend: BlockFrontend
    /// The disk as it was when the export was made.
    public let disk: BlockFrontendDisk
    public let size: UInt64
    public let blockSizes: NBDBlockSizes
    public let isReadOnly: Bool
    public let features: NBDExportFeatures
    private let logger: Logger

    /// Largest zero-filled write issued for one part of a write-zeroes request.
    static let zeroChunk = 1 << 20

    /// Exports `disk`, which `frontend.connected()` returned.
    public init(frontend: BlockFrontend, disk: BlockFrontendDisk,
                logger: Logger = Logger(label: "xensplit.nbd.blkfront")) throws(NBDError) {
        let sectorSize = disk.properties.sectorSize
        let physical = disk.properties.physicalSectorSize ?? sectorSize
        blockSizes = try NBDBlockSizes(minimum: sectorSize, preferred: max(physical, 4096, sectorSize),
                                       maximum: 32 << 20)
        let (bytes, overflow) = disk.sectors512.multipliedReportingOverflow(by: 512)
        guard !overflow else {
            throw .fieldOutOfRange(field: "sectors", value: disk.sectors512, limit: UInt64.max / 512)
        }
        size = bytes
        isReadOnly = disk.readOnly
        var features: NBDExportFeatures = [.multiConnection]
        if !disk.readOnly { features.insert(.writeZeroes) }
        if disk.backend.flushCache || disk.backend.barrier { features.formUnion([.flush, .fua]) }
        if disk.backend.discard, !disk.readOnly { features.insert(.trim) }
        self.features = features
        self.frontend = frontend
        self.disk = disk
        self.logger = logger
    }

    /// Waits for `frontend` to connect, then exports its disk.
    public static func connecting(_ frontend: BlockFrontend,
                                  logger: Logger = Logger(label: "xensplit.nbd.blkfront")) async throws -> NBDBlockFrontendExport {
        try NBDBlockFrontendExport(frontend: frontend, disk: try await frontend.connected(), logger: logger)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        guard !buffer.isEmpty else { return }
        let frontend = self.frontend
        let count = UInt64(buffer.count / 512)
        let data = try blocking("read", offset: offset, length: buffer.count) {
            try await frontend.read(sector: offset / 512, count: count)
        }
        data.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        if !buffer.isEmpty { try write([UInt8](buffer), at: offset) }
        if fua, features.contains(.flush) { try flush() }
    }

    public func flush() throws(NBDError) {
        let frontend = self.frontend
        try blocking("flush", offset: 0, length: 0) { try await frontend.flush() }
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        // NBD_CMD_TRIM is advisory: without feature-discard there is nothing to pass on.
        if length > 0, features.contains(.trim) {
            let frontend = self.frontend
            try blocking("discard", offset: offset, length: Int(length)) {
                try await frontend.discard(sector: offset / 512, count: length / 512)
            }
        }
        if fua, features.contains(.flush) { try flush() }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        var done: UInt64 = 0
        while done < length {
            let part = min(length - done, UInt64(Self.zeroChunk))
            try write([UInt8](repeating: 0, count: Int(part)), at: offset + done)
            done += part
        }
        if fua, features.contains(.flush) { try flush() }
    }

    private func write(_ data: [UInt8], at offset: UInt64) throws(NBDError) {
        let frontend = self.frontend
        try blocking("write", offset: offset, length: data.count) {
            try await frontend.write(sector: offset / 512, data: data)
        }
    }

    /// Runs `body` on the concurrency pool and waits for it on this (server) thread,
    /// turning a frontend error into the errno the NBD client receives.
    private func blocking<T: Sendable>(_ operation: String, offset: UInt64, length: Int,
                                       _ body: @escaping @Sendable () async throws -> T) throws(NBDError) -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        switch box.result {
        case let .success(value)?:
            return value
        case let .failure(error)?:
            logger.error("nbd: blkfront \(operation) of \(length) bytes at \(offset) failed: \(error)")
            throw .exportIO(call: "blkfront.\(operation)", errno: Self.errno(for: error))
        case nil:
            throw .exportIO(call: "blkfront.\(operation)", errno: EIO)
        }
    }

    /// The errno an NBD client best understands for a frontend failure.
    static func errno(for error: any Error) -> Int32 {
        switch error as? BlockFrontendError {
        case .readOnly?: EPERM
        case .invalidRange?, .invalidLength?: EINVAL
        case .notSupported?, .featureNotOffered?: EOPNOTSUPP
        default: EIO
        }
    }
}

/// The result of one bridged call; written by the task before it signals, read by the
/// waiting thread after, so the semaphore orders the two accesses.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
