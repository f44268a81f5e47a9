import BlockFrontend
import Dispatch
import Glibc
import Logging

/// A connected ``BlockFrontend`` disk served over NBD.
///
/// The export's shape is fixed from the disk the backend described when it connected:
/// size from `sectors` (512-byte units), the minimum block size from `sector-size` (so
/// every request the server passes on is aligned as `io/blkif.h` requires), the preferred
/// one from `physical-sector-size` (at least 4 KiB), read-only from VDISK_READONLY or
/// VDISK_CDROM in `info`. Flush and FUA are offered when the backend offers
/// `feature-flush-cache` or `feature-barrier` (a FUA write is the write, then a flush);
/// trim when it offers `feature-discard`. Write-zeroes always writes zero bytes: blkif
/// promises nothing about what a discarded range reads as, so discard cannot stand in.
/// Every connection goes through the one frontend, so a flush covers all of them
/// (`NBD_FLAG_CAN_MULTI_CONN`).
///
/// Requests go to the frontend with ``BlockFrontend/submit(_:completion:)`` and are
/// answered from its I/O thread, so a client's requests are in flight together, up to
/// the frontend's queue depth. The blocking methods wait for the same path.
public final class NBDBlockFrontendExport: NBDLoopExport {
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

    public func submit(_ command: NBDExportCommand, completion: @escaping NBDExportCompletion) {
        switch command {
        case let .read(offset, length):
            guard length > 0 else { return completion(.success([])) }
            frontend.submit(.read(sector: offset / 512, count: UInt64(length / 512))) { [self] result in
                completion(result.mapError { failure("read", offset: offset, length: UInt64(length), $0) })
            }
        case let .write(offset, data, fua):
            guard !data.isEmpty else { return flush(if: fua, completion) }
            // The count, not the array, goes into the closure: once the frontend is done
            // with the data the caller holds its only reference (and may recycle it).
            let length = UInt64(data.count)
            frontend.submit(.write(sector: offset / 512, data: data)) { [self] result in
                then(result, "write", offset: offset, length: length, flush: fua, completion)
            }
        case .flush:
            frontend.submit(.flush) { [self] result in
                completion(result.mapError { failure("flush", offset: 0, length: 0, $0) })
            }
        case let .trim(offset, length, fua):
            // NBD_CMD_TRIM is advisory: without feature-discard there is nothing to pass on.
            guard length > 0, features.contains(.trim) else { return flush(if: fua, completion) }
            frontend.submit(.discard(sector: offset / 512, count: length / 512)) { [self] result in
                then(result, "discard", offset: offset, length: length, flush: fua, completion)
            }
        case let .writeZeroes(offset, length, _, fua):
            writeZeroes(from: offset, to: offset + length) { [self] result in
                then(result, "write", offset: offset, length: length, flush: fua, completion)
            }
        }
    }

    /// Clients are served on the frontend's I/O thread, which puts their requests on the
    /// rings and sends their replies itself.
    public func attach(_ client: NBDLoopClient) -> Bool { frontend.attach(client) }

    public func detach(_ client: NBDLoopClient) { frontend.detach(client) }

    /// Reads straight into the server's spare `buffer` (no new array per read).
    public func submitRead(offset: UInt64, into buffer: consuming [UInt8], completion: @escaping NBDExportCompletion) {
        guard !buffer.isEmpty else { return completion(.success([])) }
        let length = UInt64(buffer.count)
        frontend.submitRead(sector: offset / 512, into: consume buffer) { [self] result in
            completion(result.mapError { failure("read", offset: offset, length: length, $0) })
        }
    }

    /// Zero bytes for write-zeroes, shared by every request (never written to).
    private static let zeroes = [UInt8](repeating: 0, count: zeroChunk)

    /// Writes zeroes over `offset..<end`, one chunk after the other.
    private func writeZeroes(from offset: UInt64, to end: UInt64, _ done: @escaping BlockFrontendCompletion) {
        guard offset < end else { return done(.success([])) }
        let part = min(end - offset, UInt64(Self.zeroChunk))
        let data = part == UInt64(Self.zeroChunk) ? Self.zeroes : [UInt8](Self.zeroes[0 ..< Int(part)])
        frontend.submit(.write(sector: offset / 512, data: data)) { [self] result in
            guard case .success = result else { return done(result) }
            writeZeroes(from: offset + part, to: end, done)
        }
    }

    /// After a write, discard or zeroing: its failure, or a flush for FUA, or success.
    private func then(_ result: Result<[UInt8], BlockFrontendError>, _ operation: String, offset: UInt64, length: UInt64,
                      flush fua: Bool, _ completion: @escaping NBDExportCompletion) {
        switch result {
        case let .failure(error): completion(.failure(failure(operation, offset: offset, length: length, error)))
        case .success: flush(if: fua, completion)
        }
    }

    /// A FUA write is the write, then a flush (when the backend offers one).
    private func flush(if fua: Bool, _ completion: @escaping NBDExportCompletion) {
        guard fua, features.contains(.flush) else { return completion(.success([])) }
        submit(.flush, completion: completion)
    }

    private func failure(_ operation: String, offset: UInt64, length: UInt64, _ error: BlockFrontendError) -> NBDError {
        logger.error("nbd: blkfront \(operation) of \(length) bytes at \(offset) failed: \(error)")
        return .exportIO(call: "blkfront.\(operation)", errno: Self.errno(for: error))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) {
        let data = try blocking(.read(offset: offset, length: buffer.count))
        data.withUnsafeBytes { buffer.copyMemory(from: $0) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) {
        _ = try blocking(.write(offset: offset, data: [UInt8](buffer), fua: fua))
    }

    public func flush() throws(NBDError) {
        _ = try blocking(.flush)
    }

    public func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) {
        _ = try blocking(.trim(offset: offset, length: length, fua: fua))
    }

    public func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        _ = try blocking(.writeZeroes(offset: offset, length: length, mayPunchHole: mayPunchHole, fua: fua))
    }

    /// Submits `command` and waits for it on this thread.
    private func blocking(_ command: NBDExportCommand) throws(NBDError) -> [UInt8] {
        let box = ResultBox()
        let done = DispatchSemaphore(value: 0)
        submit(command) { result in
            box.result = result
            done.signal()
        }
        done.wait()
        return try (box.result ?? .failure(.exportIO(call: "blkfront", errno: EIO))).get()
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

/// The result of one blocking call; written by the completion before it signals, read
/// by the waiting thread after, so the semaphore orders the two accesses.
private final class ResultBox: @unchecked Sendable {
    var result: Result<[UInt8], NBDError>?
}
