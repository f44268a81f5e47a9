import Blkif

/// One caller's request: it may become several blkif requests, and is re-issued whole or
/// in part after a backend restart. The data stays here until every part is answered, so
/// an acknowledged write was always written from this copy.
final class BlockFrontendOperation: @unchecked Sendable {
    // SAFETY (@unchecked): made by the caller, then touched only by the frontend's I/O
    // thread (handed over under the frontend's mutex) until the continuation resumes.
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
    var continuation: CheckedContinuation<[UInt8], any Error>?

    init(kind: Kind, sector: UInt64, count: UInt64, data: [UInt8]) {
        self.kind = kind
        self.sector = sector
        self.count = count
        self.data = data
        switch kind {
        case .read, .write: remaining = count
        case .flush, .discard: remaining = 1
        }
    }

    /// Records the answer to a part of `units` units; resumes the caller after the last.
    func complete(units: UInt64, failure: BlockFrontendError?) {
        if self.failure == nil, let failure { self.failure = failure }
        remaining -= min(units, remaining)
        guard remaining == 0, let continuation else { return }
        self.continuation = nil
        if let failure = self.failure {
            continuation.resume(throwing: failure)
        } else {
            continuation.resume(returning: kind == .read ? data : [])
        }
    }

    /// Fails the caller now (the frontend is closing).
    func abandon(_ error: BlockFrontendError) {
        guard let continuation else { return }
        self.continuation = nil
        continuation.resume(throwing: error)
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
