import Blkif

/// What a request started with ``BlockFrontend/submit(_:completion:)`` hands back: the
/// data read (empty for the other requests) or why it failed.
public typealias BlockFrontendCompletion = @Sendable (Result<[UInt8], BlockFrontendError>) -> Void

/// A request for ``BlockFrontend/submit(_:completion:)``, in 512-byte sectors.
public enum BlockFrontendRequest: Sendable {
    /// Reads `count` sectors from `sector`.
    case read(sector: UInt64, count: UInt64)
    /// Writes `data` (a multiple of 512 bytes) from `sector`.
    case write(sector: UInt64, data: [UInt8])
    /// BLKIF_OP_FLUSH_DISKCACHE, or BLKIF_OP_WRITE_BARRIER where only that is offered.
    case flush
    /// BLKIF_OP_DISCARD of `count` sectors from `sector`.
    case discard(sector: UInt64, count: UInt64)
}

/// One caller's request: it may become several blkif requests, and is re-issued whole or
/// in part after a backend restart. The data stays here until every part is answered, so
/// an acknowledged write was always written from this copy.
final class BlockFrontendOperation: @unchecked Sendable {
    // SAFETY (@unchecked): made by the caller, then touched only by the frontend's I/O
    // thread (handed over through BlockFrontendSubmissions, whose exchanges order the
    // accesses, or under the frontend's mutex) until the completion runs.
    enum Kind: Sendable {
        case read, write, flush, discard

        var name: String {
            switch self {
            case .read: return "read"
            case .write: return "write"
            case .flush: return "flush"
            case .discard: return "discard"
            }
        }
    }

    let kind: Kind
    /// First 512-byte sector.
    let sector: UInt64
    /// 512-byte sectors (0 for a flush).
    let count: UInt64
    /// The write's source or the read's destination.
    var data: [UInt8]
    /// Parts not yet answered, in sectors (reads, writes) or requests (flush, discard).
    var remaining: UInt64
    /// The first failure a part reported.
    var failure: BlockFrontendError?
    /// Told once, with the read's data (empty for the other kinds) or the first failure.
    var waiter: Waiter?
    /// The operation pushed before this one while both wait in ``BlockFrontendSubmissions``.
    var nextSubmitted: UnsafeMutableRawPointer?

    /// Who waits for an operation.
    enum Waiter {
        /// A caller of ``BlockFrontend/submit(_:completion:)``.
        case completion(BlockFrontendCompletion)
        /// A task suspended in an async call, resumed directly (no closure per request).
        case task(UnsafeContinuation<Result<[UInt8], BlockFrontendError>, Never>)

        func resume(_ result: Result<[UInt8], BlockFrontendError>) {
            switch self {
            case let .completion(completion): completion(result)
            case let .task(continuation): continuation.resume(returning: result)
            }
        }
    }

    convenience init(kind: Kind, sector: UInt64, count: UInt64, data: [UInt8], completion: @escaping BlockFrontendCompletion) {
        self.init(kind: kind, sector: sector, count: count, data: data, waiter: .completion(completion))
    }

    init(kind: Kind, sector: UInt64, count: UInt64, data: [UInt8], waiter: Waiter) {
        self.kind = kind
        self.sector = sector
        self.count = count
        self.data = data
        self.waiter = waiter
        switch kind {
        case .read, .write: remaining = count
        case .flush, .discard: remaining = 1
        }
    }

    /// Records the answer to a part of `units` units; resumes the caller after the last.
    func complete(units: UInt64, failure: BlockFrontendError?) {
        if self.failure == nil, let failure { self.failure = failure }
        remaining -= min(units, remaining)
        guard remaining == 0, let waiter else { return }
        self.waiter = nil
        if let failure = self.failure {
            // Dropped first, as on success, so a caller that recycles buffers gets its
            // own back as the only reference.
            data = []
            waiter.resume(.failure(failure))
        } else {
            // Handed over, not copied: the caller becomes the array's only owner.
            let result = kind == .read ? data : []
            data = []
            waiter.resume(.success(result))
        }
    }

    /// Fails the caller now (the frontend is closing).
    func abandon(_ error: BlockFrontendError) {
        guard let waiter else { return }
        self.waiter = nil
        waiter.resume(.failure(error))
    }
}

/// A part of an operation waiting to be sent: `count` sectors from `offset` sectors into
/// it (reads and writes; larger parts are split when sent), or the whole of a flush or
/// discard. `sequence` orders re-issued parts as they were first sent.
struct BlockFrontendWork: Sendable {
    let operation: BlockFrontendOperation
    var offset: UInt64
    var count: UInt64
    var sequence: UInt64 = 0
}
