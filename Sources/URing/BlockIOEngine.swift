import Glibc

/// One block-I/O operation for a `BlockIOEngine`. Buffers and iovec arrays belong to the
/// caller and must stay valid until the completion is reaped.
public enum BlockIOOperation {
    /// Read into `buffer` at `offset`; the result is the byte count (short at end of file).
    case read(FileReference, offset: UInt64, into: UnsafeMutableRawBufferPointer)
    /// Write `buffer` at `offset`; the result is the byte count.
    case write(FileReference, offset: UInt64, from: UnsafeRawBufferPointer)
    /// Scatter read into the caller's iovecs (one per granted page, typically).
    case readVector(FileReference, offset: UInt64, vectors: UnsafeBufferPointer<iovec>)
    /// Gather write from the caller's iovecs.
    case writeVector(FileReference, offset: UInt64, vectors: UnsafeBufferPointer<iovec>)
    /// Read into part of registered buffer `bufferIndex` (a plain read on the thread pool).
    case readFixed(FileReference, offset: UInt64, into: UnsafeMutableRawBufferPointer, bufferIndex: UInt16)
    /// Write from part of registered buffer `bufferIndex` (a plain write on the thread pool).
    case writeFixed(FileReference, offset: UInt64, from: UnsafeRawBufferPointer, bufferIndex: UInt16)
    /// Make written data durable (fdatasync): `io/blkif.h: BLKIF_OP_FLUSH_DISKCACHE`.
    case flush(FileReference)
    /// Deallocate a range, which then reads as zeroes: `io/blkif.h: BLKIF_OP_DISCARD`.
    case discard(FileReference, offset: UInt64, length: UInt64)
    /// Make a range read as zeroes without writing a buffer.
    case writeZeroes(FileReference, offset: UInt64, length: UInt64)
    /// Read into `buffer` from a descriptor without a file position (a TAP device, a pipe,
    /// a socket): the result is the byte count of one packet or message.
    case streamRead(FileReference, into: UnsafeMutableRawBufferPointer)
    /// Scatter read from a descriptor without a file position (readv(2)).
    case streamReadVector(FileReference, vectors: UnsafeBufferPointer<iovec>)
    /// Gather write to a descriptor without a file position (writev(2)): one packet to a TAP.
    case streamWriteVector(FileReference, vectors: UnsafeBufferPointer<iovec>)
    /// One-shot: completes with the ready poll mask once `fd` is writable (a TAP whose
    /// queue was full has room again).
    case pollWritable(Int32)
    /// One-shot: completes with the ready poll mask once `fd` is readable. How a worker
    /// waits for an event-channel eventfd in the same place as for the disk; after the
    /// completion it drains the fd itself and queues this again.
    case pollReadable(Int32)
    /// Cancel the operation tagged `target`: it completes with -ECANCELED and this with 0,
    /// or this completes with -ENOENT (no such operation) or -EALREADY (already running).
    case cancel(target: UInt64)
}

/// An operation with the caller's tag, which its `Completion` carries back.
public struct BlockRequest {
    /// What to do.
    public var operation: BlockIOOperation
    /// The caller's tag; the engine never interprets it.
    public var userData: UInt64
    /// Skip io_uring's inline try of a read or write (IOSQE_ASYNC), for files without
    /// non-blocking I/O (see ``supportsNonblockingIO(_:)``). The thread pool ignores it.
    public var alwaysAsync: Bool

    @inlinable
    public init(_ operation: BlockIOOperation, userData: UInt64, alwaysAsync: Bool = false) {
        self.operation = operation
        self.userData = userData
        self.alwaysAsync = alwaysAsync
    }
}

/// What `enqueue` did with a request.
public enum EnqueueOutcome {
    /// Queued; it is handed to the kernel or pool by the next `submit`/`wait` (or earlier,
    /// when the submission queue fills).
    case accepted
    /// `capacity` operations are already in flight (or the kernel refused to take a full
    /// submission batch): the request is handed back unchanged; reap completions and
    /// enqueue it again.
    case queueFull(BlockRequest)
}

/// Which engine implementation.
public enum BlockIOEngineKind: String, Sendable, CaseIterable {
    /// io_uring through liburing.
    case uring
    /// A pool of threads calling preadv/pwritev/fdatasync/fallocate.
    case threads

    /// `uring` or `threads`, read by ``BlockIOEngineFactory/init(configuration:environment:logger:)``
    /// from the environment it is given; unset means io_uring (never a fallback).
    public static let environmentVariable = "XENSPLIT_IO_ENGINE"
}

/// Settings shared by both engines.
public struct BlockIOEngineConfiguration: Sendable {
    /// Submission batch size: io_uring submission entries, thread-pool pending slots.
    /// Enqueueing past it submits the batch.
    public var queueDepth: Int
    /// Most operations in flight (enqueued and not yet reaped), polls included. At least
    /// `queueDepth`; io_uring rounds it up to a power of two.
    public var capacity: Int
    /// Threads of the thread-pool engine.
    public var threads: Int
    /// io_uring setup flags to try (rejected ones are dropped).
    public var ringFlags: IORing.SetupFlags
    /// io_uring: the most kernel worker threads the engine's thread runs in each of the
    /// kernel's two pools (nil: its defaults, 4 per CPU and unlimited). Transfers reach them when
    /// the file cannot do non-blocking I/O (tmpfs, FUSE, some network file systems); more
    /// of them than CPUs only contend with each other unless that I/O blocks.
    public var kernelWorkers: Int?

    public init(queueDepth: Int = 64, capacity: Int? = nil, threads: Int = 4,
                ringFlags: IORing.SetupFlags = .worker, kernelWorkers: Int? = nil) {
        self.queueDepth = queueDepth
        self.capacity = capacity ?? 2 * queueDepth
        self.threads = threads
        self.ringFlags = ringFlags
        self.kernelWorkers = kernelWorkers
    }
}

/// The block I/O engine a backend worker thread owns: queue a batch of operations, submit,
/// wait, reap completions carrying the caller's user data. Implemented by io_uring
/// (`URingEngine`) and by a thread pool (`ThreadPoolEngine`) with identical results, so
/// one contract test suite covers both.
///
/// Threading: an engine belongs to the thread that created it; only that thread calls it.
///
/// Waiting in one place: a worker serving many rings queues `.pollReadable(eventfd)` for
/// each ring's event channel next to its disk I/O and sleeps only in `wait`, which returns
/// when either kind completes. io_uring implements the poll in the kernel; the thread pool
/// implements `wait` as one poll(2) over its completion eventfd and the watched fds.
///
/// Code on the hot path should be generic over the engine (open the existential from the
/// factory once), so calls are direct and nothing is boxed per request.
public protocol BlockIOEngine: AnyObject {
    /// Which implementation this is.
    var kind: BlockIOEngineKind { get }
    /// Most operations in flight at once.
    var capacity: Int { get }
    /// Operations enqueued and not yet reaped.
    var inFlight: Int { get }
    /// Registers the file table for `.registered(index)`, once, before queueing I/O; -1
    /// leaves a slot empty (a worker sizes the table for the disks it may serve).
    func registerFiles(_ descriptors: [Int32]) throws(URingError)
    /// Replaces table slots `offset..<offset+descriptors.count` (-1 empties one), as disks
    /// come and go. Close a replaced descriptor only after its operations have completed:
    /// io_uring holds a file reference, but the thread pool holds only the number.
    func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError)
    /// Registers buffers for the fixed forms; call before queueing I/O.
    func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError)
    /// Queues one request, or hands it back when `capacity` are in flight.
    func enqueue(_ request: BlockRequest) -> EnqueueOutcome
    /// Starts every queued request.
    func submit() throws(URingError)
    /// Submits, then blocks until at least `minimum` completions can be reaped or `timeout`
    /// passes (nil: no limit). `minimum: 0` never blocks; it only collects what finished.
    func wait(minimum: Int, timeout: Duration?) throws(URingError)
    /// Copies out up to `buffer.count` completions without blocking; returns the count.
    func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int
    /// Stops the engine; in-flight operations are cancelled or finished. Idempotent.
    func close()
}
